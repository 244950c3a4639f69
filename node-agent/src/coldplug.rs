//! Hardware discovery as udev's coldplug does it: every device the kernel
//! knows has a `modalias`; the drivers whose aliases match it are loaded
//! (their dependencies first), again until no new driver appears (a bus
//! driver brings new devices: virtio_pci makes the virtio devices), and
//! network devices left without a driver are named.
//!
//! The table comes from the builder: the image's modules with their
//! dependencies and every alias each declares (`alias=` in its `.modinfo`;
//! a kernel unpacked from its package has no `modules.alias`):
//!
//! ```text
//! module virtio_net kernel/drivers/net/virtio_net.ko net_failover
//! alias virtio:d00000001v* virtio_net
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The image's drivers: each module's file and dependencies, and every
/// alias pattern with its module.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Table {
    modules: HashMap<String, (PathBuf, Vec<String>)>,
    /// Pattern, module, and the length of the pattern's literal prefix:
    /// thousands of patterns on a hardware image, nearly all rejected by
    /// their prefix before fnmatch runs.
    aliases: Vec<(String, String, usize)>,
}

impl Table {
    pub fn parse(text: &str) -> Result<Self> {
        let mut t = Table::default();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("module"), Some(name), Some(path)) => {
                    let deps = words.map(str::to_owned).collect();
                    t.modules.insert(name.to_owned(), (PathBuf::from(path), deps));
                }
                (Some("alias"), Some(pattern), Some(module)) if words.next().is_none() => {
                    let literal = pattern.find(['*', '?', '[']).unwrap_or(pattern.len());
                    t.aliases.push((pattern.to_owned(), module.to_owned(), literal));
                }
                _ => bail!(
                    "coldplug table line {}: {line:?} is neither `module NAME PATH DEPS...` nor `alias PATTERN MODULE`",
                    n + 1
                ),
            }
        }
        if let Some((_, m, _)) = t.aliases.iter().find(|(_, m, _)| !t.modules.contains_key(m)) {
            bail!("coldplug table: an alias names {m}, which it does not list as a module");
        }
        Ok(t)
    }

    /// The modules whose aliases match `modalias`, in table order.
    pub fn matches(&self, modalias: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (pattern, module, literal) in &self.aliases {
            if modalias.as_bytes().starts_with(&pattern.as_bytes()[..*literal])
                && !out.contains(&module.as_str())
                && fnmatch(pattern.as_bytes(), modalias.as_bytes())
            {
                out.push(module);
            }
        }
        out
    }

    /// `module` after its dependencies: the files to load, in order, that
    /// `loaded` does not hold yet (and then does).
    pub fn load_order(&self, module: &str, loaded: &mut BTreeSet<String>) -> Vec<PathBuf> {
        let mut out = Vec::new();
        self.visit(module, loaded, &mut out, 0);
        out
    }

    fn visit(&self, module: &str, loaded: &mut BTreeSet<String>, out: &mut Vec<PathBuf>, depth: usize) {
        // The builder resolved the order; depth only stops a bad table looping.
        if depth > 64 || loaded.contains(module) {
            return;
        }
        let Some((path, deps)) = self.modules.get(module) else { return };
        for d in deps {
            self.visit(d, loaded, out, depth + 1);
        }
        loaded.insert(module.to_owned());
        out.push(path.clone());
    }
}

/// fnmatch(3) with no flags, as kmod matches aliases: `*`, `?`, and
/// bracket expressions with ranges and `!`/`^` negation.
pub fn fnmatch(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match bracket(&pattern[p..], text[t]) {
                Some((hit, len)) => hit.then_some(p + len),
                // Unterminated: the `[` is a plain character.
                None => (text[t] == b'[').then_some(p + 1),
            },
            Some(&c) => (c == text[t]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((sp, st))) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A bracket expression at the start of `pattern`: whether `c` matches it
/// and its length; `None` when it is unterminated (then `[` is literal).
fn bracket(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let &lo = pattern.get(i)?;
        if lo == b']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&hi| hi != b']') {
            let hi = pattern[i + 2];
            hit |= lo <= c && c <= hi;
            i += 3;
        } else {
            hit |= lo == c;
            i += 1;
        }
    }
}

