//! `module --help`: the parameters, for someone holding only the binary.

use std::fmt::Write;

use super::spec::{DefaultValue, ModuleSpec};

/// Renders the help text.
pub fn render(spec: &ModuleSpec) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{} - {}", spec.name, spec.short_description);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "An Ansible binary module. Ansible runs it as `{} <args file>`, where the file",
        spec.name
    );
    let _ = writeln!(
        s,
        "holds the task's arguments as one JSON object; it prints one JSON result."
    );
    let _ = writeln!(
        s,
        "Full documentation: ansible-doc -M <library dir> {}",
        spec.name
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "Parameters:");
    for p in spec.params {
        let mut head = format!("  {} ({}", p.name, p.kind.ansible_name());
        if let Some(e) = p.elements {
            let _ = write!(head, " of {}", e.ansible_name());
        }
        if p.required {
            head.push_str(", required");
        }
        if let Some(d) = p.default {
            let shown = match d {
                DefaultValue::Str(v) => format!("\"{v}\""),
                DefaultValue::Bool(b) => b.to_string(),
                DefaultValue::Int(i) => i.to_string(),
                DefaultValue::List(l) => format!("[{}]", l.join(", ")),
            };
            let _ = write!(head, ", default {shown}");
        }
        head.push(')');
        let _ = writeln!(s, "{head}");
        if !p.help.is_empty() {
            let _ = writeln!(s, "      {}", p.help);
        }
        if !p.choices.is_empty() {
            let _ = writeln!(s, "      choices: {}", p.choices.join(", "));
        }
        if !p.aliases.is_empty() {
            let _ = writeln!(s, "      aliases: {}", p.aliases.join(", "));
        }
        if let Some(var) = p.env_fallback {
            let _ = writeln!(s, "      environment: {var}");
        }
    }
    s
}
