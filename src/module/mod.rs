//! The Ansible binary-module protocol, shared by every k8s-calico module.
//!
//! Ansible copies a binary module to the target, writes the task's arguments to a JSON file and
//! runs `module <args file>`. The module prints exactly one JSON object on stdout; the controller
//! ignores stderr and the exit code once stdout parses, so everything that matters — including
//! errors and panics — must end up in that object. [`main`] does all of it:
//!
//! ```no_run
//! use k8s_calico::module::{self, Module, ModuleSpec, Outcome, Failure, Param};
//!
//! static SPEC: ModuleSpec = ModuleSpec {
//!     name: "hello",
//!     short_description: "Says hello",
//!     params: &[Param::str("name").required().help("Who to greet")],
//! };
//!
//! fn hello(m: &mut Module) -> Result<Outcome, Failure> {
//!     let name = m.str("name").unwrap_or_default();
//!     Ok(Outcome::ok(format!("hello {name}")))
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     module::main(&SPEC, hello)
//! }
//! ```

mod args;
mod coerce;
mod help;
pub mod progress;
mod result;
mod spec;

use std::cell::RefCell;
use std::ffi::OsString;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Once;

use serde_json::{Map, Value, json};

pub use args::{Args, Controller};
pub use coerce::expand_path;
pub use result::{Failure, Outcome, one_line};
pub use spec::{DefaultValue, ModuleSpec, Param, ParamType};

/// The string Ansible shows in place of a secret argument.
pub const NO_LOG_PLACEHOLDER: &str = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER";

/// A running module: its validated arguments and what it has to say besides its result.
#[derive(Debug)]
pub struct Module {
    spec: &'static ModuleSpec,
    args: Args,
    warnings: Vec<String>,
    deprecations: Vec<Value>,
}

impl Module {
    /// Validates raw arguments (as read from the arguments file) for `spec`.
    pub fn from_args(spec: &'static ModuleSpec, raw: Map<String, Value>) -> Result<Self, String> {
        let args = args::validate(spec, raw)?;
        let warnings = args.warnings.clone();
        Ok(Self {
            spec,
            args,
            warnings,
            deprecations: Vec::new(),
        })
    }

    /// The module's name.
    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    /// The value of an argument after coercion and defaults; `Null` when unset.
    pub fn value(&self, name: &str) -> &Value {
        debug_assert!(self.spec.param(name).is_some(), "{name} is not in the spec");
        self.args.values.get(name).unwrap_or(&Value::Null)
    }

