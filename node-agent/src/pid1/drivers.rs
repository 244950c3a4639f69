//! PID 1's device drivers: coldplug before the node process starts, then
//! hotplug, on the kernel's uevents, for devices that appear later (a slow
//! NIC, a hot-added disk). The uevent socket is open before the coldplug
//! scan, so a device that appears during it is not missed.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::socket::{bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};
use node_config::layout::COLDPLUG_TABLE;

use super::log;
use crate::coldplug::{self, Table};

struct Drivers {
    table: Table,
    dir: PathBuf,
    /// Held while loading, so a module never loads before what it needs.
    loaded: Mutex<BTreeSet<String>>,
}

impl Drivers {
    fn load(&self, file: &Path) -> anyhow::Result<()> {
        crate::kmod::load_file(&self.dir.join(file)).map(drop)
    }

    /// Every device present: drivers loaded until nothing new appears.
    fn scan(&self) -> Vec<String> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        coldplug::coldplug(
            &self.table,
            Path::new("/sys"),
            &mut loaded,
            |f| self.load(f),
            |m| log(&format!("warning: {m}")),
        )
    }
}

/// Coldplugs the image's drivers (when it has a table), names network
/// devices left without one, and follows later devices in a thread.
pub fn start(release: &str) {
    let table = match coldplug::load_table(Path::new(COLDPLUG_TABLE)) {
        Ok(Some(t)) => t,
        Ok(None) => return,
        Err(e) => return log(&format!("warning: no coldplug: {e:#}")),
    };
    let drivers = Arc::new(Drivers { table, dir: Path::new("/lib/modules").join(release), loaded: Default::default() });
    let events = uevent_socket().map_err(|e| log(&format!("warning: no hotplug: kernel uevents: {e}"))).ok();
    let done = drivers.scan();
    log(&format!(
        "coldplug: loaded {} drivers: {} uptime={} cpu={}",
        done.len(),
        done.join(" "),
        crate::log::uptime(),
        crate::log::cpu()
    ));
    for nic in coldplug::driverless_nics(Path::new("/sys")) {
        log(&format!("warning: no driver in this image for network device {nic}"));
    }
    if let Some(sock) = events {
        std::thread::spawn(move || hotplug(&drivers, &sock));
    }
}

/// The kernel's uevent broadcast (group 1: the kernel's own messages).
fn uevent_socket() -> nix::Result<OwnedFd> {
    let sock =
        socket(AddressFamily::Netlink, SockType::Datagram, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkKObjectUEvent)?;
    bind(sock.as_raw_fd(), &NetlinkAddr::new(0, 1))?;
    Ok(sock)
}

fn hotplug(drivers: &Drivers, sock: &OwnedFd) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(Errno::ENOBUFS) => {
                // Events were dropped: look at every device again.
                drivers.scan();
                continue;
            }
            Err(e) => return log(&format!("warning: hotplug stopped: {e}")),
        };
        let Some(alias) = coldplug::uevent_modalias(&buf[..n]) else { continue };
        let mut loaded = drivers.loaded.lock().unwrap_or_else(|e| e.into_inner());
        for module in drivers.table.matches(&alias) {
            let files = drivers.table.load_order(module, &mut loaded);
            let failed = files.iter().filter_map(|f| drivers.load(f).err()).map(|e| format!("{e:#}")).next();
            match (files.is_empty(), failed) {
                (true, _) => {}
                (false, None) => log(&format!("hotplug: loaded {module} for {alias}")),
                (false, Some(e)) => log(&format!("warning: hotplug: {module} for {alias}: {e}")),
            }
        }
    }
}
