//! `calico_nettest` through the real binary: bad input is refused with a message naming the
//! parameter before any cluster is contacted; the network tests themselves run against kubesim.

mod support;

use serde_json::json;
use support::module::failure;

const BIN: &str = env!("CARGO_BIN_EXE_calico_nettest");

#[test]
fn bad_arguments_name_the_parameter_and_what_would_be_right() {
    let cases = [
        (
            json!({"timeout": 5}),
            "timeout must be at least 10 seconds, got 5",
        ),
        (json!({"retries": -1}), "retries must be 0 or more, got -1"),
        (json!({"scenarios": ["pod_to_moon"]}), "pod_to_moon"),
        (
            json!({"scenarios": ["external"]}),
            "the external scenario needs external_targets",
        ),
        (
            json!({"namespace_prefix": "Calico_Test"}),
            "namespace_prefix must be lowercase letters",
        ),
        (
            json!({"expected_calico_version": "latest"}),
            "expected_calico_version",
        ),
        (json!({"cleanup": "maybe"}), "cleanup"),
        (
            json!({"bar": true}),
            "Unsupported parameters for (calico_nettest) module: bar",
        ),
    ];
    for (args, want) in cases {
        let msg = failure(BIN, &args);
        assert!(msg.contains(want), "{args}: {msg}");
    }
}