    /// A string (or path) argument, `None` when unset or empty.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.value(name).as_str().filter(|s| !s.trim().is_empty())
    }

    /// A boolean argument (false when unset without a default).
    pub fn bool(&self, name: &str) -> bool {
        self.value(name).as_bool().unwrap_or(false)
    }

    /// An integer argument.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.value(name).as_i64()
    }

    /// A list argument as strings (empty when unset).
    pub fn strings(&self, name: &str) -> Vec<String> {
        match self.value(name) {
            Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A mapping argument.
    pub fn dict(&self, name: &str) -> Option<&Map<String, Value>> {
        self.value(name).as_object()
    }

    /// The controller settings (check mode, diff, verbosity...).
    pub fn controller(&self) -> &Controller {
        &self.args.controller
    }

    /// Whether the task runs under `--check`.
    pub fn check_mode(&self) -> bool {
        self.args.controller.check_mode
    }

    /// Whether the task runs under `--diff`.
    pub fn diff_mode(&self) -> bool {
        self.args.controller.diff
    }

    /// Adds a warning, shown as `[WARNING]: ...` by Ansible.
    pub fn warn(&mut self, msg: impl Into<String>) {
        let msg = one_line(&msg.into());
        if !self.warnings.contains(&msg) {
            self.warnings.push(msg);
        }
    }

    /// The warnings so far.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Adds a deprecation notice.
    pub fn deprecate(&mut self, msg: impl Into<String>, version: &str) {
        self.deprecations
            .push(json!({"msg": msg.into(), "version": version}));
    }

    /// The `invocation` block: the arguments, with secrets masked.
    pub fn invocation(&self) -> Value {
        let mut args = Map::new();
        for (k, v) in &self.args.values {
            let secret =
                self.args.controller.no_log || self.spec.param(k).is_some_and(|p| p.no_log);
            let shown = if secret && !v.is_null() {
                Value::from(NO_LOG_PLACEHOLDER)
            } else {
                v.clone()
            };
            args.insert(k.clone(), shown);
        }
        json!({ "module_args": args })
    }

    fn render(&self, result: Result<Outcome, Failure>) -> (Value, bool) {
        let (mut out, failed) = render_result(
            result,
            &self.warnings,
            &self.deprecations,
            self.invocation(),
        );
        result::scrub(&mut out, &self.args.secrets);
        (out, failed)
    }
}

fn render_result(
    result: Result<Outcome, Failure>,
    warnings: &[String],
    deprecations: &[Value],
    invocation: Value,
) -> (Value, bool) {
    let (changed, failed, msg, facts, diff, extra) = match result {
        Ok(o) => (o.changed, false, o.msg, o.facts, o.diff, o.extra),
        Err(f) => (f.changed, true, f.msg, f.facts, Vec::new(), f.extra),
    };
    let mut out = Map::new();
    out.insert("changed".into(), changed.into());
    out.insert("failed".into(), failed.into());
    out.insert("msg".into(), one_line(&msg).into());
    out.insert("ansible_facts".into(), Value::Object(facts));
    out.insert(
        "warnings".into(),
        warnings.iter().cloned().map(Value::from).collect(),
    );
    out.insert("deprecations".into(), Value::Array(deprecations.to_vec()));
    out.insert("diff".into(), Value::Array(diff));
    out.insert("invocation".into(), invocation);
    for (k, v) in extra {
        // Keys the controller interprets itself are never passed through from a module.
        if !k.starts_with("_ansible_") && !out.contains_key(&k) {
            out.insert(k, v);
        }
    }
    (Value::Object(out), failed)
}

/// The module body: validated arguments in, a result out.
pub type Body = fn(&mut Module) -> Result<Outcome, Failure>;

thread_local! {
    /// `Some` while a module body runs on this thread: its panic message is kept here instead of
    /// being printed, because the message belongs in the JSON result.
    static CAPTURED_PANIC: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

/// Installs, once per process, a panic hook that captures panics of module bodies and leaves
/// every other panic (a test's failed assertion, say) to the previous hook.
fn install_panic_capture() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let what = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let captured = CAPTURED_PANIC.with(|c| match c.borrow_mut().as_mut() {
                Some(slot) => {
                    slot.get_or_insert(format!("{what}{at}"));
                    true
                }
                None => false,
            });
            if !captured {
                previous(info);
            }
        }));
    });
}

