//! Reading and validating the arguments file Ansible passes as `argv[1]`.
//!
//! The file is one flat JSON object: the task's arguments beside the controller's `_ansible_*`
//! keys (see the binary-module protocol notes in the README). Validation follows
//! `AnsibleModule`'s order: aliases, unsupported names, required, types, choices, defaults.

use std::path::Path;

use serde_json::{Map, Value};

use super::coerce::{coerce, type_name};
use super::spec::{ModuleSpec, ParamType};

/// The controller's `_ansible_*` settings that change what a module does.
#[derive(Debug, Clone, Default)]
pub struct Controller {
    /// `--check`: change nothing, report what would change.
    pub check_mode: bool,
    /// `--diff`: return before/after of what changes.
    pub diff: bool,
    /// The number of `-v`.
    pub verbosity: u64,
    /// The task's `no_log`: echo no argument values back.
    pub no_log: bool,
    /// The per-task scratch directory Ansible removes afterwards, when it gives one.
    pub tmpdir: Option<String>,
    /// The ansible-core version of the controller, when it says.
    pub ansible_version: Option<String>,
}

/// Validated arguments: every spec'd name present (null when unset and without default).
#[derive(Debug, Clone)]
pub struct Args {
    /// The values by canonical name, after coercion and defaults.
    pub values: Map<String, Value>,
    /// The controller settings.
    pub controller: Controller,
    /// Warnings found while validating (e.g. an option given twice through an alias).
    pub warnings: Vec<String>,
    /// The string values of `no_log` arguments, scrubbed from every output string.
    pub secrets: Vec<String>,
}

/// Reads `path` and returns its JSON object, with a one-line error a user can act on.
pub fn read_args_file(path: &Path, module: &str) -> Result<Map<String, Value>, String> {
    let text = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the arguments file {}: {e}; Ansible runs this module as `{module} <args file>` (see `{module} --help`)",
            path.display()
        )
    })?;
    match serde_json::from_slice::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!(
            "the arguments file {} holds a JSON {}, not the JSON object of arguments Ansible writes",
            path.display(),
            type_name(&other)
        )),
        Err(e) => Err(format!(
            "the arguments file {} is not valid JSON ({e}); Ansible writes the task's arguments there as one JSON object",
            path.display()
        )),
    }
}

/// Validates raw arguments against `spec`.
pub fn validate(spec: &ModuleSpec, raw: Map<String, Value>) -> Result<Args, String> {
    let mut controller = Controller::default();
    let mut given: Map<String, Value> = Map::new();
    let mut warnings = Vec::new();
    let mut unsupported = Vec::new();

    let mut through_alias = Vec::new();
    for (key, value) in raw {
        if let Some(internal) = key.strip_prefix("_ansible_") {
            read_internal(&mut controller, internal, &value);
            continue;
        }
        match spec.param(&key) {
            None => unsupported.push(key),
            Some(param) if param.name == key => {
                given.insert(key, value);
            }
            Some(param) => through_alias.push((param.name, key, value)),
        }
    }
    // The canonical name wins over an alias whatever the key order; both given is worth a warning.
    for (name, alias, value) in through_alias {
        if given.contains_key(name) {
            warnings.push(format!("Both option {name} and its alias {alias} are set."));
        } else {
            given.insert(name.to_string(), value);
        }
    }

    if !unsupported.is_empty() {
        unsupported.sort();
        return Err(unsupported_message(spec, &unsupported));
    }

    let mut values = Map::new();
    let mut missing = Vec::new();
    let mut secrets = Vec::new();
    for param in spec.params {
        let mut value = given.remove(param.name).unwrap_or(Value::Null);
        if value.is_null()
            && let Some(var) = param.env_fallback
            && let Ok(v) = std::env::var(var)
        {
            value = Value::String(v);
        }
        if value.is_null() {
            if param.required {
                missing.push(param.name);
            } else if let Some(d) = param.default {
                value = d.to_json();
            }
            values.insert(param.name.to_string(), value);
            continue;
        }
        if param.text_only && value.is_number() {
            return Err(format!(
                "argument '{}' was given as the number {value}, not as text: YAML reads an unquoted version such as 1.30 as the number 1.3; quote it (\"1.30\")",
                param.name
            ));
        }
        let mut coerced = coerce(&value, param.kind).map_err(|why| {
            format!(
                "argument '{}' is of type {} and we were unable to convert to {}: {why}",
                param.name,
                type_name(&value),
                param.kind.ansible_name()
            )
        })?;
        if let (Some(elements), Value::Array(items)) = (param.elements, &mut coerced) {
            for (i, item) in items.iter_mut().enumerate() {
                let converted = coerce(item, elements).map_err(|why| {
                    format!(
                        "elements of argument '{}' must be of type {}: item {} {why}",
                        param.name,
                        elements.ansible_name(),
                        i + 1
                    )
                })?;
                *item = converted;
            }
        }
        check_choices(param.name, param.choices, &coerced)?;
        if param.no_log {
            collect_secrets(&coerced, &mut secrets);
        }
        values.insert(param.name.to_string(), coerced);
    }
    if !missing.is_empty() {
        return Err(format!(
            "missing required arguments: {}",
            missing.join(", ")
        ));
    }
    Ok(Args {
        values,
        controller,
        warnings,
        secrets,
    })
}

