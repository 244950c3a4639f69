//! What a person sees while imgbuild works: progress and notes on stderr,
//! silenced by `-q`; `-v` adds per-phase timings. Results (summaries,
//! reports) go to stdout and are not this module's.

use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Quiet = 0,
    Normal = 1,
    Verbose = 2,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Normal as u8);

pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        0 => Level::Quiet,
        1 => Level::Normal,
        _ => Level::Verbose,
    }
}

pub fn quiet() -> bool {
    level() == Level::Quiet
}

/// A progress line or a note (`imgbuild: ...` on stderr), unless `-q`.
pub fn note(msg: &str) {
    if !quiet() {
        eprintln!("imgbuild: {msg}");
    }
}

/// A warning (`imgbuild: warning: ...` on stderr): shown even with `-q`.
pub fn warn(msg: &str) {
    eprintln!("imgbuild: warning: {msg}");
}
