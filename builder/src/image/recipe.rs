//! Role recipes from `images/`: what each role's image carries.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use node_config::Role;
use node_config::Service;
use serde::Deserialize;

use crate::cluster::{DriverSet, Drivers};

const COMMON: &str = include_str!("../../../images/common.toml");
const ETCD: &str = include_str!("../../../images/etcd.toml");
const MASTER: &str = include_str!("../../../images/master.toml");
const WORKER: &str = include_str!("../../../images/worker.toml");
const VAGRANT_BOX: &str = include_str!("../../../images/vagrant-box.toml");
const CONTAINERD: &str = include_str!("../../../images/containerd.toml");
const POLICY: &str = include_str!("../../../images/policy.toml");
const RULES_IPTABLES: &str = include_str!("../../../images/rules-iptables.toml");
const RULES_NFTABLES: &str = include_str!("../../../images/rules-nftables.toml");
const DRIVER_SETS: &str = include_str!("../../../images/drivers.toml");

/// One driver set of `images/drivers.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverSetDef {
    /// The kernel the set gets when none is named (a source, e.g. `apt:PACKAGE`).
    #[serde(default)]
    pub kernel: Option<String>,
    pub modules: Vec<String>,
}

/// What a driver set holds.
pub fn driver_set(set: DriverSet) -> Result<DriverSetDef> {
    // Parsed once: every node's kernel, recipe and check asks.
    static SETS: std::sync::OnceLock<std::result::Result<BTreeMap<String, DriverSetDef>, String>> =
        std::sync::OnceLock::new();
    let all = SETS.get_or_init(|| toml::from_str(DRIVER_SETS).map_err(|e| format!("images/drivers.toml: {e}")));
    let all = all.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    all.get(set.as_str()).cloned().with_context(|| format!("images/drivers.toml has no [{}]", set.as_str()))
}

/// The modules a node's drivers name.
pub fn driver_modules(drivers: &Drivers) -> Result<Vec<String>> {
    match drivers {
        Drivers::Set(set) => Ok(driver_set(*set)?.modules),
        Drivers::Modules(list) => Ok(list.clone()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    #[serde(default)]
    drivers: Vec<String>,
    #[serde(default)]
    modules: Vec<String>,
    #[serde(default)]
    pod_modules: Vec<String>,
    #[serde(default)]
    cni_plugins: Vec<String>,
    #[serde(default)]
    etcd: bool,
    #[serde(default, rename = "tool")]
    tools: Vec<Tool>,
    #[serde(default, rename = "file")]
    files: Vec<FileEntry>,
    #[serde(default, rename = "service")]
    services: Vec<Service>,
}

/// A small file written into the image as given.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub mode: u32,
    pub text: String,
}

/// A program from a Debian package, copied with the files it loads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    /// The package that holds `files`.
    pub package: String,
    /// Packages whose trees provide the shared libraries the files need.
    #[serde(default)]
    pub library_packages: Vec<String>,
    /// Paths inside the package, copied to the same paths in the image.
    pub files: Vec<String>,
    /// `LINK = TARGET` symlinks to make in the image.
    #[serde(default)]
    pub links: std::collections::BTreeMap<String, String>,
}

/// A role's recipe merged with the common one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// Device drivers: loaded by PID 1 only for devices the machine has
    /// (their aliases against each device's modalias), before the node
    /// process starts, and for devices that appear later.
    pub drivers: Vec<String>,
    /// Loaded by PID 1 before the node process starts.
    pub modules: Vec<String>,
    /// Loaded by PID 1 in the background; `ready` waits for them.
    pub pod_modules: Vec<String>,
    pub cni_plugins: Vec<String>,
    pub etcd: bool,
    pub tools: Vec<Tool>,
    pub files: Vec<FileEntry>,
    /// Programs the agent supervises (config `guest.services`).
    pub services: Vec<Service>,
}

impl Recipe {
    /// The role's recipe on top of the common one; roles with pods also get
    /// what flannel's rules need, as iptables chains or (`nftables`) an
    /// nftables table.
    pub fn for_role(role: Role, nftables: bool, drivers: &Drivers) -> Result<Self> {
        let (name, text) = match role {
            Role::Etcd => ("etcd", ETCD),
            Role::Master => ("master", MASTER),
            Role::Worker => ("worker", WORKER),
        };
        let common = parse("common", COMMON)?;
        let own = parse(name, text)?;
        let mut modules = common.modules;
        modules.extend(own.modules);
        let mut all_drivers = driver_modules(drivers)?;
        all_drivers.extend(common.drivers);
        all_drivers.extend(own.drivers);
        let mut recipe = Recipe {
            drivers: all_drivers,
            modules,
            pod_modules: own.pod_modules,
            cni_plugins: own.cni_plugins,
            etcd: own.etcd,
            tools: own.tools,
            files: own.files,
            services: own.services,
        };
        if role.has_pods() {
            let rules = if nftables {
                parse("rules-nftables", RULES_NFTABLES)?
            } else {
                parse("rules-iptables", RULES_IPTABLES)?
            };
            recipe.pod_modules.extend(rules.pod_modules);
            recipe.tools.extend(rules.tools);
        }
        Ok(recipe)
    }

