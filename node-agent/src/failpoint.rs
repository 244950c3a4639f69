//! Failpoints: faults the tests inject into a real agent, named in
//! `NODE_AGENT_FAILPOINT` (comma-separated). In the image the kernel hands
//! an unknown `NAME=value` on its command line to PID 1 as environment, so
//! `NODE_AGENT_FAILPOINT=panic-in-task` there reaches every agent process.
//! Each fires once per node boot; nothing fires when the variable is unset.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

pub const ENV: &str = "NODE_AGENT_FAILPOINT";

fn armed(name: &str) -> bool {
    listed(std::env::var(ENV).ok().as_deref(), name)
}

fn listed(list: Option<&str>, name: &str) -> bool {
    list.is_some_and(|v| v.split(',').any(|n| n.trim() == name))
}

/// Fires `name` once across restarts of the node process: a marker in
/// `state_dir` remembers that it fired.
pub fn once_per_boot(name: &str, state_dir: &Path) -> bool {
    armed(name) && first_time(name, state_dir)
}

fn first_time(name: &str, state_dir: &Path) -> bool {
    let marker = state_dir.join(format!("failpoint-{name}"));
    let _ = std::fs::create_dir_all(state_dir);
    // create_new: only the first process to get here fires.
    std::fs::OpenOptions::new().write(true).create_new(true).open(marker).is_ok()
}

/// Fires `name` once in this process (PID 1 lives for the whole boot).
pub fn once_per_process(name: &str, fired: &AtomicBool) -> bool {
    armed(name) && !fired.swap(true, Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_only_when_armed() {
        let tmp = tempfile::tempdir().unwrap();
        // Unarmed: never (the variable is not set in unit tests).
        assert!(!once_per_boot("panic-in-task", tmp.path()));
        assert!(!once_per_process("panic-in-pid1", &AtomicBool::new(false)));
        assert!(listed(Some("a, panic-in-task"), "panic-in-task"));
        assert!(!listed(Some("panic-in-task-2"), "panic-in-task") && !listed(None, "x"));
        assert!(first_time("x", tmp.path()));
        assert!(!first_time("x", tmp.path()), "a second process does not fire it again");
    }
}
