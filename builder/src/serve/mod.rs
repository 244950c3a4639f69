//! `imgbuild serve`: what a build wrote, over HTTP, for PXE and cloud boot.
//! The node is picked by MAC (any usual spelling); an unknown MAC or file is
//! a 404, never another node's config, never a path outside the output:
//! node folders, manifests and files are opened without following links,
//! a file with more than one hard link is not served, and a manifest may
//! only name plain file names.

mod http;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::Result;
use node_config::MacAddr;
use rustix::fs::{Mode, OFlags};

use crate::formats::ipxe;
use crate::formats::manifest::Manifest;
use crate::token::TokenSecret;

/// The nodes under `out`, by MAC, from their manifests. A node folder or
/// manifest that is a link, or a manifest naming anything but plain files
/// of its own folder, is no node.
pub fn index(out: &Path) -> BTreeMap<MacAddr, Manifest> {
    let mut map = BTreeMap::new();
    for entry in std::fs::read_dir(out).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(f) = open_inside(out, &name, "manifest.json") else { continue };
        let mut bytes = Vec::new();
        if std::io::Read::read_to_end(&mut std::io::Read::take(f.0, 1 << 20), &mut bytes).is_err() {
            continue;
        }
        let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) else { continue };
        if m.node != name || !m.artifacts.iter().all(|a| plain_name(&a.file)) {
            continue;
        }
        if let Ok(mac) = m.mac.parse::<MacAddr>() {
            map.insert(mac, m);
        }
    }
    map
}

/// A file name with no way out of its folder.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// `out/node/file`, a regular file, opened without following a link at
/// `node` or at `file`; with its length and whether it is private (the
/// build made it readable by its owner only).
fn open_inside(out: &Path, node: &str, file: &str) -> Option<(std::fs::File, u64, bool)> {
    if !plain_name(node) || !plain_name(file) {
        return None;
    }
    let dir = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    let out: OwnedFd = rustix::fs::open(out, dir, Mode::empty()).ok()?;
    let node = rustix::fs::openat(&out, node, dir | OFlags::NOFOLLOW, Mode::empty()).ok()?;
    // Non-blocking, so a FIFO planted in the folder cannot hang the open;
    // anything but a regular file is then refused.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let f = rustix::fs::openat(&node, file, flags, Mode::empty()).ok()?;
    let f = std::fs::File::from(f);
    // A hard link is another name for a file outside the folder, as a
    // symlink would be (the build makes none).
    let meta = f.metadata().ok().filter(|m| m.is_file() && std::os::unix::fs::MetadataExt::nlink(m) == 1)?;
    let private = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 == 0;
    Some((f, meta.len(), private))
}

/// An answer: status, content type, body (a file or bytes).
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Bytes(&'static str, Vec<u8>),
    /// A node's file: content type, node, file name.
    File(&'static str, String, String),
    NotFound,
    /// The node exists but the request lacks its token.
    Forbidden,
    /// A Host header that cannot go into a script.
    BadHost,
}

/// A Host header fit to go into `/boot.ipxe`: a name or IPv4 address, or
/// an IPv6 address in brackets, with an optional port; nothing else.
pub fn valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.contains(':') || n.ends_with(']') => (n, Some(p)),
        _ => (host, None),
    };
    let port_ok = port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|p| p > 0));
    let name_ok = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !name.is_empty()
                && name.len() <= 253
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        }
    };
    port_ok && name_ok
}

/// Routes one GET. `host` is the Host header the client used; with a
/// `secret`, everything of a node needs that node's `token=`.
pub fn route(out: &Path, url: &str, host: &str, secret: Option<&TokenSecret>) -> Answer {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    // The first value of a query parameter, decoded as browsers and iPXE encode it.
    let param = |name: &str| form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v);
    let node = || machine(out, param("uuid").as_deref(), param("mac").as_deref());
    let allowed = |node: &str| secret.is_none_or(|s| param("token").is_some_and(|t| s.accepts(node, &t)));
    let answer = match path {
        "/boot.ipxe" if !valid_host(host) => return Answer::BadHost,
        "/boot.ipxe" => {
            return Answer::Bytes("text/plain", ipxe::boot_script(&format!("http://{host}")).into_bytes());
        }
        "/ipxe" => node().map(|m| (m.node.clone(), format!("{}.ipxe", m.node), "text/plain")),
        "/ignition" => {
            node().map(|m| (m.node.clone(), format!("{}.ign", m.node), "application/vnd.coreos.ignition+json"))
        }
        _ => asset(out, path),
    };
    match answer {
        Some((node, _, _)) if !allowed(&node) => Answer::Forbidden,
        Some((node, file, ct)) => Answer::File(ct, node, file),
        None => Answer::NotFound,
    }
}

/// The node a machine is, as matchbox matches: by its SMBIOS UUID when a
/// node has that one, else by its MAC.
fn machine(out: &Path, uuid: Option<&str>, mac: Option<&str>) -> Option<Manifest> {
    let nodes = index(out);
    let parse = |u: &str| node_config::rules::parse_uuid(u).ok();
    let uuid = uuid.and_then(parse);
    if let Some(m) = uuid.and_then(|u| nodes.values().find(|m| m.uuid.as_deref().and_then(parse) == Some(u.clone()))) {
        return Some(m.clone());
    }
    nodes.get(&mac?.parse::<MacAddr>().ok()?).cloned()
}

