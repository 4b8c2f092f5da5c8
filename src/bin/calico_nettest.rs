//! The `calico_nettest` Ansible module. See `calico_nettest --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    k8s_calico::module::main(&k8s_calico::nettest::SPEC, k8s_calico::nettest::run)
}
