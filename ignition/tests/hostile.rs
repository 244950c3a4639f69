//! Hostile configs (tests/hostile/*.json) against the applier, in place and
//! staged: whatever each one does, and whether it is refused or not, nothing
//! outside the root changes and the root keeps its own mode. `@OUTSIDE@` in
//! a config is the absolute path of a directory beside the root.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use imgbuild_ignition::apply::{self, Fetch};

struct Offline;
impl Fetch for Offline {
    fn fetch(&self, url: &str) -> Result<Box<dyn Read + '_>, String> {
        Err(format!("offline: {url}"))
    }
}

/// Every path under `dir` (links not followed) with its kind, mode and
/// contents or target.
fn snapshot(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p == skip {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode();
            let what = if m.file_type().is_symlink() {
                format!("link {:?}", std::fs::read_link(&p).unwrap())
            } else if m.is_dir() {
                todo.push(p.clone());
                format!("dir {mode:o}")
            } else {
                format!(
                    "file {mode:o} {:?} links {}",
                    std::fs::read(&p).unwrap(),
                    std::os::unix::fs::MetadataExt::nlink(&m)
                )
            };
            out.insert(p, what);
        }
    }
    out
}

/// A scratch tree: `outside/` (a sentinel file and a subdirectory) beside `root/`.
fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let (outside, root) = (t.path().join("outside"), t.path().join("root"));
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    std::fs::write(outside.join("sentinel"), "untouched").unwrap();
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o750)).unwrap();
    (t, outside, root)
}

fn corpus() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile");
    let mut cases: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "the corpus is there");
    cases
}

/// Runs every case with `run`, checking that nothing outside the root changed.
fn each_case(run: impl Fn(&[u8], &Path) -> Result<(), String>) {
    for (name, text) in corpus() {
        let (t, outside, root) = scratch();
        let before = snapshot(t.path(), &root);
        let config = text.replace("@OUTSIDE@", outside.to_str().unwrap());
        let result = run(config.as_bytes(), &root);
        assert_eq!(snapshot(t.path(), &root), before, "{name} ({result:?}) changed something outside the root");
        let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o750, "{name} ({result:?}) changed the root's mode");
        for (path, what) in snapshot(&root, Path::new("")) {
            assert!(!what.contains("pwned") || path.starts_with(&root), "{name}: {path:?}");
        }
    }
}

#[test]
fn hostile_configs_change_nothing_outside_the_root_in_place() {
    each_case(|config, root| apply::apply(config, root, &Offline).map(drop).map_err(|e| e.to_string()));
}

#[test]
fn hostile_configs_change_nothing_outside_the_root_staged() {
    each_case(|config, root| {
        let staged = apply::stage(config, root, &Offline).map_err(|e| e.to_string())?;
        staged.commit(root).map(drop).map_err(|e| e.to_string())
    });
}

#[test]
fn bad_modes_and_the_root_itself_are_refused_by_name() {
    let cases = [
        ("mode-negative.json", "/f: mode -1 is outside 0 to 07777 (octal)"),
        ("mode-too-large.json", "/d: mode 65535 is outside 0 to 07777 (octal)"),
        ("root-directory.json", "/: the root itself cannot be a file, directory or link"),
        ("root-file.json", "/..: the root itself cannot be a file, directory or link"),
    ];
    let all = corpus();
    for (name, want) in cases {
        let text = &all.iter().find(|(n, _)| n == name).unwrap().1;
        let root = tempfile::tempdir().unwrap();
        let e = apply::apply(text.as_bytes(), root.path(), &Offline).unwrap_err().to_string();
        assert_eq!(e, want, "{name}");
    }
}

#[test]
fn links_are_followed_inside_the_root_as_ignition_follows_them() {
    let (t, outside, root) = scratch();
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/link-absolute-then-file.json"),
    )
    .unwrap()
    .replace("@OUTSIDE@", outside.to_str().unwrap());
    apply::apply(config.as_bytes(), &root, &Offline).unwrap();
    // `/x` → OUTSIDE, taken as if `root` were `/`: the file lands at root/OUTSIDE/new.
    let inside = root.join(outside.strip_prefix("/").unwrap()).join("new");
    assert_eq!(std::fs::read_to_string(inside).unwrap(), "pwned");
    assert_eq!(std::fs::read_link(root.join("x")).unwrap(), outside);
    drop(t);
}

