//! `imgbuild --role/--node`: plan the selected nodes, resolve the kernel and
//! payloads once, render each node's artifacts in memory, then write each
//! node dir in one step.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use node_config::Role;
use node_config::{Guest, Service};

use crate::agent::AgentBinary;
use crate::cluster::{self, Cluster, Drivers, Node};
use crate::error::InputError;
use crate::formats::disk::{self, DiskSpec};
use crate::formats::ignition::{self, AgentDelivery};
use crate::formats::manifest::{Entry, Manifest};
use crate::formats::{ipxe, qcow2, vagrant};
use crate::image::cpio::Archive;
use crate::image::initramfs::{self, Compression, Payloads};
use crate::image::modules::ModuleTree;
use crate::image::recipe::{self, Recipe};
use crate::output::{self, Artifact};
use crate::pki::{self, Pki};
use crate::plan::{self, NodePlan, Selection};
use crate::sources::{self, kernel, Cache, SourceSpec};
use crate::timing;
use crate::token::TokenSecret;
use imgbuild_ignition::Payload;
use sha2::{Digest, Sha256};

pub const DEFAULT_ETCD: &str = "apt:etcd-server";
pub const DEFAULT_CNI: &str = "apt:containernetworking-plugins";

/// What a build can write for each node; `manifest.json` always.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Output {
    /// `NODE.ign` (and `NODE.stub.ign` with --stub-url, `node-agent` with --agent-url).
    Ignition,
    /// `vmlinuz`, `initrd.img`, `cmdline`.
    Image,
    /// `NODE.ipxe`.
    Ipxe,
    /// `NODE.box` and `NODE.box.json`.
    Box,
    /// `NODE.raw` and `NODE.qcow2`.
    Disk,
}

impl Output {
    /// What `imgbuild` writes without `--only` (and `--disk` adds disks).
    pub const DEFAULT: [Output; 4] = [Output::Ignition, Output::Image, Output::Ipxe, Output::Box];

    /// Whether this output needs the kernel and a built initramfs.
    fn needs_image(self) -> bool {
        matches!(self, Output::Image | Output::Box | Output::Disk)
    }
}

/// Everything a build needs, already parsed and validated.
#[derive(Debug)]
pub struct BuildConfig {
    pub cluster: Cluster,
    /// The cluster CA, when its etcd uses TLS.
    pub pki: Option<Pki>,
    pub selection: Selection,
    pub out: PathBuf,
    pub agent: AgentBinary,
    pub agent_url: Option<String>,
    /// `--stub-url`: where the full config is served for the merge stub.
    pub stub_url: Option<String>,
    /// `--token-secret`: per-node tokens in each node's boot URLs.
    pub token_secret: Option<TokenSecret>,
    /// `--kernel`, overriding the cluster file's `artifacts.kernel`.
    pub kernel: Option<SourceSpec>,
    /// The cluster file as errors name it.
    pub origin: String,
    pub compression: Compression,
    pub debug_boot: bool,
    /// What to write for each node.
    pub outputs: BTreeSet<Output>,
    /// How box catalogs point at their boxes (with `Output::Box`).
    pub vagrant: VagrantOptions,
    pub cache: Cache,
}

impl BuildConfig {
    /// Loads and checks every input, refusing what a user can get wrong
    /// before anything is written (the CA is created last, only then).
    /// Options beyond the inputs start at their defaults.
    pub fn new(inputs: &crate::cmdline::Inputs, out: PathBuf, selection: Selection) -> Result<Self> {
        let cluster = load_cluster(inputs.cluster.as_deref())?;
        for node in plan::select(&cluster, &selection)? {
            output::check_node_dir(&out, &node.name)?;
        }
        let origin = inputs.cluster.as_deref().map_or(cluster::DEFAULT_ORIGIN.to_owned(), |p| p.display().to_string());
        cluster.artifacts.check_local(&origin)?;
        if let Some(k) = &inputs.kernel {
            k.check_local().map_err(|r| InputError::new("--kernel", "", r))?;
        }
        // What the user merges into Ignition may not clash with what we
        // write; known before the CA exists (claims do not depend on it).
        let scratch = cluster.etcd.tls.then(|| Pki::ephemeral(&cluster.name));
        for p in plan::plan(&cluster, &selection, scratch.as_ref())? {
            ignition::check_merges(&p)?;
        }
        let agent = AgentBinary::locate(inputs.agent_path())?;
        let pki = load_pki(&cluster, inputs.pki.as_deref())?;
        Ok(BuildConfig {
            cluster,
            pki,
            selection,
            out,
            agent,
            agent_url: None,
            stub_url: None,
            token_secret: None,
            kernel: inputs.kernel.clone(),
            origin,
            compression: Compression::default(),
            debug_boot: false,
            outputs: Output::DEFAULT.into(),
            vagrant: VagrantOptions { base_url: None, version: env!("CARGO_PKG_VERSION").into() },
            cache: inputs.cache_dir().map_or_else(Cache::from_env, Cache::new),
        })
    }

