//! The `calico_upgrade` Ansible module. See `calico_upgrade --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    k8s_calico::module::main(&k8s_calico::upgrade::SPEC, k8s_calico::upgrade::run)
}
