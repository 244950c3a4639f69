//! The cluster's etcd PKI: one CA kept on disk (`ca.key`, `ca.crt`), and per
//! node an agent client certificate and, on etcd nodes, a member certificate
//! for clients and peers.
//!
//! Node keys are derived from the CA key (HMAC-SHA256 of the node's name and
//! the certificate's use) and certificates take the CA's validity, so the same
//! CA gives the same bytes on every build: builds stay reproducible, and
//! nothing but the CA needs keeping. Ed25519 signatures are deterministic,
//! which is why a CA we create is Ed25519.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use hmac::{Hmac, Mac};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ED25519,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::cluster::Node;
use crate::error::InputError;

pub const CA_KEY: &str = "ca.key";
pub const CA_CERT: &str = "ca.crt";
/// A new CA, trusted by every node built from now on but not signing yet
/// (the first step of `imgbuild pki rotate --ca`).
pub const CA_NEXT_KEY: &str = "ca-next.key";
pub const CA_NEXT_CERT: &str = "ca-next.crt";
/// The CA that signed before the last rotation, still trusted until the
/// rotation finishes.
pub const CA_PREVIOUS_CERT: &str = "ca-previous.crt";
/// Which generation of node keys to derive (`imgbuild pki rotate`); absent: 0.
pub const GENERATION: &str = "generation";

/// How long a CA we create is valid; node certificates share its window.
const CA_LIFETIME: Duration = Duration::days(3652);

/// A certificate and its private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// What one node carries.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeCerts {
    pub ca: String,
    /// The agent's client certificate.
    pub client: Pem,
    /// etcd nodes: the member's certificate (server and peer).
    pub member: Option<Pem>,
}

pub struct Pki {
    ca_key: KeyPair,
    ca_cert: String,
    /// What nodes trust: the signing CA, and during a CA rotation the next
    /// or the previous one.
    trust: String,
    /// Node keys' generation: a rotation derives new ones from the same CA.
    generation: u32,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("not_before", &self.not_before).field("not_after", &self.not_after).finish()
    }
}

/// Where a cluster's CA lives unless `--pki` says: per user and cluster name,
/// outside any output directory, so `rm -rf out` never changes the CA.
pub fn default_dir(cluster: &str) -> Result<PathBuf, InputError> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .ok_or_else(|| InputError::new("--pki", "", "neither XDG_DATA_HOME nor HOME is set; say where the CA is"))?;
    Ok(data.join("imgbuild/pki").join(cluster))
}

impl Pki {
    /// The CA in `dir`, created there (Ed25519, valid ten years from now)
    /// when the directory holds none.
    pub fn load_or_create(dir: &Path, cluster: &str) -> anyhow::Result<Pki> {
        if !dir.join(CA_KEY).exists() && !dir.join(CA_CERT).exists() {
            create(dir, cluster, OffsetDateTime::now_utc())?;
        }
        Ok(Pki::load(dir)?)
    }

    /// A CA that lives only in memory: for checking what a build would
    /// write before anything is (its certificates are never written).
    pub fn ephemeral(cluster: &str) -> Pki {
        let (key, cert) = new_ca(cluster, OffsetDateTime::now_utc());
        Pki::from_pem(&key, &cert).expect("a CA just made is valid")
    }

