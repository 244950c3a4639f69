//! Where things live in the image and on a node: the builder writes these
//! paths, the agent reads them. Image paths are absolute as the node sees
//! them; [`in_archive`] gives the form an initramfs archive stores.

/// The node config, embedded in the image or written by Ignition.
pub const CONFIG_PATH: &str = "/etc/node-agent/config.json";
/// Modules PID 1 loads before anything else (one `.ko` path per line,
/// relative to `/lib/modules/RELEASE`, dependencies first).
pub const MODULE_LIST: &str = "/etc/node-agent/modules";
/// Modules only the pod network needs (overlay, netfilter, bridge), loaded
/// in the background while the node reaches etcd.
pub const POD_MODULE_LIST: &str = "/etc/node-agent/modules.pods";
/// The image's device drivers for coldplug: `module NAME PATH DEPS...` and
/// `alias PATTERN MODULE` lines (PATH relative to `/lib/modules/RELEASE`).
pub const COLDPLUG_TABLE: &str = "/etc/node-agent/coldplug";
/// Written when the background modules are loaded (or failed to).
pub const POD_MODULES_DONE: &str = "/run/node-agent/pod-modules.done";
/// QEMU's fw_cfg entry that Flatcar reads its Ignition config from.
pub const FW_CFG_PATH: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/com.coreos/config/raw";

/// A node path as an archive member name (no leading `/`).
pub fn in_archive(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// The CNI conflist the agent writes in the node's CNI config folder.
pub const CONFLIST_NAME: &str = "10-imgbuild.conflist";

#[cfg(test)]
mod tests {
    #[test]
    fn archive_names_are_relative() {
        assert_eq!(super::in_archive(super::CONFIG_PATH), "etc/node-agent/config.json");
    }
}
