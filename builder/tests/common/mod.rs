//! Helpers for the builder's integration tests: run the real binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn imgbuild() -> Command {
    Command::new(env!("CARGO_BIN_EXE_imgbuild"))
}

/// The agent cargo built beside imgbuild (the workspace builds both).
pub fn agent_path() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_imgbuild")).with_file_name("node-agent");
    assert!(p.is_file(), "{} is missing: run the tests with `cargo test --workspace`", p.display());
    p
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Fails loudly when a tool the test needs is not installed: tests never skip.
pub fn require_tool(path: &str) {
    assert!(
        Path::new(path).exists() || which(path),
        "{path} is not installed; run `bash .ci/install` (CI does) to install the test dependencies"
    );
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}
