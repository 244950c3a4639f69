//! A small etcd v3 client over the JSON gateway (`/v3/...` on the client
//! URL): no protobuf toolchain, one HTTP stack for etcd and configs.
//! Requests go to the last endpoint that answered; on a connection error
//! the next endpoint is tried, until every one has failed once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::wire::*;
use crate::config::ClientTls;

const UNARY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    endpoints: Arc<Vec<String>>,
    current: Arc<AtomicUsize>,
}

/// Only the cluster CA is trusted (not the web's roots), and only https is
/// spoken, so a misdirected endpoint fails instead of leaking requests.
fn with_tls(builder: reqwest::ClientBuilder, tls: &ClientTls) -> Result<reqwest::ClientBuilder> {
    // Every certificate in it: during a CA rotation, two CAs are trusted.
    let cas = reqwest::Certificate::from_pem_bundle(tls.ca.as_bytes()).context("etcd.tls.ca: not PEM certificates")?;
    anyhow::ensure!(!cas.is_empty(), "etcd.tls.ca: no certificate");
    let identity = reqwest::Identity::from_pem(format!("{}\n{}", tls.cert, tls.key).as_bytes())
        .context("etcd.tls: cert and key are not a PEM certificate and private key")?;
    let mut builder = builder.use_rustls_tls().tls_built_in_root_certs(false);
    for ca in cas {
        builder = builder.add_root_certificate(ca);
    }
    Ok(builder.identity(identity).https_only(true))
}

/// A transaction's condition: `key` does not exist.
fn key_absent(key: &str) -> Compare {
    Compare {
        key: b64(key.as_bytes()),
        target: "CREATE",
        result: "EQUAL",
        create_revision: Some("0".into()),
        mod_revision: None,
    }
}

/// A transaction's condition: `key` was last written at `mod_revision`.
fn key_unchanged(key: &str, mod_revision: i64) -> Compare {
    let mod_revision = Some(mod_revision.to_string());
    Compare { key: b64(key.as_bytes()), target: "MOD", result: "EQUAL", create_revision: None, mod_revision }
}

/// The end of the key range that holds every key starting with `prefix`.
/// Keys per page when listing a prefix.
const PAGE: usize = 500;

pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Client {
    /// A client for `endpoints`; with `tls`, it trusts only the cluster CA
    /// and presents the node's client certificate.
    pub fn new(endpoints: &[String], tls: Option<&ClientTls>) -> Result<Self> {
        if endpoints.is_empty() {
            bail!("no etcd endpoints");
        }
        let mut builder =
            reqwest::Client::builder().connect_timeout(Duration::from_secs(3)).tcp_keepalive(Duration::from_secs(30));
        if let Some(tls) = tls {
            builder = with_tls(builder, tls)?;
        }
        let http = builder.build().context("building the etcd HTTP client")?;
        let endpoints = endpoints.iter().map(|e| e.trim_end_matches('/').to_owned()).collect();
        Ok(Client { http, endpoints: Arc::new(endpoints), current: Arc::new(AtomicUsize::new(0)) })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Sends `req` to each endpoint in turn until one answers.
    async fn send(&self, path: &str, body: &impl Serialize, timeout: Option<Duration>) -> Result<reqwest::Response> {
        let n = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last_err = anyhow!("no etcd endpoint tried");
        for i in 0..n {
            let idx = (start + i) % n;
            let url = format!("{}{path}", self.endpoints[idx]);
            let mut rb = self.http.post(&url).json(body);
            if let Some(t) = timeout {
                rb = rb.timeout(t);
            }
            match rb.send().await {
                Ok(resp) if resp.status().is_success() => {
                    self.current.store(idx, Ordering::Relaxed);
                    return Ok(resp);
                }
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    // etcd answered: that is its answer, not a dead endpoint.
                    bail!("etcd {url}: {status}: {}", text.trim());
                }
                Err(e) => last_err = anyhow!(e).context(format!("etcd {url}")),
            }
        }
        Err(last_err)
    }

    async fn call<Resp: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<Resp> {
        let resp = self.send(path, body, Some(UNARY_TIMEOUT)).await?;
        let bytes = resp.bytes().await.with_context(|| format!("reading etcd {path}"))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing etcd {path}: {}", String::from_utf8_lossy(&bytes)))
    }

    /// The cluster's members as (peer URLs, name); a member that was added
    /// and has not started yet has no name.
    pub async fn members(&self) -> Result<Vec<(Vec<String>, String)>> {
        let r: serde_json::Value = self.call("/v3/cluster/member/list", &serde_json::json!({})).await?;
        let list = r["members"].as_array().cloned().unwrap_or_default();
        Ok(list
            .iter()
            .map(|m| {
                let peers =
                    m["peerURLs"].as_array().into_iter().flatten().filter_map(|u| u.as_str().map(str::to_owned));
                (peers.collect(), m["name"].as_str().unwrap_or_default().to_owned())
            })
            .collect())
    }

    /// One key, with the store's revision.
    pub async fn get(&self, key: &str) -> Result<(Option<KeyValue>, i64)> {
        let r: RangeResponse = self.call("/v3/kv/range", &RangeRequest::one(key)).await?;
        Ok((r.kvs.into_iter().next(), r.header.revision))
    }

    /// Every key under `prefix`, with the store's revision. Read in pages
    /// at one revision: a thousand nodes listing thousands of leases at once
    /// would otherwise make etcd's gateway hold every full answer in memory.
    pub async fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        let end = b64(&prefix_end(prefix.as_bytes()));
        let (mut kvs, mut start, mut rev) = (Vec::new(), prefix.as_bytes().to_vec(), 0i64);
        loop {
            let req = RangeRequest {
                key: b64(&start),
                range_end: Some(end.clone()),
                limit: Some(PAGE.to_string()),
                revision: (rev > 0).then(|| rev.to_string()),
            };
            let r: RangeResponse = self.call("/v3/kv/range", &req).await?;
            if rev == 0 {
                rev = r.header.revision;
            }
            let more = r.more && !r.kvs.is_empty();
            if let Some(last) = r.kvs.last() {
                // The next page starts just after the last key.
                start = last.key.iter().copied().chain([0]).collect();
            }
            kvs.extend(r.kvs);
            if !more {
                return Ok((kvs, rev));
            }
        }
    }

    pub async fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<()> {
        let _: serde_json::Value = self.call("/v3/kv/put", &put(key, value, lease)).await?;
        Ok(())
    }

    /// Puts `key` only if it does not exist; true when this call created it.
    pub async fn create(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<bool> {
        let txn = TxnRequest {
            compare: vec![key_absent(key)],
            success: vec![RequestOp::Put(put(key, value, lease))],
            failure: vec![],
        };
        let r: TxnResponse = self.call("/v3/kv/txn", &txn).await?;
        Ok(r.succeeded)
    }

    /// Puts `key` only if nobody wrote it since `mod_revision`; true when put.
    pub async fn put_if_unchanged(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<i64>,
        mod_revision: i64,
    ) -> Result<bool> {
        let txn = TxnRequest {
            compare: vec![key_unchanged(key, mod_revision)],
            success: vec![RequestOp::Put(put(key, value, lease))],
            failure: vec![],
        };
        let r: TxnResponse = self.call("/v3/kv/txn", &txn).await?;
        Ok(r.succeeded)
    }

    /// Puts `value` at `key` (on etcd lease `lease`, if given) unless the key
    /// exists, in one transaction: `None` when it was put, else the value
    /// already there.
    pub async fn create_or_get(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<Option<KeyValue>> {
        let txn = TxnRequest {
            compare: vec![key_absent(key)],
            success: vec![RequestOp::Put(put(key, value, lease))],
            failure: vec![RequestOp::Range(RangeRequest::one(key))],
        };
        let r: TxnResponse = self.call("/v3/kv/txn", &txn).await?;
        if r.succeeded {
            return Ok(None);
        }
        let range = r.responses.into_iter().find_map(|op| op.response_range);
        let kv = range.and_then(|r| r.kvs.into_iter().next());
        // The failure branch runs only when the key exists.
        kv.map(Some).with_context(|| format!("etcd: {key} exists but its range came back empty"))
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let _: serde_json::Value = self.call("/v3/kv/deleterange", &RangeRequest::one(key)).await?;
        Ok(())
    }

    /// A new lease of `ttl` seconds.
    pub async fn grant(&self, ttl: i64) -> Result<i64> {
        let r: LeaseGrantResponse =
            self.call("/v3/lease/grant", &serde_json::json!({ "TTL": ttl.to_string() })).await?;
        Ok(r.id)
    }

    /// Ends a lease (and deletes its keys); one etcd no longer has is no error.
    pub async fn revoke(&self, id: i64) -> Result<()> {
        let body = serde_json::json!({ "ID": id.to_string() });
        match self.call::<serde_json::Value>("/v3/lease/revoke", &body).await {
            Err(e) if format!("{e:#}").contains("requested lease not found") => Ok(()),
            r => r.map(drop),
        }
    }

    /// Refreshes a lease; returns its new TTL, or 0 when etcd no longer has it.
    pub async fn keepalive(&self, id: i64) -> Result<i64> {
        let r: LeaseKeepAliveResponse =
            self.call("/v3/lease/keepalive", &serde_json::json!({ "ID": id.to_string() })).await?;
        Ok(r.result.map(|r| r.ttl).unwrap_or(0))
    }

    /// The remaining TTL of a lease (0 or less when it is gone).
    pub async fn time_to_live(&self, id: i64) -> Result<i64> {
        let r: serde_json::Value =
            self.call("/v3/lease/timetolive", &serde_json::json!({ "ID": id.to_string() })).await?;
        Ok(r["TTL"].as_str().and_then(|s| s.parse().ok()).or_else(|| r["TTL"].as_i64()).unwrap_or(0))
    }

    /// Watches every key under `prefix` from `start_revision` on.
    pub async fn watch_prefix(&self, prefix: &str, start_revision: i64) -> Result<Watch> {
        let body = serde_json::json!({ "create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
            "start_revision": start_revision.to_string(),
        }});
        let resp = self.send("/v3/watch", &body, None).await?;
        Ok(Watch { stream: Box::pin(resp.bytes_stream()), buf: Vec::new() })
    }
}

fn put(key: &str, value: &[u8], lease: Option<i64>) -> PutRequest {
    PutRequest { key: b64(key.as_bytes()), value: b64(value), lease: lease.map(|l| l.to_string()) }
}

type ByteStream = std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// A watch: newline-delimited JSON messages from the gateway.
pub struct Watch {
    stream: ByteStream,
    buf: Vec<u8>,
}

impl Watch {
    /// The next message; `None` when etcd closed the stream.
    pub async fn next(&mut self) -> Result<Option<WatchResponse>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let msg: WatchMessage = serde_json::from_slice(&line)
                    .with_context(|| format!("parsing a watch message: {}", String::from_utf8_lossy(&line)))?;
                if let Some(err) = msg.error {
                    bail!("etcd watch error: {err}");
                }
                if let Some(r) = msg.result {
                    return Ok(Some(r));
                }
                continue;
            }
            match self.stream.next().await {
                Some(chunk) => self.buf.extend_from_slice(&chunk.context("reading the etcd watch")?),
                None => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