/// `/assets/NODE/FILE`: only a file the node's manifest lists.
fn asset(out: &Path, path: &str) -> Option<(String, String, &'static str)> {
    let rest = path.strip_prefix("/assets/")?;
    let (node, file) = rest.split_once('/')?;
    let m = index(out).into_values().find(|m| m.node == node)?;
    (file == "manifest.json" || m.artifacts.iter().any(|a| a.file == file))
        .then(|| (m.node.clone(), file.to_owned(), "application/octet-stream"))
}

/// Who may have what.
pub enum Access {
    /// Every node file needs that node's token.
    Tokens(TokenSecret),
    /// Files the build made private (a node's key or token inside) are
    /// refused; the rest is open. The default.
    PublicOnly,
    /// Everything to anyone (`--insecure-no-token`).
    Open,
}

impl Access {
    fn secret(&self) -> Option<&TokenSecret> {
        match self {
            Access::Tokens(s) => Some(s),
            _ => None,
        }
    }
}

/// Serves until killed.
pub fn serve(listen: &str, out: &Path, access: Access) -> Result<()> {
    let listener = std::net::TcpListener::bind(listen).map_err(|e| anyhow::anyhow!("listening on {listen}: {e}"))?;
    let local = listener.local_addr()?;
    eprintln!("imgbuild: serving {} on http://{local}", out.display());
    let out = out.to_owned();
    http::run(listener, move |req, peer| respond(&out, req, peer, local, &access))?;
    Ok(())
}

fn respond(
    out: &Path,
    req: &http::Request,
    peer: std::net::SocketAddr,
    local: std::net::SocketAddr,
    access: &Access,
) -> http::Response {
    let answer = if req.get {
        // HTTP/1.0 clients may send no Host: the address they reached us on.
        let host = req.host.clone().unwrap_or_else(|| local.to_string());
        route(out, &req.target, &host, access.secret())
    } else {
        Answer::NotFound
    };
    let resp = match answer {
        Answer::Bytes(ct, body) => {
            http::Response { status: 200, content_type: ct, body: http::Body::Bytes(body), part: None }
        }
        Answer::File(ct, node, file) => match open_inside(out, &node, &file) {
            Some((_, _, true)) if matches!(access, Access::PublicOnly) => http::Response::text(
                403,
                "forbidden: this file holds a node's private key or token; \
                 serve with --token-secret (or --insecure-no-token, for a lab)\n",
            ),
            Some((f, len, _)) => http::Response::file(ct, f, len).with_range(req),
            None => http::Response::text(404, "not found\n"),
        },
        Answer::NotFound => http::Response::text(404, "not found\n"),
        Answer::Forbidden => http::Response::text(403, "forbidden: this node's token is required\n"),
        Answer::BadHost => http::Response::text(400, "bad Host header\n"),
    };
    eprintln!("imgbuild: {peer} {} {} {} {}", req.method, log_safe(&req.target), resp.status, resp.len());
    resp
}

/// A request target as the log may show it: tokens redacted, control and
/// non-ASCII bytes escaped, so a client cannot forge or hide log lines.
pub fn log_safe(target: &str) -> String {
    let text = imgbuild_ignition::apply::redacted(target);
    let mut out = String::with_capacity(text.len().min(512));
    for b in text.bytes().take(512) {
        if b.is_ascii_graphic() {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if text.len() > 512 {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_fit_for_a_script() {
        for ok in ["127.0.0.1:8080", "boot.example", "pxe-1.lan:80", "[::1]:8080", "[fe80::1]", "10.0.0.1"] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "x\nchain http://evil/",
            "h:80:80",
            "[::1",
            "h:",
            "h:123456",
            "h:99999",
            "h:0",
            "h/x",
            "h;x",
            "::1",
        ] {
            assert!(!valid_host(bad), "{bad:?}");
        }
    }

    #[test]
    fn logs_show_no_token_and_no_control_bytes() {
        assert_eq!(log_safe("/ipxe?mac=52:54:00:00:00:01&token=abc"), "/ipxe?mac=52:54:00:00:00:01&token=REDACTED");
        assert_eq!(log_safe("/x\r\nfake 200"), "/x\\x0d\\x0afake\\x20200");
        assert_eq!(log_safe(&"a".repeat(600)).len(), 515);
    }

    #[test]
    fn only_plain_names_and_no_links() {
        let out = tempfile::tempdir().unwrap();
        let node = out.path().join("n");
        std::fs::create_dir(&node).unwrap();
        std::fs::write(node.join("f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", node.join("l")).unwrap();
        std::os::unix::fs::symlink(&node, out.path().join("m")).unwrap();
        assert!(open_inside(out.path(), "n", "f").is_some());
        assert!(open_inside(out.path(), "n", "l").is_none(), "a link to a file");
        assert!(open_inside(out.path(), "m", "f").is_none(), "a linked node folder");
        assert!(open_inside(out.path(), "n", "../n/f").is_none() && open_inside(out.path(), "..", "n").is_none());
    }
}