    pub fn wants(&self, o: Output) -> bool {
        self.outputs.contains(&o)
    }

    fn wants_image(&self) -> bool {
        self.outputs.iter().any(|o| o.needs_image())
    }
}

/// The cluster file, or the embedded reference cluster.
pub fn load_cluster(path: Option<&Path>) -> Result<Cluster, InputError> {
    match path {
        Some(p) => Cluster::load(p),
        None => Ok(Cluster::embedded_default()),
    }
}

/// The cluster CA when its etcd uses TLS: from `--pki`, else the default
/// place for the cluster's name; created on first use.
fn load_pki(cluster: &Cluster, dir: Option<&Path>) -> Result<Option<Pki>> {
    if !cluster.etcd.tls {
        return Ok(None);
    }
    let dir = match dir {
        Some(d) => d.to_owned(),
        None => pki::default_dir(&cluster.name)?,
    };
    let fresh = !dir.join(pki::CA_KEY).exists() && !dir.join(pki::CA_CERT).exists();
    let loaded = Pki::load_or_create(&dir, &cluster.name)?;
    if fresh {
        crate::ui::note(&format!("created the cluster's etcd CA in {} (keep it: nodes trust only it)", dir.display()));
    }
    Ok(Some(loaded))
}

/// Where the box catalog points and which version it gives.
#[derive(Debug, Clone)]
pub struct VagrantOptions {
    /// Base URL the boxes are served from (as `imgbuild serve`'s
    /// `/assets/NODE/NODE.box`); default: the box's file name, relative.
    pub base_url: Option<String>,
    pub version: String,
}

/// What a build wrote, for the summary table.
#[derive(Debug)]
pub struct Built {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// Inputs shared by every node of a build.
struct Shared {
    /// Set when an output needs the image (image, box, disk).
    image: Option<ImageInputs>,
    /// The agent as Ignition carries it inline, compressed once.
    agent_payload: Option<Payload>,
    /// The CNI plugins Flatcar nodes with pods get (Ignition only).
    cni_programs: Vec<ignition::Program>,
    mtime: u32,
}

/// What every node's image is made from.
struct ImageInputs {
    /// Each kernel the nodes use, by its source as written.
    kernels: BTreeMap<String, Vec<u8>>,
    /// systemd-boot, when disks are wanted.
    bootloader: Option<Vec<u8>>,
    /// Everything but the node's config, per kind of image.
    bases: BTreeMap<ImageKind, Archive>,
    /// What a box image adds to any role's (appended as a second archive:
    /// the kernel unpacks both) and the services it runs.
    box_overlay: Option<(Archive, Vec<Service>)>,
}

pub fn run(cfg: &BuildConfig) -> Result<Vec<Built>> {
    let plans = plan::plan(&cfg.cluster, &cfg.selection, cfg.pki.as_ref())?;
    for p in &plans {
        output::check_node_dir(&cfg.out, &p.node.name)?;
    }
    let shared = timing::phase("prepare", || prepare(cfg, &plans))?;
    // Render everything before writing anything: a failure leaves no output.
    let rendered = timing::phase("render", || render_all(cfg, &shared, &plans))?;
    rendered
        .into_iter()
        .map(|(p, arts, entries)| {
            let mut manifest = Manifest::new(&p.node.name, p.node.role.as_str(), &p.node.mac.to_string(), entries);
            manifest.uuid = p.node.uuid.clone();
            let mut all = arts;
            all.push(Artifact::public("manifest.json", manifest.render()));
            let dir = timing::phase(&format!("write {}", p.node.name), || {
                output::write_node_dir(&cfg.out, &p.node.name, &all)
            })?;
            crate::ui::note(&format!("wrote {} ({} files)", dir.display(), all.len()));
            Ok(Built { dir, manifest })
        })
        .collect()
}

/// A node's artifacts with their manifest entries.
type Rendered<'a> = (&'a NodePlan, Vec<Artifact>, Vec<Entry>);