fn read_internal(c: &mut Controller, key: &str, value: &Value) {
    let as_bool = || {
        coerce(value, ParamType::Bool)
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    };
    match key {
        "check_mode" => c.check_mode = as_bool(),
        "diff" => c.diff = as_bool(),
        "no_log" => c.no_log = as_bool(),
        "verbosity" => {
            c.verbosity = coerce(value, ParamType::Int)
                .ok()
                .and_then(|v| v.as_u64())
                .unwrap_or(0)
        }
        "tmpdir" => c.tmpdir = value.as_str().map(str::to_string),
        "version" => c.ansible_version = value.as_str().map(str::to_string),
        // Every other `_ansible_*` key (and those of future ansible-core releases) is ignored.
        _ => {}
    }
}

/// Ansible's own wording, so users and their tooling recognise it.
fn unsupported_message(spec: &ModuleSpec, unsupported: &[String]) -> String {
    let mut names: Vec<&str> = spec.params.iter().map(|p| p.name).collect();
    names.sort_unstable();
    let mut aliases: Vec<&str> = spec
        .params
        .iter()
        .flat_map(|p| p.aliases.iter().copied())
        .collect();
    aliases.sort_unstable();
    let mut supported = names.join(", ");
    if !aliases.is_empty() {
        supported.push_str(&format!(" ({})", aliases.join(", ")));
    }
    format!(
        "Unsupported parameters for ({}) module: {}. Supported parameters include: {}.",
        spec.name,
        unsupported.join(", "),
        supported
    )
}

fn check_choices(name: &str, choices: &[&str], value: &Value) -> Result<(), String> {
    if choices.is_empty() {
        return Ok(());
    }
    let allowed = choices.join(", ");
    match value {
        Value::Array(items) => {
            let bad: Vec<String> = items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| i.to_string())
                })
                .filter(|s| !choices.contains(&s.as_str()))
                .collect();
            if bad.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "value of {name} must be one or more of: {allowed}. Got no match for: {}",
                    bad.join(", ")
                ))
            }
        }
        other => {
            let s = other
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| other.to_string());
            if choices.contains(&s.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "value of {name} must be one of: {allowed}, got: {s}"
                ))
            }
        }
    }
}