    /// kubelet's runtime added (`images/containerd.toml`).
    pub fn with_containerd(mut self) -> Result<Self> {
        let f = parse("containerd", CONTAINERD)?;
        self.modules.extend(f.modules);
        self.pod_modules.extend(f.pod_modules);
        self.tools.extend(f.tools);
        self.files.extend(f.files);
        Ok(self)
    }

    /// NetworkPolicy enforcement added (`images/policy.toml`): nft and the
    /// netfilter modules its table uses.
    pub fn with_policy(mut self) -> Result<Self> {
        let f = parse("policy", POLICY)?;
        self.pod_modules.extend(f.pod_modules);
        self.tools.extend(f.tools);
        Ok(self)
    }

    /// What a Vagrant box adds to any role's image (`images/vagrant-box.toml`).
    pub fn vagrant_box() -> Result<Self> {
        let f = parse("vagrant-box", VAGRANT_BOX)?;
        Ok(Recipe {
            drivers: f.drivers,
            modules: f.modules,
            pod_modules: f.pod_modules,
            cni_plugins: f.cni_plugins,
            etcd: f.etcd,
            tools: f.tools,
            files: f.files,
            services: f.services,
        })
    }
}

fn parse(name: &str, text: &str) -> Result<RecipeFile> {
    toml::from_str(text).with_context(|| format!("images/{name}.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_has_a_recipe() {
        let w = Recipe::for_role(Role::Worker, false, &Drivers::default()).unwrap();
        assert!(w.drivers.iter().any(|m| m == "virtio_net") && !w.modules.iter().any(|m| m == "virtio_net"));
        assert!(!w.modules.iter().any(|m| m == "vxlan"));
        assert_eq!(w.pod_modules.first().map(String::as_str), Some("vxlan"));
        assert_eq!(w.cni_plugins, ["bridge", "host-local", "portmap", "loopback"]);
        assert!(!w.etcd);
        assert!(w.tools.iter().any(|t| t.package == "iptables"));
        assert!(w.pod_modules.iter().any(|m| m == "nft_compat"));
        assert_eq!(Recipe::for_role(Role::Master, false, &Drivers::default()).unwrap(), w);
        let e = Recipe::for_role(Role::Etcd, true, &Drivers::default()).unwrap();
        assert!(e.etcd && e.cni_plugins.is_empty() && e.pod_modules.is_empty());
        assert!(!e.tools.iter().any(|t| t.package == "iptables"));
        let b = Recipe::vagrant_box().unwrap();
        assert!(b.tools.iter().any(|t| t.package == "dropbear-bin") && b.services.len() == 1);
        assert!(w.services.is_empty() && w.files.is_empty());
    }

    /// The runtime's recipe adds containerd, runc and what its store needs;
    /// without it a worker carries none of that.
    #[test]
    fn containerd_comes_only_with_its_recipe() {
        let w = Recipe::for_role(Role::Worker, false, &Drivers::default()).unwrap();
        let carries = |r: &Recipe| r.tools.iter().any(|t| t.package == "containerd");
        assert!(!carries(&w) && !w.pod_modules.iter().any(|m| m == "overlay"));
        let c = w.with_containerd().unwrap();
        assert!(carries(&c) && c.tools.iter().any(|t| t.package == "runc"));
        assert!(c.pod_modules.iter().any(|m| m == "overlay") && c.modules.iter().any(|m| m == "ext4"));
        assert!(c.files.iter().any(|f| f.path == "etc/hosts") && c.files.iter().any(|f| f.path == "etc/resolv.conf"));
    }

    /// Every set parses; hardware brings its own kernel; a set's drivers
    /// and the common ones both reach the recipe.
    #[test]
    fn driver_sets() {
        let sets = DriverSet::ALL.map(|s| driver_set(s).unwrap());
        assert!(sets[0].modules.iter().any(|m| m == "virtio_net") && sets[0].kernel.is_none());
        assert!(sets[1].modules.iter().any(|m| m == "ena") && sets[1].kernel.is_none());
        assert!(sets[2].modules.iter().any(|m| m == "e1000e"));
        assert_eq!(sets[2].kernel.as_deref(), Some("apt:linux-image-amd64"));
        let hw = Recipe::for_role(Role::Worker, true, &Drivers::Set(DriverSet::Hardware)).unwrap();
        assert!(hw.drivers.iter().any(|m| m == "igb") && hw.drivers.iter().any(|m| m == "qemu_fw_cfg"));
        assert!(!hw.drivers.iter().any(|m| m == "virtio_net"));
        let own = Recipe::for_role(Role::Etcd, true, &Drivers::Modules(vec!["vmxnet3".into()])).unwrap();
        assert_eq!(own.drivers[..2], ["vmxnet3", "qemu_fw_cfg"]);
    }

    /// With nftables the agent sends flannel's rules itself: no iptables
    /// program, no xtables modules.
    #[test]
    fn nftables_rules_need_no_iptables() {
        let w = Recipe::for_role(Role::Worker, true, &Drivers::default()).unwrap();
        assert!(w.tools.is_empty(), "{:?}", w.tools);
        assert_eq!(
            w.pod_modules,
            [
                "vxlan",
                "bridge",
                "veth",
                "br_netfilter",
                "nf_tables",
                "nft_chain_nat",
                "nft_masq",
                "nf_conntrack",
                "nf_nat"
            ]
        );
        assert_eq!(Recipe::for_role(Role::Master, true, &Drivers::default()).unwrap(), w);
    }
}