/// Nodes render in parallel: compression dominates and uses its own threads too.
fn render_all<'a>(cfg: &BuildConfig, shared: &Shared, plans: &'a [NodePlan]) -> Result<Vec<Rendered<'a>>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = plans
            .iter()
            .map(|p| {
                s.spawn(move || {
                    let arts = artifacts(cfg, shared, p)?;
                    let entries = arts.iter().map(|a| Entry::of(&a.name, &a.bytes)).collect();
                    Ok((p, arts, entries))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("node render panicked")).collect()
    })
}

fn prepare(cfg: &BuildConfig, plans: &[NodePlan]) -> Result<Shared> {
    // Compressing the agent for Ignition takes as long as the rest: overlap them.
    std::thread::scope(|s| {
        let embed = cfg.agent_url.is_none() && cfg.wants(Output::Ignition);
        let payload = s.spawn(move || embed.then(|| inline_agent(cfg)).transpose());
        let pods = cfg.wants(Output::Ignition) && plans.iter().any(|p| p.node.role.has_pods());
        let cni = s.spawn(move || if pods { cni_programs(cfg, embed) } else { Ok(Vec::new()) });
        let image = cfg.wants_image().then(|| prepare_images(cfg, plans)).transpose();
        let agent_payload = payload.join().expect("agent compression panicked")?;
        let cni_programs = cni.join().expect("CNI plugin compression panicked")?;
        Ok(Shared { image: image?, agent_payload, cni_programs, mtime: initramfs::mtime_from_env() })
    })
}

/// The agent gzip-compressed for Ignition.
fn inline_agent(cfg: &BuildConfig) -> Result<Payload> {
    inline(cfg, &cfg.agent.bytes)
}

/// `bytes` gzip-compressed for Ignition, cached by their digest.
fn inline(cfg: &BuildConfig, bytes: &[u8]) -> Result<Payload> {
    let key: [u8; 32] = Sha256::new().chain_update(b"ignition-inline-gzip-v1\0").chain_update(bytes).finalize().into();
    let gzipped = cfg.cache.derived(&key, || imgbuild_ignition::gzip(bytes))?;
    Ok(Payload::Inline { gzipped })
}

/// The worker image's CNI plugins from `artifacts.cni`, for Flatcar's
/// `/opt/cni/bin`: compressed inline when `embed`, else fetched beside
/// the agent (`--agent-url`).
fn cni_programs(cfg: &BuildConfig, embed: bool) -> Result<Vec<ignition::Program>> {
    let spec = cfg.cluster.artifacts.cni.clone().unwrap_or_else(|| SourceSpec::parse_str(DEFAULT_CNI).expect("valid"));
    let tree = sources::tree(&cfg.cache, &spec).with_context(|| format!("CNI plugins from {spec}"))?;
    Recipe::for_role(Role::Worker, false, &Drivers::default())?
        .cni_plugins
        .into_iter()
        .map(|name| {
            let path = sources::find_in_tree(&tree, &["usr/lib/cni", "opt/cni/bin", "usr/libexec/cni"], &name)
                .with_context(|| format!("no CNI plugin {name} in {}", tree.display()))?;
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let inline = if embed { inline(cfg, &bytes)? } else { Payload::Inline { gzipped: Vec::new() } };
            Ok(ignition::Program { artifact: format!("cni-{name}"), name, bytes, inline })
        })
        .collect()
}

/// Nodes with the same kernel, drivers and role share an image base.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ImageKind {
    /// The kernel's source, as written.
    kernel: String,
    drivers: Drivers,
    role: Role,
}