/// Every device's modalias, bus by bus (`sys/bus/*/devices/*`, as udev's
/// trigger enumerates them): one read per device, not a walk of all of
/// `/sys/devices` (slow under TCG, and a pass runs until nothing is new).
pub fn modaliases(sys: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(buses) = std::fs::read_dir(sys.join("bus")) else { return out };
    for bus in buses.flatten() {
        let Ok(devices) = std::fs::read_dir(bus.path().join("devices")) else { continue };
        for dev in devices.flatten() {
            if let Ok(text) = std::fs::read_to_string(dev.path().join("modalias")) {
                let alias = text.trim();
                if !alias.is_empty() {
                    out.push(alias.to_owned());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Loads drivers for every device until a pass loads nothing new; returns
/// the modules loaded. `load` loads one file (relative to the module dir)
/// and may fail: the error is logged by the caller's `report` and that
/// module skipped.
pub fn coldplug(
    table: &Table,
    sys: &Path,
    loaded: &mut BTreeSet<String>,
    mut load: impl FnMut(&Path) -> Result<()>,
    mut report: impl FnMut(String),
) -> Vec<String> {
    let mut done = Vec::new();
    for _pass in 0..8 {
        let before = loaded.len();
        for alias in modaliases(sys) {
            for module in table.matches(&alias) {
                for file in table.load_order(module, loaded) {
                    if let Err(e) = load(&file) {
                        report(format!("coldplug: loading {} for {alias}: {e:#}", file.display()));
                    }
                }
                if !done.iter().any(|d: &String| d == module) && loaded.contains(module) {
                    done.push(module.to_owned());
                }
            }
        }
        if loaded.len() == before {
            break;
        }
    }
    done
}

/// Network controllers on the PCI bus with no driver bound, as `PCI
/// VVVV:DDDD (class 0xCCCCCC) at SLOT`: what to name when no node NIC shows up.
pub fn driverless_nics(sys: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(sys.join("bus/pci/devices")) else { return out };
    for entry in entries.flatten() {
        let dev = entry.path();
        let read = |f: &str| std::fs::read_to_string(dev.join(f)).map(|s| s.trim().to_owned()).unwrap_or_default();
        let class = read("class");
        // PCI base class 0x02: network controllers.
        if !class.starts_with("0x02") || dev.join("driver").exists() {
            continue;
        }
        let hex = |s: String| s.trim_start_matches("0x").to_owned();
        out.push(format!(
            "PCI {}:{} (class {class}) at {}",
            hex(read("vendor")),
            hex(read("device")),
            entry.file_name().to_string_lossy()
        ));
    }
    out.sort();
    out
}

/// The modalias of a kernel uevent that adds a device, if it has one.
pub fn uevent_modalias(msg: &[u8]) -> Option<String> {
    let (mut add, mut alias) = (false, None);
    for field in msg.split(|b| *b == 0).filter_map(|f| std::str::from_utf8(f).ok()) {
        if field == "ACTION=add" {
            add = true;
        } else if let Some(a) = field.strip_prefix("MODALIAS=") {
            alias = Some(a.to_owned());
        }
    }
    alias.filter(|a| add && !a.is_empty())
}

/// The table the builder wrote into the image, if any.
pub fn load_table(path: &Path) -> Result<Option<Table>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Table::parse(&text).map(Some).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_as_fnmatch_does() {
        let m = |p: &str, t: &str| fnmatch(p.as_bytes(), t.as_bytes());
        assert!(m("pci:v00001AF4d00001000sv*sd*bc*sc*i*", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"));
        assert!(!m("pci:v00001AF4d00001000sv*sd*bc*sc*i*", "pci:v00001AF4d00001001sv00001AF4sd00000001bc02sc00i00"));
        assert!(m("virtio:d00000001v*", "virtio:d00000001v00001AF4"));
        assert!(m("pci:v00008086d*sv*sd*bc02sc00i*", "pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00"));
        assert!(m("a?c", "abc") && !m("a?c", "ac"));
        assert!(m("*", "") && m("**x", "x") && !m("x*", "y"));
        assert!(m("usb:v[0-9A-F]*", "usb:v1D6Bp0002") && !m("usb:v[!0-9]*", "usb:v1D6B"));
        assert!(m("x[]]y", "x]y") && m("a[", "a["));
        assert!(m("acpi*:QEMU0002:*", "acpi:QEMU0002:"));
    }

    fn table() -> Table {
        Table::parse(
            "module virtio_pci kernel/drivers/virtio/virtio_pci.ko virtio_pci_modern_dev\n\
             module virtio_pci_modern_dev kernel/drivers/virtio/virtio_pci_modern_dev.ko\n\
             module virtio_net kernel/drivers/net/virtio_net.ko net_failover\n\
             module net_failover kernel/net/core/net_failover.ko\n\
             alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
             alias virtio:d00000001v* virtio_net\n",
        )
        .unwrap()
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let t = table();
        let mut loaded = BTreeSet::new();
        let order = t.load_order("virtio_pci", &mut loaded);
        assert_eq!(
            order,
            [
                PathBuf::from("kernel/drivers/virtio/virtio_pci_modern_dev.ko"),
                "kernel/drivers/virtio/virtio_pci.ko".into()
            ]
        );
        assert!(t.load_order("virtio_pci", &mut loaded).is_empty());
        assert_eq!(t.matches("virtio:d00000001v00001AF4"), ["virtio_net"]);
        assert!(t.matches("virtio:d00000002v00001AF4").is_empty());
    }

    #[test]
    fn uevents_that_add_a_device_name_its_modalias() {
        let add = b"add@/devices/pci0000:00/0000:00:05.0\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:05.0\0SUBSYSTEM=pci\0MODALIAS=pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00\0SEQNUM=1201\0";
        assert_eq!(uevent_modalias(add).as_deref(), Some("pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00"));
        assert_eq!(uevent_modalias(b"remove@/x\0ACTION=remove\0MODALIAS=pci:v1\0"), None);
        assert_eq!(uevent_modalias(b"add@/x\0ACTION=add\0SUBSYSTEM=block\0"), None);
    }

    #[test]
    fn bad_tables_are_refused() {
        assert!(Table::parse("alias x y\n").unwrap_err().to_string().contains("does not list as a module"));
        assert!(Table::parse("modprobe x\n").unwrap_err().to_string().contains("line 1"));
    }

    /// A fake /sys where loading virtio_pci makes a virtio NIC appear.
    #[test]
    fn passes_until_nothing_new_and_names_driverless_nics() {
        let sys = tempfile::tempdir().unwrap();
        let pci = sys.path().join("devices/pci0000:00/0000:00:03.0");
        std::fs::create_dir_all(&pci).unwrap();
        std::fs::write(pci.join("modalias"), "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\n").unwrap();
        let e1000 = sys.path().join("devices/pci0000:00/0000:00:04.0");
        std::fs::create_dir_all(&e1000).unwrap();
        std::fs::write(e1000.join("modalias"), "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00\n").unwrap();
        let bus = sys.path().join("bus/pci/devices");
        std::fs::create_dir_all(&bus).unwrap();
        for (slot, dev, device) in [("0000:00:03.0", &pci, "0x1000"), ("0000:00:04.0", &e1000, "0x100e")] {
            std::os::unix::fs::symlink(dev, bus.join(slot)).unwrap();
            std::fs::write(dev.join("class"), "0x020000\n").unwrap();
            std::fs::write(dev.join("vendor"), if slot.ends_with("3.0") { "0x1af4\n" } else { "0x8086\n" }).unwrap();
            std::fs::write(dev.join("device"), format!("{device}\n")).unwrap();
        }
        let mut loaded = BTreeSet::new();
        let mut files = Vec::new();
        let t = table();
        let done = coldplug(
            &t,
            sys.path(),
            &mut loaded,
            |f| {
                files.push(f.to_owned());
                if f.ends_with("virtio_pci.ko") {
                    // The bus driver binds and finds a virtio NIC behind it.
                    std::fs::create_dir_all(pci.join("driver")).unwrap();
                    let v = pci.join("virtio0");
                    std::fs::create_dir_all(&v).unwrap();
                    std::fs::write(v.join("modalias"), "virtio:d00000001v00001AF4\n").unwrap();
                    let bus = sys.path().join("bus/virtio/devices");
                    std::fs::create_dir_all(&bus).unwrap();
                    std::os::unix::fs::symlink(&v, bus.join("virtio0")).unwrap();
                }
                Ok(())
            },
            |e| panic!("{e}"),
        );
        assert_eq!(done, ["virtio_pci", "virtio_net"]);
        assert_eq!(files.len(), 4, "{files:?}");
        assert_eq!(driverless_nics(sys.path()), ["PCI 8086:100e (class 0x020000) at 0000:00:04.0"]);
    }
}
