//! The in-image Ignition applier on arbitrary configs: whatever a config
//! does, nothing beside its root may change. `@OUTSIDE@` in the input is
//! the absolute path of a folder beside the root (seeds: the hostile corpus).
#![no_main]
use libfuzzer_sys::fuzz_target;

struct Offline;
impl imgbuild_ignition::apply::Fetch for Offline {
    fn fetch(&self, url: &str) -> Result<Box<dyn std::io::Read + '_>, String> {
        Err(format!("offline: {url}"))
    }
}

/// Every name under `dir`, links not followed, with file contents.
fn tree(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            out.push((p.clone(), Vec::new()));
            out.extend(tree(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
        }
    }
    out.sort();
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let t = tempfile::tempdir().unwrap();
    let (outside, root) = (t.path().join("outside"), t.path().join("root"));
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    std::fs::write(outside.join("sentinel"), "untouched").unwrap();
    std::fs::create_dir(&root).unwrap();
    let before = tree(&outside);
    let config = text.replace("@OUTSIDE@", outside.to_str().unwrap());
    let limits = imgbuild_ignition::apply::Limits { config: 1 << 20, file: 1 << 20, ..imgbuild_ignition::apply::LIMITS };
    let _ = imgbuild_ignition::apply::apply_with(config.as_bytes(), &root, &Offline, limits);
    assert_eq!(tree(&outside), before, "a config changed a folder beside its root");
    let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(names.len(), 2, "a config made {names:?} beside its root");
});