impl ImageKind {
    fn of(cfg: &BuildConfig, node: &Node) -> Result<(Self, SourceSpec)> {
        let spec = kernel_spec(cfg, &node.drivers)?;
        Ok((ImageKind { kernel: spec.to_string(), drivers: node.drivers.clone(), role: node.role }, spec))
    }
}

/// `--kernel`, else `artifacts.kernel`, else the driver set's kernel, else
/// the default (the host's or Debian's cloud kernel).
fn kernel_spec(cfg: &BuildConfig, drivers: &Drivers) -> Result<SourceSpec> {
    if let Some(k) = cfg.kernel.clone().or_else(|| cfg.cluster.artifacts.kernel.clone()) {
        return Ok(k);
    }
    let set_kernel = match drivers {
        Drivers::Set(set) => recipe::driver_set(*set)?.kernel,
        Drivers::Modules(_) => None,
    };
    Ok(match set_kernel {
        Some(k) => SourceSpec::parse_str(&k).map_err(|r| anyhow::anyhow!("images/drivers.toml: {r}"))?,
        None => kernel::default_spec(),
    })
}

fn prepare_images(cfg: &BuildConfig, plans: &[NodePlan]) -> Result<ImageInputs> {
    let mut kernels = BTreeMap::new();
    let mut trees: BTreeMap<String, ModuleTree> = BTreeMap::new();
    let mut bases = BTreeMap::new();
    for node in plans.iter().map(|p| &p.node) {
        let (kind, spec) = ImageKind::of(cfg, node)?;
        if bases.contains_key(&kind) {
            continue;
        }
        if !trees.contains_key(&kind.kernel) {
            let k = kernel::resolve(&cfg.cache, &spec)?;
            let vmlinuz = std::fs::read(&k.vmlinuz).with_context(|| format!("reading {}", k.vmlinuz.display()))?;
            kernels.insert(kind.kernel.clone(), vmlinuz);
            trees.insert(kind.kernel.clone(), ModuleTree::open(&k.modules)?);
        }
        let modules = &trees[&kind.kernel];
        check_drivers(cfg, node, modules, &kind.kernel)?;
        let mut recipe = Recipe::for_role(node.role, cfg.cluster.enable_nftables, &node.drivers)?;
        if runs_containerd(cfg, node.role) {
            recipe = recipe.with_containerd()?;
        }
        if node.role.has_pods() && cfg.cluster.network_policy {
            recipe = recipe.with_policy()?;
        }
        let payloads = payloads(cfg, &recipe)?;
        let role = node.role;
        let base = timing::phase(&format!("image-assembly {role}"), || {
            initramfs::role_base(&cfg.agent.bytes, modules, &recipe, &payloads)
        })
        .with_context(|| format!("assembling the {role} image"))?;
        bases.insert(kind, base);
    }
    // The same for every role: made once.
    let box_overlay = cfg.wants(Output::Box).then(|| box_overlay(cfg)).transpose()?;
    let bootloader = cfg.wants(Output::Disk).then(|| bootloader(cfg)).transpose()?;
    Ok(ImageInputs { kernels, bootloader, bases, box_overlay })
}

