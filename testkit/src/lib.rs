//! Test helpers every crate of the workspace shares: golden files, and
//! (feature `cri`) a CRI client that speaks to containerd as kubelet does.

use std::path::Path;

#[cfg(feature = "cri")]
pub mod cri;

/// Compares `actual` with the checked-in golden file at `path`. With
/// `UPDATE_GOLDEN=1` it rewrites the file instead (after an intended
/// change; review the diff), through a temporary file and a rename.
pub fn assert_golden(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let dir = path.parent().expect("a golden file has a folder");
        std::fs::create_dir_all(dir).unwrap();
        let tmp = dir.join(format!(".{}.tmp", path.file_name().unwrap().to_string_lossy()));
        std::fs::write(&tmp, actual).unwrap();
        std::fs::rename(&tmp, path).unwrap();
        return;
    }
    let want = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading golden {}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(want == actual, "output differs from {}:\n--- want\n{want}\n--- got\n{actual}", path.display());
}

/// [`assert_golden`] for a file under the calling crate's `tests/` folder.
#[macro_export]
macro_rules! assert_golden {
    ($rel:expr, $actual:expr) => {
        $crate::assert_golden(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join($rel), $actual)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `UPDATE_GOLDEN=1 cargo test` rewrites a golden file; without it a
    /// difference fails. (The one test here that sets the variable.)
    #[test]
    fn update_golden_rewrites_the_file() {
        let dir = std::env::temp_dir().join(format!("testkit-{}", std::process::id()));
        let path = dir.join("golden/out.txt");
        std::env::set_var("UPDATE_GOLDEN", "1");
        assert_golden(&path, "new\n");
        std::env::remove_var("UPDATE_GOLDEN");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        assert_golden(&path, "new\n");
        let differs = std::panic::catch_unwind(|| assert_golden(&path, "other\n"));
        assert!(differs.is_err(), "a difference must fail");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