    /// Reads `dir/ca.key` (owner-only) and `dir/ca.crt`, and checks they belong together.
    pub fn load(dir: &Path) -> Result<Pki, InputError> {
        let key_path = dir.join(CA_KEY);
        let key_origin = key_path.display().to_string();
        let key_err = |reason: String| InputError::new(key_origin.clone(), "", reason);
        let meta = std::fs::metadata(&key_path).map_err(|e| key_err(format!("cannot read the CA key: {e}")))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(key_err(format!(
                "the CA key is readable by others (mode {:o}); chmod 600 it",
                meta.permissions().mode() & 0o777
            )));
        }
        let key_pem =
            std::fs::read_to_string(&key_path).map_err(|e| key_err(format!("cannot read the CA key: {e}")))?;
        let cert_path = dir.join(CA_CERT);
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(|e| {
            InputError::new(cert_path.display().to_string(), "", format!("cannot read the CA certificate: {e}"))
        })?;
        let mut pki = Pki::from_pem(&key_pem, &cert_pem).map_err(|(file, reason)| {
            let path = if file == CA_KEY { &key_path } else { &cert_path };
            InputError::new(path.display().to_string(), "", reason)
        })?;
        pki.generation = read_generation(dir)?;
        for extra in [CA_NEXT_CERT, CA_PREVIOUS_CERT] {
            let path = dir.join(extra);
            match std::fs::read_to_string(&path) {
                Ok(pem) => {
                    let der = pem_contents(&pem, "CERTIFICATE")
                        .ok_or_else(|| InputError::new(path.display().to_string(), "", "not a PEM certificate"))?;
                    x509_parser::parse_x509_certificate(&der).map_err(|e| {
                        InputError::new(path.display().to_string(), "", format!("not an X.509 certificate: {e}"))
                    })?;
                    pki.trust.push_str(&pem);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(InputError::new(path.display().to_string(), "", format!("cannot read: {e}"))),
            }
        }
        Ok(pki)
    }

    /// The CA from its PEM texts; an error names the file at fault.
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<Pki, (&'static str, String)> {
        let ca_key = KeyPair::from_pem(key_pem).map_err(|e| (CA_KEY, format!("not a PEM private key: {e}")))?;
        let der = pem_contents(cert_pem, "CERTIFICATE").ok_or((CA_CERT, "not a PEM certificate".to_owned()))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| (CA_CERT, format!("not an X.509 certificate: {e}")))?;
        if !x509.is_ca() {
            return Err((CA_CERT, "not a CA certificate (basicConstraints CA is not set)".into()));
        }
        if x509.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&ca_key).as_slice() {
            return Err((CA_KEY, format!("does not belong to {CA_CERT} (their public keys differ)")));
        }
        let validity = x509.validity();
        Ok(Pki {
            ca_key,
            ca_cert: cert_pem.to_owned(),
            trust: cert_pem.to_owned(),
            generation: 0,
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
        })
    }

    pub fn ca_cert(&self) -> &str {
        &self.ca_cert
    }

    /// The certificates nodes and clients trust (PEM, one or two).
    pub fn trust(&self) -> &str {
        &self.trust
    }

    /// The node's certificates: the same node and CA always give the same bytes.
    pub fn issue(&self, node: &Node, etcd_member: bool) -> NodeCerts {
        let client = self.sign(node, Use::Client);
        let member = etcd_member.then(|| self.sign(node, Use::Member));
        NodeCerts { ca: self.trust.clone(), client, member }
    }

    /// The administrator's client certificate (`imgbuild policy ...`): CN
    /// `imgbuild:admin`, which no node name can be (nodes are DNS labels).
    pub fn issue_admin(&self) -> Pem {
        let admin = Node {
            name: ADMIN_CN.into(),
            role: node_config::Role::Etcd,
            ip: Some(Ipv4Addr::LOCALHOST),
            net: Default::default(),
            mac: node_config::MacAddr([2, 0, 0, 0, 0, 1]),
            uuid: None,
            ignition: Default::default(),
            drivers: Default::default(),
            drivers_field: String::new(),
        };
        self.sign(&admin, Use::Admin)
    }

    fn sign(&self, node: &Node, purpose: Use) -> Pem {
        let key = self.derived_key(&node.name, purpose);
        let mut params = CertificateParams::default();
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        // etcd takes a client's common name as the user when its auth is
        // on; members share one, the only one the peer port admits.
        let cn = match purpose {
            Use::Member => node_config::etcd::MEMBER_CN.to_owned(),
            Use::Client | Use::Admin => node.name.clone(),
        };
        params.distinguished_name.push(DnType::CommonName, cn);
        params.distinguished_name.push(DnType::OrganizationName, purpose.organization());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        match purpose {
            Use::Client | Use::Admin => params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth],
            Use::Member => {
                // Peers dial each other with this certificate, too.
                params.extended_key_usages =
                    vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
                params.subject_alt_names = vec![
                    rcgen::SanType::IpAddress(IpAddr::V4(node.static_ip())),
                    rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    rcgen::SanType::DnsName(node.name.clone().try_into().expect("validated node names are DNS names")),
                    rcgen::SanType::DnsName("localhost".try_into().expect("a DNS name")),
                ];
            }
        }
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert, &self.ca_key).expect("the CA certificate parsed on load");
        let cert = params.signed_by(&key, &issuer).expect("an Ed25519 key signs");
        Pem { cert: cert.pem(), key: key.serialize_pem() }
    }

    /// An Ed25519 key that only the CA key's holder can compute.
    fn derived_key(&self, node: &str, purpose: Use) -> KeyPair {
        let mut mac = Hmac::<Sha256>::new_from_slice(&Sha256::digest(self.ca_key.serialized_der()))
            .expect("HMAC takes any key length");
        mac.update(b"imgbuild etcd node key\0");
        mac.update(node.as_bytes());
        mac.update(b"\0");
        mac.update(purpose.organization().as_bytes());
        // Generation 0 adds nothing: keys from before rotation existed stay the same.
        if self.generation > 0 {
            mac.update(b"\0generation\0");
            mac.update(&self.generation.to_be_bytes());
        }
        let seed = mac.finalize().into_bytes();
        // RFC 8410 PKCS#8 v1 for Ed25519: a fixed header, then the 32-byte seed.
        let mut der = hex::decode("302e020100300506032b657004220420").expect("constant hex");
        der.extend_from_slice(&seed);
        KeyPair::from_pkcs8_der_and_sign_algo(&der.as_slice().into(), &PKCS_ED25519).expect("a valid Ed25519 seed")
    }
}

