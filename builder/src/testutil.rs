//! Test paths, and golden-file checks through `testkit` (set
//! `UPDATE_GOLDEN=1` to rewrite the files after an intended change).

use std::path::{Path, PathBuf};

pub fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// The workspace's one golden check (`testkit`), for a file under `tests/`.
pub fn assert_golden(rel: &str, actual: &str) {
    testkit::assert_golden(&tests_dir().join(rel), actual);
}