/// Every driver the node's set or list names is in its kernel: a driver
/// missing from the image would leave a machine without its NIC or disk.
fn check_drivers(cfg: &BuildConfig, node: &Node, modules: &ModuleTree, kernel: &str) -> Result<()> {
    let missing: Vec<String> = recipe::driver_modules(&node.drivers)?.into_iter().filter(|m| !modules.has(m)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(InputError::new(
        &cfg.origin,
        &node.drivers_field,
        format!(
            "kernel {} (from {kernel}) has no module {} (node {}); name a kernel that has it with \
             artifacts.kernel or --kernel, or leave it out",
            modules.version(),
            missing.join(", "),
            node.name
        ),
    )
    .into())
}

fn box_overlay(cfg: &BuildConfig) -> Result<(Archive, Vec<Service>)> {
    let extra = Recipe::vagrant_box()?;
    let overlay =
        initramfs::overlay(&extra, &payloads_for_tools(cfg, &extra)?).context("assembling the Vagrant box image")?;
    Ok((overlay, extra.services))
}

/// systemd-boot from Debian's systemd-boot-efi package.
fn bootloader(cfg: &BuildConfig) -> Result<Vec<u8>> {
    let tree = sources::tree(&cfg.cache, &SourceSpec::Apt("systemd-boot-efi".into())).context("systemd-boot")?;
    let path = tree.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

fn payloads(cfg: &BuildConfig, recipe: &Recipe) -> Result<Payloads> {
    let a = &cfg.cluster.artifacts;
    let fetch = |spec: &Option<SourceSpec>, default: &str, what: &str| -> Result<PathBuf> {
        let spec = spec.clone().unwrap_or_else(|| SourceSpec::parse_str(default).expect("valid default"));
        sources::tree(&cfg.cache, &spec).with_context(|| format!("{what} from {spec}"))
    };
    Ok(Payloads {
        etcd: recipe.etcd.then(|| fetch(&a.etcd, DEFAULT_ETCD, "etcd")).transpose()?,
        cni: (!recipe.cni_plugins.is_empty()).then(|| fetch(&a.cni, DEFAULT_CNI, "CNI plugins")).transpose()?,
        ..payloads_for_tools(cfg, recipe)?
    })
}

/// The package trees of a recipe's tools (and their library packages).
fn payloads_for_tools(cfg: &BuildConfig, recipe: &Recipe) -> Result<Payloads> {
    let apt = |pkg: &str| {
        sources::tree(&cfg.cache, &SourceSpec::Apt(pkg.to_owned())).with_context(|| format!("package {pkg}"))
    };
    let tools = recipe
        .tools
        .iter()
        .map(|t| Ok((apt(&t.package)?, t.library_packages.iter().map(|p| apt(p)).collect::<Result<Vec<_>>>()?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Payloads { tools, ..Default::default() })
}

/// Every artifact of one node except the manifest.
fn artifacts(cfg: &BuildConfig, shared: &Shared, p: &NodePlan) -> Result<Vec<Artifact>> {
    let token = cfg.token_secret.as_ref().map(|s| s.token(&p.node.name));
    let cmdline = initramfs::cmdline(cfg.debug_boot);
    let mut out = Vec::new();
    if cfg.wants(Output::Ignition) {
        out.extend(ignition_artifacts(cfg, shared, p, token.as_deref()));
    }
    if let Some(image) = &shared.image {
        out.extend(image_artifacts(cfg, shared, image, p, &cmdline)?);
    }
    if cfg.wants(Output::Ipxe) {
        let script = ipxe::node_script(p, &cmdline, token.as_deref()).into_bytes();
        out.push(Artifact::private_if(token.is_some(), format!("{}.ipxe", p.node.name), script));
    }
    Ok(out)
}

/// `NODE.ign`, its merge stub (`--stub-url`) and the agent it fetches (`--agent-url`).
fn ignition_artifacts(cfg: &BuildConfig, shared: &Shared, p: &NodePlan, token: Option<&str>) -> Vec<Artifact> {
    let name = &p.node.name;
    let delivery = match (&cfg.agent_url, &shared.agent_payload) {
        (Some(url), _) => AgentDelivery::Remote { base_url: url, bytes: &cfg.agent.bytes, token },
        (None, Some(payload)) => AgentDelivery::Embedded(payload),
        (None, None) => unreachable!("prepare compresses the agent when it is embedded"),
    };
    let cni: &[ignition::Program] = if p.node.role.has_pods() { &shared.cni_programs } else { &[] };
    let ign = timing::phase(&format!("ignition {name}"), || ignition::render(p, &delivery, cni));
    // What holds the node's private key (with etcd TLS) or its token is
    // for the node's owner only; see `Artifact::new`.
    let keys = p.config.etcd.tls.is_some();
    let mut out = Vec::new();
    if let Some(base) = &cfg.stub_url {
        let mut url = format!("{}/ignition?mac={}", base.trim_end_matches('/'), p.node.mac);
        if let Some(t) = token {
            url.push_str(&format!("&token={t}"));
        }
        let stub = imgbuild_ignition::render(&imgbuild_ignition::merge_stub(&url, &ign));
        out.push(Artifact::private_if(token.is_some(), format!("{name}.stub.ign"), stub));
    }
    // The user's fragments may hold anything (credentials, tokens): private
    // too; as do fetch URLs that carry the node's token.
    let fragments = !p.node.ignition.merge.is_empty();
    let token_inside = token.is_some() && cfg.agent_url.is_some();
    out.push(Artifact::private_if(keys || fragments || token_inside, format!("{name}.ign"), ign));
    if cfg.agent_url.is_some() {
        // Served beside the config for Ignition to fetch.
        out.push(Artifact { name: "node-agent".into(), bytes: cfg.agent.bytes.clone(), mode: 0o755 });
        for c in cni {
            out.push(Artifact { name: c.artifact.clone(), bytes: c.bytes.clone(), mode: 0o755 });
        }
    }
    out
}

/// The image files, the box and the disks: all carry the node's initramfs.
fn image_artifacts(
    cfg: &BuildConfig,
    shared: &Shared,
    image: &ImageInputs,
    p: &NodePlan,
    cmdline: &str,
) -> Result<Vec<Artifact>> {
    let name = &p.node.name;
    let (kind, _) = ImageKind::of(cfg, &p.node)?;
    let base = &image.bases[&kind];
    let vmlinuz = &image.kernels[&kind.kernel];
    let config = ignition::config_json(&image_config(p, runs_containerd(cfg, p.node.role)));
    let initrd = timing::phase(&format!("initramfs {name}"), || {
        initramfs::node_initrd(base, &config, shared.mtime, cfg.compression)
    })?;
    let keys = p.config.etcd.tls.is_some();
    let mut out = Vec::new();
    if cfg.wants(Output::Box) {
        let boxed = timing::phase(&format!("vagrant-box {name}"), || {
            vagrant_box(cfg, shared, image, p, cmdline, vmlinuz, &initrd)
        })?;
        out.extend(boxed);
    }
    if let Some(bootloader) = &image.bootloader {
        let spec = DiskSpec { node: name, vmlinuz, initrd: &initrd, cmdline, bootloader, data_mib: 256 };
        let raw = disk::efi_disk(&spec)?;
        out.push(Artifact::private_if(keys, format!("{name}.qcow2"), qcow2::from_raw(&raw, raw.len() as u64)?));
        out.push(Artifact::private_if(keys, format!("{name}.raw"), raw));
    }
    if cfg.wants(Output::Image) {
        out.extend([
            Artifact::public("vmlinuz", vmlinuz.clone()),
            Artifact::private_if(keys, "initrd.img", initrd),
            Artifact::public("cmdline", cmdline.to_owned().into_bytes()),
        ]);
    }
    Ok(out)
}

/// `NODE.box` and its catalog `NODE.box.json`.
fn vagrant_box(
    cfg: &BuildConfig,
    shared: &Shared,
    image: &ImageInputs,
    p: &NodePlan,
    cmdline: &str,
    vmlinuz: &[u8],
    node_initrd: &[u8],
) -> Result<[Artifact; 2]> {
    let name = &p.node.name;
    let v = &cfg.vagrant;
    let (overlay, services) = image.box_overlay.as_ref().expect("prepared when boxes are wanted");
    let mut config = image_config(p, runs_containerd(cfg, p.node.role));
    config.guest = Some(Guest { dhcp_other_links: true, services: services.clone() });
    // The node's image plus a second archive whose config replaces the first's.
    let mut initrd = node_initrd.to_vec();
    initrd.extend(initramfs::node_initrd(overlay, &ignition::config_json(&config), shared.mtime, cfg.compression)?);
    // The boot probe keeps a probe pod up that `vagrant ssh` can probe from.
    let cmdline = format!("{} node-agent.probe", cmdline.trim_end());
    let spec = vagrant::BoxSpec {
        node: name,
        role: p.node.role.as_str(),
        cluster: &cfg.cluster.name,
        vmlinuz,
        initrd: &initrd,
        cmdline: &cmdline,
        mtime: shared.mtime,
    };
    let bytes = vagrant::node_box(&spec)?;
    let file = format!("{name}.box");
    let url = match &v.base_url {
        Some(base) => format!("{}/assets/{name}/{file}", base.trim_end_matches('/')),
        // Relative, so the bytes do not depend on where the build is written;
        // vagrant/Vagrantfile resolves it against the catalog's own place.
        None => file.clone(),
    };
    let sha = Entry::of(&file, &bytes).sha256;
    let catalog = vagrant::catalog(&vagrant::box_name(&cfg.cluster.name, name), &v.version, &url, &sha);
    let keys = p.config.etcd.tls.is_some();
    Ok([
        Artifact::private_if(keys, file.clone(), bytes),
        Artifact::public(format!("{file}.json"), catalog.into_bytes()),
    ])
}

/// The node config inside the image: there the agent runs etcd itself.
fn image_config(p: &NodePlan, containerd: bool) -> node_config::NodeConfig {
    let mut cfg = p.config.clone();
    if let Some(m) = &mut cfg.etcd.member {
        m.supervise = true;
    }
    // And kubelet's runtime, where the image carries it.
    cfg.containerd = containerd.then(node_config::Containerd::default);
    cfg
}

/// Whether a role's image carries and runs containerd.
fn runs_containerd(cfg: &BuildConfig, role: Role) -> bool {
    role.has_pods() && cfg.cluster.containerd
}

/// Clouds' user-data limits, as each documents them: (cloud, bytes, whether
/// the limit counts the base64 form the API takes).
pub const USER_DATA_LIMITS: [(&str, u64, bool); 6] = [
    ("AWS", 16 << 10, false),
    ("Hetzner", 32 << 10, false),
    ("Azure", 64 << 10, true),
    ("OpenStack", 65535, true),
    ("DigitalOcean", 64 << 10, false),
    ("GCP", 256 << 10, false),
];

/// What to say when the configs a cloud would take as user data (each
/// node's `NODE.stub.ign` when there is one, else `NODE.ign`) are over
/// clouds' limits: the largest, the clouds it does not fit, and the way out.
pub fn user_data_note(built: &[Built]) -> Option<String> {
    fn user_data(b: &Built) -> Option<&Entry> {
        let name = |suffix: &str| format!("{}{suffix}", b.manifest.node);
        let all = &b.manifest.artifacts;
        all.iter().find(|e| e.file == name(".stub.ign")).or_else(|| all.iter().find(|e| e.file == name(".ign")))
    }
    let (node, entry) =
        built.iter().filter_map(|b| Some((&b.manifest.node, user_data(b)?))).max_by_key(|(_, e)| e.size)?;
    let encoded = entry.size.div_ceil(3) * 4;
    let over: Vec<String> = USER_DATA_LIMITS
        .iter()
        .filter(|(_, limit, b64)| (if *b64 { encoded } else { entry.size }) > *limit)
        .map(|(cloud, limit, _)| format!("{cloud} {} KiB", limit.div_ceil(1024)))
        .collect();
    if over.is_empty() {
        return None;
    }
    let way_out = if entry.file.ends_with(".stub.ign") {
        "shorten the --stub-url"
    } else {
        "serve it (imgbuild serve) and give the cloud the merge stub --stub-url writes, or carry the agent by --agent-url"
    };
    Some(format!(
        "{node}/{} is {} bytes: too big for cloud user data on {}; {way_out}",
        entry.file,
        entry.size,
        over.join(", ")
    ))
}

/// The table printed at the end of a build.
pub fn summary(built: &[Built]) -> String {
    let mut s = format!("{:<28} {:>12}  {}\n", "ARTIFACT", "SIZE", "SHA256");
    for b in built {
        for e in &b.manifest.artifacts {
            let path = format!("{}/{}", b.manifest.node, e.file);
            s.push_str(&format!("{path:<28} {:>12}  {}\n", e.size, e.sha256));
        }
    }
    s
}

/// The build summary for `--json`: each node's manifest and folder.
pub fn summary_json(built: &[Built]) -> String {
    let nodes: Vec<serde_json::Value> = built
        .iter()
        .map(|b| {
            let mut v = serde_json::to_value(&b.manifest).expect("a manifest serializes");
            v["dir"] = b.dir.display().to_string().into();
            v
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&serde_json::json!({ "nodes": nodes })).expect("JSON values serialize");
    s.push('\n');
    s
}
