//! Progress of a long wait, for the person watching the playbook.
//!
//! Ansible shows nothing of a module until it returns, and a Calico hop can take minutes. While
//! a module waits it writes a line every [`INTERVAL`] to stderr, `k8s-calico progress: <step>:
//! <state>`. The collection's action plugin shows each line as it comes when the module runs on
//! the controller; run elsewhere, the lines end up in the stderr Ansible discards once the
//! module's stdout parses, so they cost nothing. Someone running the binary by hand sees them too.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

/// What starts every progress line on stderr (the action plugin looks for it).
pub const PREFIX: &str = "k8s-calico progress: ";

/// How often a wait reports: well inside the 15 s a person waits before wondering.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// The step the next reports belong to, e.g. "upgrade to v3.27.5 (hop 1 of 2)".
static STEP: Mutex<String> = Mutex::new(String::new());

/// Names the step that follows and reports that it started.
pub fn step(label: impl Into<String>, what: &str) {
    let label = label.into();
    if let Ok(mut s) = STEP.lock() {
        s.clone_from(&label);
    }
    write_line(&label, what);
}

/// Reports the state of the current step.
pub fn report(what: &str) {
    let label = STEP.lock().map(|s| s.clone()).unwrap_or_default();
    write_line(&label, what);
}

/// The line [`report`] writes, without writing it.
pub fn line(label: &str, what: &str) -> String {
    let what = super::one_line(what);
    if label.is_empty() {
        format!("{PREFIX}{what}")
    } else {
        format!("{PREFIX}{label}: {what}")
    }
}

fn write_line(label: &str, what: &str) {
    let mut text = line(label, what);
    text.push('\n');
    // Progress is a courtesy: a closed stderr must not fail the module.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_the_step_and_stays_one_line() {
        assert_eq!(
            line("upgrade to v3.27.5", "2/5 nodes updated\nsoon"),
            "k8s-calico progress: upgrade to v3.27.5: 2/5 nodes updated | soon"
        );
        assert_eq!(line("", "waiting"), "k8s-calico progress: waiting");
    }
}