#[derive(Clone, Copy)]
enum Use {
    Client,
    Member,
    Admin,
}

/// The administrator's certificate's common name.
pub const ADMIN_CN: &str = "imgbuild:admin";

impl Use {
    fn organization(self) -> &'static str {
        match self {
            Use::Client => "imgbuild:node-agent",
            Use::Member => "imgbuild:etcd-member",
            Use::Admin => "imgbuild:admin",
        }
    }
}

fn read_generation(dir: &Path) -> Result<u32, InputError> {
    let path = dir.join(GENERATION);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| {
            InputError::new(path.display().to_string(), "", format!("{:?} is not a generation number", text.trim()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(InputError::new(path.display().to_string(), "", format!("cannot read: {e}"))),
    }
}

/// Where a rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaPhase {
    /// One CA signs and is trusted.
    Settled,
    /// A next CA is trusted too, not signing yet.
    Staged,
    /// The next CA signs; the previous one is still trusted.
    Active,
}

pub fn ca_phase(dir: &Path) -> CaPhase {
    if dir.join(CA_NEXT_KEY).exists() {
        CaPhase::Staged
    } else if dir.join(CA_PREVIOUS_CERT).exists() {
        CaPhase::Active
    } else {
        CaPhase::Settled
    }
}

/// `imgbuild pki rotate`: new node keys from the same CA (the generation
/// goes up), or with `ca` one step of a CA rotation: stage a next CA that
/// nodes trust, make it sign (the previous one still trusted), then drop
/// the previous one. After each step every node is rebuilt and rebooted, one
/// at a time, before the next: a node never meets a certificate from a CA it
/// does not trust. Each step replaces the PKI folder's files at once (a
/// sibling folder swapped in by `renameat2(RENAME_EXCHANGE)`). Returns what
/// was done and what comes next.
pub fn rotate(dir: &Path, cluster: &str, ca: bool) -> anyhow::Result<String> {
    let pki = Pki::load(dir)?;
    let parent = dir.parent().context("the PKI directory has no parent")?;
    let tmp = tempfile::Builder::new().prefix(".pki-rotate-").tempdir_in(parent)?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700))?;
    let copy = |name: &str, to: &str| -> anyhow::Result<()> {
        let bytes = std::fs::read(dir.join(name)).with_context(|| format!("reading {name}"))?;
        if to.ends_with(".key") {
            write_private(&tmp.path().join(to), &bytes)
        } else {
            std::fs::write(tmp.path().join(to), bytes).with_context(|| format!("writing {to}"))
        }
    };
    let generation = pki.generation;
    let message = match (ca, ca_phase(dir)) {
        (false, _) => {
            for f in [CA_KEY, CA_CERT, CA_NEXT_KEY, CA_NEXT_CERT, CA_PREVIOUS_CERT] {
                if dir.join(f).exists() {
                    copy(f, f)?;
                }
            }
            std::fs::write(tmp.path().join(GENERATION), format!("{}\n", generation + 1))?;
            format!(
                "node keys are now generation {}: rebuild and reboot every node; the old ones stay valid until \
                 the CA rotates (imgbuild pki rotate --ca)",
                generation + 1
            )
        }
        (true, CaPhase::Settled) => {
            for f in [CA_KEY, CA_CERT] {
                copy(f, f)?;
            }
            let (key, cert) = new_ca(cluster, OffsetDateTime::now_utc());
            write_private(&tmp.path().join(CA_NEXT_KEY), key.as_bytes())?;
            std::fs::write(tmp.path().join(CA_NEXT_CERT), cert)?;
            "step 1 of 3: a new CA is staged; nodes built now trust it and the current one. Rebuild and reboot \
             every node, then run imgbuild pki rotate --ca again"
                .to_owned()
        }
        (true, CaPhase::Staged) => {
            copy(CA_NEXT_KEY, CA_KEY)?;
            copy(CA_NEXT_CERT, CA_CERT)?;
            copy(CA_CERT, CA_PREVIOUS_CERT)?;
            "step 2 of 3: the new CA signs; nodes still trust the previous one. Rebuild and reboot every node, \
             then run imgbuild pki rotate --ca again"
                .to_owned()
        }
        (true, CaPhase::Active) => {
            for f in [CA_KEY, CA_CERT] {
                copy(f, f)?;
            }
            "step 3 of 3: only the new CA is trusted now. Rebuild and reboot every node; the rotation is done"
                .to_owned()
        }
    };
    // Node keys keep their generation across CA steps (they differ by CA anyway).
    if ca && generation > 0 {
        std::fs::write(tmp.path().join(GENERATION), format!("{generation}\n"))?;
    }
    Pki::load(tmp.path()).context("checking the rotated CA")?;
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        tmp.path(),
        nix::fcntl::AT_FDCWD,
        dir,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .with_context(|| format!("swapping the rotated CA into {}", dir.display()))?;
    // `tmp` now holds the old files, removed when it drops.
    Ok(message)
}

