//! `-v` or `IMGBUILD_TIMINGS=1`: one stderr line per build phase, for
//! finding where a build's time goes (bench/run.sh reads them).

use std::sync::OnceLock;
use std::time::Instant;

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    let env = *ON.get_or_init(|| std::env::var_os("IMGBUILD_TIMINGS").is_some_and(|v| v == "1"));
    env || crate::ui::level() == crate::ui::Level::Verbose
}

/// Runs `f`, reporting how long it took as phase `what`.
pub fn phase<T>(what: &str, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    let start = Instant::now();
    let out = f();
    eprintln!("imgbuild: timing {what} {:.4}s", start.elapsed().as_secs_f64());
    out
}
