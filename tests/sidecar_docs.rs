//! Each module's sidecar documentation (what `ansible-doc` shows) matches the argument spec the
//! binary enforces, so the docs cannot drift from the code.

use k8s_calico::module::{DefaultValue, ModuleSpec};
use serde_json::{Value, json};

const LIBRARY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ansible/plugins/modules");

fn modules() -> Vec<&'static ModuleSpec> {
    vec![
        &k8s_calico::matrix::SPEC,
        &k8s_calico::upgrade::SPEC,
        &k8s_calico::nettest::SPEC,
    ]
}

fn sidecar(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{LIBRARY}/{name}.yml")).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

#[test]
fn sidecar_options_match_the_argument_spec() {
    for spec in modules() {
        let doc = sidecar(spec.name);
        let d = &doc["DOCUMENTATION"];
        assert_eq!(d["module"], json!(spec.name));
        assert_eq!(
            d["short_description"],
            json!(spec.short_description),
            "{}",
            spec.name
        );
        let options = d["options"].as_object().unwrap();
        let documented: Vec<&String> = options.keys().collect();
        let specified: Vec<&str> = spec.params.iter().map(|p| p.name).collect();
        assert_eq!(
            documented, specified,
            "{}: option names or order differ",
            spec.name
        );
        for p in spec.params {
            let o = &options[p.name];
            let ctx = format!("{}.{}", spec.name, p.name);
            assert_eq!(o["type"], json!(p.kind.ansible_name()), "{ctx} type");
            assert_eq!(
                o.get("required").and_then(Value::as_bool).unwrap_or(false),
                p.required,
                "{ctx} required"
            );
            let default = p.default.map(DefaultValue::to_json).unwrap_or(Value::Null);
            assert_eq!(
                o.get("default").cloned().unwrap_or(Value::Null),
                default,
                "{ctx} default"
            );
            let choices: Vec<Value> = p.choices.iter().map(|c| json!(c)).collect();
            assert_eq!(
                o.get("choices").cloned().unwrap_or(json!([])),
                json!(choices),
                "{ctx} choices"
            );
            let aliases: Vec<Value> = p.aliases.iter().map(|c| json!(c)).collect();
            assert_eq!(
                o.get("aliases").cloned().unwrap_or(json!([])),
                json!(aliases),
                "{ctx} aliases"
            );
            if let Some(e) = p.elements {
                assert_eq!(o["elements"], json!(e.ansible_name()), "{ctx} elements");
            }
            assert_eq!(
                o.get("no_log").and_then(Value::as_bool).unwrap_or(false),
                p.no_log,
                "{ctx} no_log"
            );
            assert!(
                o["description"].is_array() || o["description"].is_string(),
                "{ctx} description"
            );
        }
        assert!(
            doc["EXAMPLES"]
                .as_str()
                .is_some_and(|e| e.contains(spec.name)),
            "{} EXAMPLES",
            spec.name
        );
        assert!(doc["RETURN"].is_object(), "{} RETURN", spec.name);
    }
}

#[test]
fn the_readme_matrix_table_is_the_generated_one() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = k8s_calico::catalog::seed::comparison_table(k8s_calico::catalog::catalog());
    assert!(
        readme.contains(&table),
        "README.md's matrix table is out of date; regenerate it with `target/debug/calico_matrix --matrix-table`:\n{table}"
    );
}
