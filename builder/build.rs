//! Sets `BUILD_VERSION`: the package version and, when built from a git
//! checkout, the commit (`0.1.0 (commit 0123456789ab)`), so `--version` says
//! exactly what is running. `IMGBUILD_GIT_COMMIT` supplies the commit where
//! there is no checkout (a release tarball). node-agent uses this file too.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=IMGBUILD_GIT_COMMIT");
    let version = std::env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    let commit = std::env::var("IMGBUILD_GIT_COMMIT").ok().filter(|c| !c.is_empty()).or_else(|| {
        // Rebuild when HEAD moves (a commit, a checkout); only files that exist,
        // since a missing one would rerun this script on every build.
        let mut watch = vec![git(&["rev-parse", "--git-path", "HEAD"])?];
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.extend(git(&["rev-parse", "--git-path", &branch]));
        }
        watch.extend(git(&["rev-parse", "--git-path", "packed-refs"]));
        for path in watch.iter().filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    let full = match commit {
        Some(c) => format!("{version} (commit {c})"),
        None => version,
    };
    println!("cargo:rustc-env=BUILD_VERSION={full}");
}
