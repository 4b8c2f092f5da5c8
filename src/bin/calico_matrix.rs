//! The `calico_matrix` Ansible module. See `calico_matrix --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Offline helper for maintainers: the derived matrix beside the seed's, as in the README.
    if std::env::args().nth(1).as_deref() == Some("--matrix-table") {
        print!(
            "{}",
            k8s_calico::catalog::seed::comparison_table(k8s_calico::catalog::catalog())
        );
        return ExitCode::SUCCESS;
    }
    k8s_calico::module::main(&k8s_calico::matrix::SPEC, k8s_calico::matrix::run)
}
