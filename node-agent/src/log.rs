//! Console/journal lines, all prefixed `node-agent:` like flanneld's are.

use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn info(msg: &str) {
    println!("node-agent: {msg}");
}

pub fn warn(msg: &str) {
    eprintln!("node-agent: warning: {msg}");
}

pub fn error(msg: &str) {
    eprintln!("node-agent: error: {msg}");
}

pub fn debug(msg: &str) {
    if DEBUG.load(Ordering::Relaxed) {
        println!("node-agent: debug: {msg}");
    }
}

// Decorations for boot-timing lines.

/// Seconds since the kernel started, for boot timings.
pub fn uptime() -> String {
    let text = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    text.split_whitespace().next().map(|s| format!("{s}s")).unwrap_or_else(|| "?".into())
}

/// CPU time this process and the children it waited for have used, for
/// boot timings: the agent's own work, as opposed to waiting.
pub fn cpu() -> String {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().skip(11).take(4).filter_map(|f| f.parse().ok()).collect())
        .unwrap_or_default();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
    match fields.len() {
        4 => format!("{}ms", fields.iter().sum::<u64>() * 1000 / ticks.max(1)),
        _ => "?".into(),
    }
}