/// Writes a new CA into `dir`: built in a sibling temp dir, then renamed into
/// place, so a failed or concurrent build never leaves half a CA.
fn create(dir: &Path, cluster: &str, now: OffsetDateTime) -> anyhow::Result<()> {
    let (key, cert) = new_ca(cluster, now);
    let parent = dir.parent().context("the PKI directory has no parent")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .with_context(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::Builder::new().prefix(".pki-").tempdir_in(parent)?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700))?;
    write_private(&tmp.path().join(CA_KEY), key.as_bytes())?;
    std::fs::write(tmp.path().join(CA_CERT), cert)?;
    // An empty `dir` is replaced; a CA another build just made wins.
    match std::fs::rename(tmp.path(), dir) {
        Ok(()) => {
            let _ = tmp.keep();
            Ok(())
        }
        Err(_) if dir.join(CA_KEY).exists() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating the cluster CA in {}", dir.display())),
    }
}

/// A fresh Ed25519 CA: (key PEM, certificate PEM).
fn new_ca(cluster: &str, now: OffsetDateTime) -> (String, String) {
    let key = KeyPair::generate_for(&PKCS_ED25519).expect("Ed25519 key generation");
    let mut params = CertificateParams::default();
    let start = now.replace_nanosecond(0).expect("zero nanoseconds");
    params.not_before = start;
    params.not_after = start + CA_LIFETIME;
    // A fingerprint in the name: two clusters' CAs never share a name, so a
    // node of one talking to the other fails as "unknown issuer".
    let fingerprint = hex::encode(&Sha256::digest(key.public_key_raw())[..4]);
    params.distinguished_name.push(DnType::CommonName, format!("{cluster} etcd CA {fingerprint}"));
    params.distinguished_name.push(DnType::OrganizationName, "imgbuild");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).expect("an Ed25519 key signs");
    (key.serialize_pem(), cert.pem())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes).with_context(|| format!("writing {}", path.display()))
}

