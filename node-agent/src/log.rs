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