/// An endless body: what a hostile server sends.
struct Endless;
impl Fetch for Endless {
    fn fetch(&self, _url: &str) -> Result<Box<dyn Read + '_>, String> {
        Ok(Box::new(std::io::repeat(b' ')))
    }
}

#[test]
fn an_endless_merge_source_stops_at_the_config_limit() {
    let root = tempfile::tempdir().unwrap();
    let config = br#"{"ignition":{"version":"3.3.0","config":{"merge":[{"source":"http://127.0.0.1:9/c"}]}}}"#;
    let e = apply::apply(config, root.path(), &Endless).unwrap_err().to_string();
    assert_eq!(e, format!("ignition.config.merge[0]: larger than the limit of {} bytes", apply::LIMITS.config));
}

#[test]
fn a_gzip_bomb_merge_stops_at_the_config_limit() {
    use base64::Engine;
    use std::io::Write;
    // 64 MiB of zeros in ~64 KB: twice the config limit.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 64 << 20]).unwrap();
    let bomb = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
    let config = format!(
        r#"{{"ignition":{{"version":"3.3.0","config":{{"merge":[{{"source":"data:;base64,{bomb}","compression":"gzip"}}]}}}}}}"#
    );
    let root = tempfile::tempdir().unwrap();
    let e = apply::apply(config.as_bytes(), root.path(), &Offline).unwrap_err().to_string();
    assert_eq!(e, format!("ignition.config.merge[0]: larger than the limit of {} bytes", apply::LIMITS.config));
}

#[test]
fn a_file_past_the_file_limit_is_refused_and_not_left_behind() {
    let root = tempfile::tempdir().unwrap();
    let config = br#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/big","contents":{"source":"http://127.0.0.1:9/big"}}]}}"#;
    let limits = apply::Limits { file: 1 << 20, ..apply::LIMITS };
    let e = apply::apply_with(config, root.path(), &Endless, limits).unwrap_err().to_string();
    assert_eq!(e, "/big: larger than the limit of 1048576 bytes");
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0, "no temporary file is left");
}

#[test]
fn a_staged_config_that_fails_late_changes_nothing_in_the_root() {
    let root = tempfile::tempdir().unwrap();
    let config = br#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/a","contents":{"source":"data:,a"}},{"path":"/etc/b","mode":-1}]}}"#;
    assert!(apply::stage(config, root.path(), &Offline).is_err());
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0, "neither /etc/a nor the stage is left");
}

/// A data: URL of `n` zero bytes, gzip'd.
fn zeros_gz(n: usize) -> String {
    use base64::Engine;
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; n]).unwrap();
    format!("data:;base64,{}", base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap()))
}

#[test]
fn many_files_each_under_the_file_limit_stop_at_the_total() {
    let files: Vec<String> = (0..4)
        .map(|i| format!(r#"{{"path":"/f{i}","contents":{{"source":"{}","compression":"gzip"}}}}"#, zeros_gz(1 << 20)))
        .collect();
    let config = format!(r#"{{"ignition":{{"version":"3.3.0"}},"storage":{{"files":[{}]}}}}"#, files.join(","));
    let limits = apply::Limits { file: 1 << 20, total: 3 << 20, ..apply::LIMITS };
    let root = tempfile::tempdir().unwrap();
    let e = apply::apply_with(config.as_bytes(), root.path(), &Offline, limits).unwrap_err().to_string();
    assert_eq!(e, "/f3: the config's contents together are larger than the limit of 3145728 bytes");
    assert!(!root.path().join("f3").exists());
}

#[test]
fn a_fan_of_merges_stops_at_the_config_count() {
    // Each level merges the one below ten times: 10 + 100 + 1000 configs.
    let mut config = r#"{"ignition":{"version":"3.3.0"}}"#.to_owned();
    for _ in 0..3 {
        let child = format!("data:,{}", config.replace('%', "%25").replace('"', "%22").replace(',', "%2C"));
        let merges: Vec<String> = (0..10).map(|_| format!(r#"{{"source":"{child}"}}"#)).collect();
        config = format!(r#"{{"ignition":{{"version":"3.3.0","config":{{"merge":[{}]}}}}}}"#, merges.join(","));
    }
    let root = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let e = apply::apply(config.as_bytes(), root.path(), &Offline).unwrap_err().to_string();
    assert!(e.ends_with(&format!("more than {} configs to merge or replace in all", apply::LIMITS.configs)), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
