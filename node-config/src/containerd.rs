//! kubelet's container runtime as the agent runs it: where containerd, its
//! runc shim, runc and ctr are, and where containerd keeps its state. Set in
//! a node config when the agent starts containerd (the image's workers and
//! masters); absent on Flatcar, whose own containerd unit runs it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Containerd {
    /// containerd itself. Its shim, `containerd-shim-runc-v2`, is found in
    /// the same folder or on `PATH`.
    pub bin: PathBuf,
    /// ctr: imports the pause image.
    pub ctr: PathBuf,
    /// The OCI runtime the shim runs (a bare name is looked up on `PATH`).
    pub runc: PathBuf,
    /// The config file the agent writes and containerd reads.
    pub config: PathBuf,
    /// Images, snapshots and metadata (`root`).
    pub root: PathBuf,
    /// Sockets and task state (`state`).
    pub state: PathBuf,
    /// The socket kubelet's `--container-runtime-endpoint` names.
    pub socket: PathBuf,
}

impl Default for Containerd {
    fn default() -> Self {
        Containerd {
            bin: "/usr/bin/containerd".into(),
            ctr: "/usr/bin/ctr".into(),
            runc: "/usr/sbin/runc".into(),
            config: "/etc/containerd/config.toml".into(),
            root: "/var/lib/containerd".into(),
            state: "/run/containerd".into(),
            socket: "/run/containerd/containerd.sock".into(),
        }
    }
}

impl Containerd {
    /// Flatcar's own containerd (`containerd.service`): its paths are
    /// containerd's defaults, and the shim finds runc on `PATH`.
    pub fn flatcar() -> Self {
        Containerd { runc: "runc".into(), ..Default::default() }
    }

    /// Each path with its field name, and whether it may be a bare
    /// command name (looked up on `PATH`).
    pub fn paths(&self) -> [(&'static str, &Path, bool); 7] {
        [
            ("bin", &self.bin, false),
            ("ctr", &self.ctr, false),
            ("runc", &self.runc, true),
            ("config", &self.config, false),
            ("root", &self.root, false),
            ("state", &self.state, false),
            ("socket", &self.socket, false),
        ]
    }

    /// Every path under `dir` (tests): binaries stay Debian's.
    pub fn under(dir: &Path) -> Self {
        Containerd {
            config: dir.join("etc/containerd/config.toml"),
            root: dir.join("var/lib/containerd"),
            state: dir.join("run/containerd"),
            socket: dir.join("run/containerd/containerd.sock"),
            ..Default::default()
        }
    }
}

/// Where containerd runs: the choices that differ between our image and
/// Flatcar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host<'a> {
    /// Under our PID 1: no systemd, so runc writes cgroupfs itself; the
    /// root is the initramfs, where pivot_root(2) is refused, so runc moves
    /// the container's root instead; sandboxes run the pause image the
    /// agent built and imported. `restrict_oom_score_adj` when the agent
    /// lacks CAP_SYS_RESOURCE (a machine that is itself a container): runc
    /// could not give sandboxes containerd's -998 otherwise.
    Image { sandbox_image: &'a str, restrict_oom_score_adj: bool },
    /// Flatcar's own containerd: cgroups through systemd (Flatcar's and
    /// kubeadm's driver, which kubelet's must match), SELinux labels as
    /// Flatcar gives them, and Flatcar's default sandbox image.
    Flatcar,
}

/// containerd's config file (version 2): its CRI plugin runs our conflist
/// from our CNI folders.
pub struct ConfigFile<'a> {
    pub spec: &'a Containerd,
    pub cni_conf_dir: &'a Path,
    pub cni_bin_dir: &'a Path,
    pub host: Host<'a>,
}

fn path(p: &Path) -> toml::Value {
    toml::Value::String(p.display().to_string())
}

fn table<const N: usize>(entries: [(&str, toml::Value); N]) -> toml::Value {
    toml::Value::Table(entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

impl ConfigFile<'_> {
    pub fn render(&self) -> String {
        let image = matches!(self.host, Host::Image { .. });
        let runc = table([
            ("runtime_type", "io.containerd.runc.v2".into()),
            (
                "options",
                table([
                    ("BinaryName", path(&self.spec.runc)),
                    // runc's state beside this containerd's, not in a folder
                    // another containerd on the machine shares.
                    ("Root", path(&self.spec.state.join("runc"))),
                    ("SystemdCgroup", (!image).into()),
                    ("NoPivotRoot", image.into()),
                ]),
            ),
        ]);
        let mut cri = table([
            ("enable_selinux", (!image).into()),
            ("restrict_oom_score_adj", matches!(self.host, Host::Image { restrict_oom_score_adj: true, .. }).into()),
            // Neither our images nor Flatcar carry an AppArmor parser.
            ("disable_apparmor", true.into()),
            (
                "containerd",
                table([
                    ("snapshotter", "overlayfs".into()),
                    ("default_runtime_name", "runc".into()),
                    ("runtimes", table([("runc", runc)])),
                ]),
            ),
            (
                "cni",
                table([
                    ("bin_dir", path(self.cni_bin_dir)),
                    ("conf_dir", path(self.cni_conf_dir)),
                    // One network: containerd takes the first file by name
                    // (ours is 10-imgbuild.conflist), as kubelet's CNI did.
                    ("max_conf_num", 1.into()),
                ]),
            ),
        ]);
        if let (Host::Image { sandbox_image, .. }, toml::Value::Table(t)) = (self.host, &mut cri) {
            t.insert("sandbox_image".into(), sandbox_image.into());
        }
        let root = table([
            ("version", 2.into()),
            ("root", path(&self.spec.root)),
            ("state", path(&self.spec.state)),
            ("grpc", table([("address", path(&self.spec.socket))])),
            ("plugins", table([("io.containerd.grpc.v1.cri", cri)])),
        ]);
        toml::to_string(&root).expect("a TOML table serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_are_golden() {
        let spec = Containerd::default();
        let image = ConfigFile {
            spec: &spec,
            cni_conf_dir: Path::new("/etc/cni/net.d"),
            cni_bin_dir: Path::new("/opt/cni/bin"),
            host: Host::Image { sandbox_image: "imgbuild.local/pause:0123456789abcdef", restrict_oom_score_adj: false },
        };
        testkit::assert_golden!("golden/containerd-image.toml", &image.render());
        let flatcar = ConfigFile { spec: &Containerd::flatcar(), host: Host::Flatcar, ..image };
        testkit::assert_golden!("golden/containerd-flatcar.toml", &flatcar.render());
    }
}