fn collect_secrets(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if !s.is_empty() => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(a) => a.iter().for_each(|v| collect_secrets(v, out)),
        Value::Object(m) => m.values().for_each(|v| collect_secrets(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::spec::Param;
    use serde_json::json;

    static SPEC: ModuleSpec = ModuleSpec {
        name: "demo",
        short_description: "demo",
        params: &[
            Param::str("name").required().aliases(&["title"]),
            Param::bool("force", false),
            Param::int("timeout").default_int(300),
            Param::str("strategy")
                .default_str("stepwise")
                .choices(&["stepwise", "direct"]),
            Param::list("scenarios", ParamType::Str).choices(&["dns", "mtu"]),
            Param::str("token").no_log(),
            Param::str("version").text_only(),
        ],
    };

    fn run(v: Value) -> Result<Args, String> {
        validate(&SPEC, v.as_object().unwrap().clone())
    }

    #[test]
    fn defaults_coercion_and_internal_keys() {
        let a = run(
            json!({"name": "x", "force": "yes", "timeout": "60", "_ansible_check_mode": true,
            "_ansible_diff": "1", "_ansible_verbosity": 3, "_ansible_future_key": {"x": 1}}),
        )
        .unwrap();
        assert_eq!(a.values["force"], json!(true));
        assert_eq!(a.values["timeout"], json!(60));
        assert_eq!(a.values["strategy"], json!("stepwise"));
        assert_eq!(a.values["scenarios"], Value::Null);
        assert!(a.controller.check_mode && a.controller.diff);
        assert_eq!(a.controller.verbosity, 3);
    }

    #[test]
    fn null_means_not_given() {
        let a = run(json!({"name": "x", "timeout": null})).unwrap();
        assert_eq!(a.values["timeout"], json!(300));
        assert_eq!(
            run(json!({"name": null})).unwrap_err(),
            "missing required arguments: name"
        );
    }

    #[test]
    fn unsupported_parameters_use_ansibles_wording() {
        let e = run(json!({"name": "x", "foo": 1, "bar": 2})).unwrap_err();
        assert_eq!(
            e,
            "Unsupported parameters for (demo) module: bar, foo. Supported parameters include: force, name, scenarios, strategy, timeout, token, version (title)."
        );
    }

    #[test]
    fn aliases_map_to_the_canonical_name() {
        let a = run(json!({"title": "x"})).unwrap();
        assert_eq!(a.values["name"], json!("x"));
        let a = run(json!({"name": "x", "title": "y"})).unwrap();
        assert_eq!(
            a.warnings,
            vec!["Both option name and its alias title are set.".to_string()]
        );
    }

    #[test]
    fn wrong_types_and_choices_name_the_argument() {
        let e = run(json!({"name": "x", "timeout": "soon"})).unwrap_err();
        assert_eq!(
            e,
            "argument 'timeout' is of type str and we were unable to convert to int: 'soon' is not a whole number"
        );
        let e = run(json!({"name": "x", "strategy": "leap"})).unwrap_err();
        assert_eq!(
            e,
            "value of strategy must be one of: stepwise, direct, got: leap"
        );
        let e = run(json!({"name": "x", "scenarios": "dns,ping"})).unwrap_err();
        assert_eq!(
            e,
            "value of scenarios must be one or more of: dns, mtu. Got no match for: ping"
        );
        assert!(
            run(json!({"name": ["a"]}))
                .unwrap_err()
                .starts_with("argument 'name' is of type list")
        );
    }

    #[test]
    fn versions_given_as_numbers_are_refused() {
        let e = run(json!({"name": "x", "version": 1.3})).unwrap_err();
        assert!(
            e.starts_with("argument 'version' was given as the number 1.3"),
            "{e}"
        );
        assert_eq!(
            run(json!({"name": "x", "version": "1.30"})).unwrap().values["version"],
            json!("1.30")
        );
    }

    #[test]
    fn secrets_are_collected() {
        let a = run(json!({"name": "x", "token": "s3cret"})).unwrap();
        assert_eq!(a.secrets, vec!["s3cret".to_string()]);
    }
}