/// Runs a module the way Ansible invokes it and returns the process exit code.
///
/// `argv[1]` is the arguments file; `--help` and `--version` answer humans. Whatever happens —
/// a missing file, bad arguments, an error, a panic — exactly one JSON object reaches stdout.
pub fn main(spec: &'static ModuleSpec, body: Body) -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    match argv.get(1).and_then(|a| a.to_str()) {
        Some("--help" | "-h") => {
            print!("{}", help::render(spec));
            return ExitCode::SUCCESS;
        }
        Some("--version" | "-V") => {
            println!("{}", version_line(spec.name));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let (out, failed) = run_file(spec, argv.get(1).map(Path::new), body);
    emit(&out);
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `name version (catalog ...)`, printed by `--version`.
pub fn version_line(name: &str) -> String {
    let c = crate::catalog::catalog();
    format!(
        "{name} {} (k8s-calico; Calico catalog {} to {})",
        env!("CARGO_PKG_VERSION"),
        c.oldest_release().version,
        c.newest_release().version
    )
}

/// Runs the module on an arguments file and returns the result object and whether it failed.
/// Separate from [`main`] so tests can drive it without a process.
pub fn run_file(spec: &'static ModuleSpec, path: Option<&Path>, body: Body) -> (Value, bool) {
    let Some(path) = path else {
        let msg = format!(
            "no arguments file given: Ansible runs this module as `{0} <args file>`; run `{0} --help` for its parameters",
            spec.name
        );
        return render_result(Err(Failure::new(msg)), &[], &[], json!({"module_args": {}}));
    };
    let raw = match args::read_args_file(path, spec.name) {
        Ok(raw) => raw,
        Err(msg) => {
            return render_result(Err(Failure::new(msg)), &[], &[], json!({"module_args": {}}));
        }
    };
    run_args(spec, raw, body)
}

/// Runs the module on already-parsed raw arguments.
pub fn run_args(spec: &'static ModuleSpec, raw: Map<String, Value>, body: Body) -> (Value, bool) {
    let mut module = match Module::from_args(spec, raw) {
        Ok(m) => m,
        Err(msg) => {
            return render_result(Err(Failure::new(msg)), &[], &[], json!({"module_args": {}}));
        }
    };
    install_panic_capture();
    CAPTURED_PANIC.with(|c| *c.borrow_mut() = Some(None));
    let result = panic::catch_unwind(AssertUnwindSafe(|| body(&mut module)));
    let captured = CAPTURED_PANIC.with(|c| c.borrow_mut().take()).flatten();
    let result = match result {
        Ok(r) => r,
        Err(_) => {
            let what = captured.unwrap_or_else(|| "unknown panic".to_string());
            Err(Failure::new(format!(
                "internal error in {}: {what}; nothing after this point ran. Please report it with the task's arguments",
                spec.name
            )))
        }
    };
    module.render(result)
}

fn emit(out: &Value) {
    let mut text = serde_json::to_string(out).unwrap_or_else(|e| {
        format!(r#"{{"failed": true, "msg": "could not serialise the result: {e}"}}"#)
    });
    text.push('\n');
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    // If stdout is gone there is nobody left to tell.
    let _ = lock.write_all(text.as_bytes());
    let _ = lock.flush();
}

/// Runs a future to completion on a small runtime, for modules that talk to a cluster.
pub fn block_on<F: std::future::Future>(fut: F) -> Result<F::Output, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot start the async runtime: {e}")))?;
    Ok(rt.block_on(fut))
}

#[cfg(test)]
mod tests {
    use super::*;

    static SPEC: ModuleSpec = ModuleSpec {
        name: "probe",
        short_description: "test module",
        params: &[
            Param::str("mode").default_str("ok"),
            Param::str("password").no_log(),
        ],
    };

    fn body(m: &mut Module) -> Result<Outcome, Failure> {
        match m.str("mode") {
            Some("panic") => panic!("boom"),
            Some("fail") => Err(Failure::new("it broke\nbadly")),
            Some("echo") => Ok(Outcome::ok(format!(
                "password is {}",
                m.str("password").unwrap_or("")
            ))),
            _ => {
                m.warn("careful");
                Ok(Outcome::ok("fine")
                    .changed(true)
                    .fact("probe", json!({"x": 1})))
            }
        }
    }

    fn run(v: Value) -> (Value, bool) {
        run_args(&SPEC, v.as_object().unwrap().clone(), body)
    }

    #[test]
    fn success_has_every_key() {
        let (out, failed) = run(json!({}));
        assert!(!failed);
        for key in [
            "changed",
            "failed",
            "msg",
            "ansible_facts",
            "warnings",
            "deprecations",
            "diff",
            "invocation",
        ] {
            assert!(out.get(key).is_some(), "{key} missing in {out}");
        }
        assert_eq!(out["changed"], json!(true));
        assert_eq!(out["ansible_facts"]["probe"]["x"], json!(1));
        assert_eq!(out["warnings"], json!(["careful"]));
    }

    #[test]
    fn panics_become_one_failed_object() {
        let (out, failed) = run(json!({"mode": "panic"}));
        assert!(failed);
        let msg = out["msg"].as_str().unwrap();
        assert!(
            msg.starts_with("internal error in probe: boom at src/module/mod.rs:"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn failures_are_one_line() {
        let (out, failed) = run(json!({"mode": "fail"}));
        assert!(failed);
        assert_eq!(out["failed"], json!(true));
        assert_eq!(out["msg"], json!("it broke | badly"));
    }

    #[test]
    fn secrets_are_masked_and_scrubbed() {
        let (out, _) = run(json!({"mode": "echo", "password": "hunter2"}));
        assert_eq!(
            out["invocation"]["module_args"]["password"],
            json!(NO_LOG_PLACEHOLDER)
        );
        assert_eq!(out["msg"], json!("password is ********"));
        let (out, _) = run(json!({"mode": "ok", "_ansible_no_log": true}));
        assert_eq!(
            out["invocation"]["module_args"]["mode"],
            json!(NO_LOG_PLACEHOLDER)
        );
    }

    #[test]
    fn missing_and_broken_args_files() {
        let (out, failed) = run_file(&SPEC, None, body);
        assert!(
            failed
                && out["msg"]
                    .as_str()
                    .unwrap()
                    .starts_with("no arguments file given")
        );
        let (out, failed) = run_file(&SPEC, Some(Path::new("/nonexistent/args")), body);
        assert!(
            failed
                && out["msg"]
                    .as_str()
                    .unwrap()
                    .contains("cannot read the arguments file /nonexistent/args")
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("args");
        std::fs::write(&p, "mode=ok").unwrap();
        let (out, failed) = run_file(&SPEC, Some(&p), body);
        assert!(
            failed && out["msg"].as_str().unwrap().contains("is not valid JSON"),
            "{out}"
        );
        std::fs::write(&p, "[1]").unwrap();
        let (out, failed) = run_file(&SPEC, Some(&p), body);
        assert!(
            failed && out["msg"].as_str().unwrap().contains("holds a JSON list"),
            "{out}"
        );
    }
}
