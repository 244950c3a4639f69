//! Golden-file checks: compare output with a checked-in file; set
//! `UPDATE_GOLDEN=1` to rewrite the files after an intended change.

use std::path::{Path, PathBuf};

pub fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

pub fn assert_golden(rel: &str, actual: &str) {
    let path = tests_dir().join(rel);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading golden {}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert!(want == actual, "output differs from {}:\n--- want\n{want}\n--- got\n{actual}", path.display());
}
