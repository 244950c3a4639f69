//! `imgbuild serve`: what a build wrote, over HTTP, for PXE and cloud boot.
//! The node is picked by MAC (any usual spelling); an unknown MAC or file is
//! a 404, never another node's config, never a path outside the output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use node_agent::types::MacAddr;
use tiny_http::{Header, Request, Response, Server};

use crate::formats::ipxe;
use crate::formats::manifest::Manifest;
use crate::token::TokenSecret;

/// The nodes under `out`, by MAC, from their manifests.
pub fn index(out: &Path) -> BTreeMap<MacAddr, Manifest> {
    let mut map = BTreeMap::new();
    for entry in std::fs::read_dir(out).into_iter().flatten().flatten() {
        let Ok(bytes) = std::fs::read(entry.path().join("manifest.json")) else { continue };
        let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) else { continue };
        if m.node != entry.file_name().to_string_lossy() {
            continue;
        }
        if let Ok(mac) = m.mac.parse::<MacAddr>() {
            map.insert(mac, m);
        }
    }
    map
}

/// An answer: status, content type, body (a file or bytes).
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Bytes(&'static str, Vec<u8>),
    File(&'static str, PathBuf),
    NotFound,
    /// The node exists but the request lacks its token.
    Forbidden,
}

/// Routes one GET. `host` is the Host header the client used; with a
/// `secret`, everything of a node needs that node's `token=`.
pub fn route(out: &Path, url: &str, host: &str, secret: Option<&TokenSecret>) -> Answer {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let param = |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='));
    let mac = || param("mac").and_then(|m| percent_decode(m).parse::<MacAddr>().ok());
    let node = |mac: Option<MacAddr>| mac.and_then(|m| index(out).remove(&m));
    let allowed = |node: &str| secret.is_none_or(|s| param("token").is_some_and(|t| s.accepts(node, t)));
    let answer = match path {
        "/boot.ipxe" => {
            return Answer::Bytes("text/plain", ipxe::boot_script(&format!("http://{host}")).into_bytes());
        }
        "/ipxe" => node(mac()).map(|m| (m.node.clone(), format!("{}.ipxe", m.node), "text/plain")),
        "/ignition" => {
            node(mac()).map(|m| (m.node.clone(), format!("{}.ign", m.node), "application/vnd.coreos.ignition+json"))
        }
        _ => asset(out, path),
    };
    match answer {
        Some((node, _, _)) if !allowed(&node) => Answer::Forbidden,
        Some((node, file, ct)) => Answer::File(ct, out.join(node).join(file)),
        None => Answer::NotFound,
    }
}

/// `/assets/NODE/FILE`: only a file the node's manifest lists.
fn asset(out: &Path, path: &str) -> Option<(String, String, &'static str)> {
    let rest = path.strip_prefix("/assets/")?;
    let (node, file) = rest.split_once('/')?;
    let m = index(out).into_values().find(|m| m.node == node)?;
    (file == "manifest.json" || m.artifacts.iter().any(|a| a.file == file))
        .then(|| (m.node.clone(), file.to_owned(), "application/octet-stream"))
}

fn percent_decode(s: &str) -> String {
    s.replace("%3A", ":").replace("%3a", ":")
}

/// Serves until killed, with a few worker threads.
pub fn serve(listen: &str, out: &Path, secret: Option<TokenSecret>) -> Result<()> {
    let server = std::sync::Arc::new(Server::http(listen).map_err(|e| anyhow::anyhow!("listening on {listen}: {e}"))?);
    eprintln!("imgbuild: serving {} on http://{}", out.display(), server.server_addr());
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let server = server.clone();
            let out = out.to_owned();
            let secret = secret.clone();
            std::thread::spawn(move || {
                while let Ok(req) = server.recv() {
                    if let Err(e) = respond(&out, req, secret.as_ref()) {
                        eprintln!("imgbuild: serve: {e:#}");
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

fn respond(out: &Path, req: Request, secret: Option<&TokenSecret>) -> Result<()> {
    let host = req.headers().iter().find(|h| h.field.equiv("Host")).map(|h| h.value.to_string()).unwrap_or_default();
    let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
    let url = req.url().to_owned();
    let answer = if *req.method() == tiny_http::Method::Get || *req.method() == tiny_http::Method::Head {
        route(out, &url, &host, secret)
    } else {
        Answer::NotFound
    };
    let (status, len) = match answer {
        Answer::Bytes(ct, body) => {
            let len = body.len();
            req.respond(Response::from_data(body).with_header(content_type(ct)))?;
            (200, len as u64)
        }
        Answer::File(ct, path) => match std::fs::File::open(&path) {
            Ok(f) => {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                req.respond(Response::from_file(f).with_header(content_type(ct)))?;
                (200, len)
            }
            Err(_) => not_found(req)?,
        },
        Answer::NotFound => not_found(req)?,
        Answer::Forbidden => {
            req.respond(Response::from_string("forbidden: this node's token is required\n").with_status_code(403))?;
            (403, 0)
        }
    };
    eprintln!("imgbuild: {peer} GET {url} {status} {len}");
    Ok(())
}

fn not_found(req: Request) -> Result<(u16, u64)> {
    req.respond(Response::from_string("not found\n").with_status_code(404)).context("answering")?;
    Ok((404, 10))
}

fn content_type(ct: &str) -> Header {
    Header::from_bytes("Content-Type", ct).expect("static header")
}