/// The DER inside the first PEM block, when it is labelled `label`.
fn pem_contents(text: &str, label: &str) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes()).ok()?;
    (pem.label == label).then_some(pem.contents)
}

/// A CA fixed for tests: golden files stay stable.
#[cfg(test)]
pub fn test_pki() -> Pki {
    Pki::from_pem(include_str!("../tests/pki/ca.key"), include_str!("../tests/pki/ca.crt")).expect("the test CA")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Cluster;

    fn node(name: &str) -> Node {
        Cluster::embedded_default().node(name).unwrap().clone()
    }

    #[test]
    fn same_ca_same_bytes_and_nodes_differ() {
        let pki = test_pki();
        let a = pki.issue(&node("worker-1"), false);
        assert!(a == pki.issue(&node("worker-1"), false), "issuing is deterministic");
        let b = pki.issue(&node("worker-2"), false);
        assert_ne!(a.client.key, b.client.key);
        assert!(a.member.is_none());
        let e = pki.issue(&node("etcd-1"), true);
        let m = e.member.as_ref().unwrap();
        assert_ne!(m.key, e.client.key, "the member and the agent hold different keys");
        assert!(m.key.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn member_certificate_names_the_node_ip_and_both_uses() {
        let e = test_pki().issue(&node("etcd-1"), true);
        let der = pem_contents(&e.member.unwrap().cert, "CERTIFICATE").unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = x.subject_alternative_name().unwrap().unwrap().value;
        let text = format!("{:?}", san.general_names);
        assert!(text.contains("[172, 17, 8, 101]") && text.contains("[127, 0, 0, 1]"), "{text}");
        let eku = x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!x.is_ca());
        assert_eq!(x.subject().to_string(), "CN=imgbuild:etcd-member, O=imgbuild:etcd-member");
    }

    #[test]
    fn a_new_ca_is_created_once_and_kept_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki/c");
        let first = Pki::load_or_create(&dir, "c").unwrap();
        let again = Pki::load_or_create(&dir, "c").unwrap();
        assert_eq!(first.ca_cert(), again.ca_cert());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join(CA_KEY)), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert!((first.not_after - first.not_before) >= Duration::days(3650));
        let der = pem_contents(first.ca_cert(), "CERTIFICATE").unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(x.subject().to_string().starts_with("CN=c etcd CA "), "{}", x.subject());
    }

    #[test]
    fn bad_ca_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (key, cert) = new_ca("x", OffsetDateTime::now_utc());
        let (other_key, _) = new_ca("y", OffsetDateTime::now_utc());
        let write = |k: &str, c: &str, mode: u32| {
            std::fs::write(dir.join(CA_KEY), k).unwrap();
            std::fs::set_permissions(dir.join(CA_KEY), std::fs::Permissions::from_mode(mode)).unwrap();
            std::fs::write(dir.join(CA_CERT), c).unwrap();
        };
        let key_file = dir.join(CA_KEY).display().to_string();
        let cert_file = dir.join(CA_CERT).display().to_string();
        write(&key, &cert, 0o644);
        let e = Pki::load(dir).unwrap_err().to_string();
        assert_eq!(e, format!("{key_file}: the CA key is readable by others (mode 644); chmod 600 it"));
        write(&other_key, &cert, 0o600);
        let e = Pki::load(dir).unwrap_err().to_string();
        assert_eq!(e, format!("{key_file}: does not belong to ca.crt (their public keys differ)"));
        write(&key, "garbage", 0o600);
        assert_eq!(Pki::load(dir).unwrap_err().to_string(), format!("{cert_file}: not a PEM certificate"));
        let leaf = test_pki().issue(&node("worker-1"), false).client.cert;
        write(&key, &leaf, 0o600);
        let e = Pki::load(dir).unwrap_err().to_string();
        assert_eq!(e, format!("{cert_file}: not a CA certificate (basicConstraints CA is not set)"));
        write(&key, &cert, 0o600);
        Pki::load(dir).unwrap();
    }
}
