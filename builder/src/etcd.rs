//! A small blocking etcd v3 client for the administrator's commands
//! (`imgbuild policy ...`): the JSON gateway over HTTPS with a client
//! certificate from the cluster CA, as the agents speak to etcd.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use imgbuild_ignition::apply::error_chain as chain;
use serde_json::{json, Value};

/// The cluster's etcd, tried endpoint by endpoint.
pub struct Etcd {
    client: reqwest::blocking::Client,
    endpoints: Vec<String>,
}

/// PEM texts: the CA that signed etcd's certificates, and ours.
pub struct ClientTls<'a> {
    pub ca: &'a str,
    pub cert: &'a str,
    pub key: &'a str,
}

/// The most an answer may be: etcd's own request limit is 1.5 MiB a
/// value, and `get` reads a few hundred policies at most.
pub const MAX_ANSWER: u64 = 64 << 20;

/// etcd's default `--max-txn-ops`: a larger apply goes in several transactions.
pub const MAX_TXN_OPS: usize = 128;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(v: &Value) -> Result<Vec<u8>> {
    let s = v.as_str().unwrap_or_default();
    base64::engine::general_purpose::STANDARD.decode(s).context("etcd sent a value that is not base64")
}

/// The key after the last key with this prefix (etcd's `range_end`).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Etcd {
    pub fn new(endpoints: Vec<String>, tls: Option<ClientTls>) -> Result<Self> {
        let mut b = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(t) = tls {
            // Every certificate in it: during a CA rotation, two CAs are trusted.
            let cas = reqwest::Certificate::from_pem_bundle(t.ca.as_bytes())
                .context("the cluster CA is not PEM certificates")?;
            let id = reqwest::Identity::from_pem(format!("{}\n{}", t.cert, t.key).as_bytes())
                .context("the admin certificate or key is not PEM")?;
            b = b.use_rustls_tls().tls_built_in_root_certs(false);
            for ca in cas {
                b = b.add_root_certificate(ca);
            }
            b = b.identity(id).https_only(true);
        }
        Ok(Etcd { client: b.build().context("building the etcd client")?, endpoints })
    }

    /// POSTs `body` to `path` on the first endpoint that answers well (a
    /// member without a leader answers 5xx: the next one is asked).
    fn call(&self, path: &str, body: Value) -> Result<Value> {
        use std::io::Read;
        let mut last = None;
        for e in &self.endpoints {
            let url = format!("{}{path}", e.trim_end_matches('/'));
            let req = self
                .client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(&body).expect("a JSON value serializes"));
            match req.send() {
                Ok(r) if r.status().is_success() => {
                    let mut bytes = Vec::new();
                    r.take(MAX_ANSWER + 1)
                        .read_to_end(&mut bytes)
                        .with_context(|| format!("{url}: reading the answer"))?;
                    if bytes.len() as u64 > MAX_ANSWER {
                        bail!("{url}: an answer larger than {MAX_ANSWER} bytes");
                    }
                    return serde_json::from_slice(&bytes).with_context(|| format!("{url}: not JSON"));
                }
                Ok(r) => {
                    let status = r.status();
                    let mut text = String::new();
                    let _ = r.take(300).read_to_string(&mut text);
                    let err = anyhow::anyhow!("{url}: {status}: {}", text.trim());
                    if !status.is_server_error() {
                        return Err(err);
                    }
                    last = Some(err);
                }
                Err(err) => last = Some(anyhow::anyhow!("{url}: {}", chain(&err))),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no etcd endpoint")))
    }

    /// Every key and value under `prefix`, in key order.
    pub fn range(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let r =
            self.call("/v3/kv/range", json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix))}))?;
        let kvs = match &r["kvs"] {
            Value::Null => Vec::new(),
            Value::Array(kvs) => kvs.clone(),
            _ => bail!("etcd answered a range with kvs that are not a list"),
        };
        let all: Vec<(String, Vec<u8>)> = kvs
            .iter()
            .map(|kv| Ok((String::from_utf8_lossy(&unb64(&kv["key"])?).into_owned(), unb64(&kv["value"])?)))
            .collect::<Result<_>>()?;
        // Only what was asked for, whatever a server sends.
        Ok(all.into_iter().filter(|(k, _)| k.starts_with(prefix)).collect())
    }

    /// Puts every pair, in transactions of at most [`MAX_TXN_OPS`].
    pub fn put_all(&self, kvs: &[(String, Vec<u8>)]) -> Result<()> {
        for chunk in kvs.chunks(MAX_TXN_OPS) {
            let success: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| json!({"request_put": {"key": b64(k.as_bytes()), "value": b64(v)}}))
                .collect();
            self.call("/v3/kv/txn", json!({"success": success}))?;
        }
        Ok(())
    }

    /// The cluster's members: (id, name, peer URLs, client URLs).
    pub fn members(&self) -> Result<Vec<Member>> {
        let r = self.call("/v3/cluster/member/list", json!({}))?;
        let list = r["members"].as_array().cloned().unwrap_or_default();
        Ok(list.iter().map(Member::from_json).collect())
    }

    /// Adds a member that will join at `peer_url`; returns its id.
    pub fn member_add(&self, peer_url: &str) -> Result<Member> {
        let r = self.call("/v3/cluster/member/add", json!({"peerURLs": [peer_url]}))?;
        Ok(Member::from_json(&r["member"]))
    }

    pub fn member_remove(&self, id: u64) -> Result<()> {
        self.call("/v3/cluster/member/remove", json!({"ID": id.to_string()}))?;
        Ok(())
    }

    /// Each endpoint's own status (version, leader, database size), or why not.
    pub fn statuses(&self) -> Vec<(String, Result<Value>)> {
        self.endpoints
            .iter()
            .map(|e| {
                let one = Etcd { client: self.client.clone(), endpoints: vec![e.clone()] };
                (e.clone(), one.call("/v3/maintenance/status", json!({})))
            })
            .collect()
    }

    /// Streams a snapshot of the database into `out` (the gateway sends it
    /// as JSON chunks, one per line); returns its size.
    pub fn snapshot(&self, out: &mut dyn std::io::Write) -> Result<u64> {
        use std::io::BufRead;
        let url = format!("{}/v3/maintenance/snapshot", self.endpoints.first().context("no etcd endpoint")?);
        let r = self
            .client
            .post(&url)
            .timeout(Duration::from_secs(600))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body("{}")
            .send()
            .map_err(|e| anyhow::anyhow!("{url}: {}", chain(&e)))?;
        if !r.status().is_success() {
            bail!("{url}: {}", r.status());
        }
        let mut total = 0u64;
        for line in std::io::BufReader::new(r).lines() {
            let v: Value = serde_json::from_str(&line.context("reading the snapshot")?)
                .context("a snapshot chunk that is not JSON")?;
            if let Some(e) = v.get("error") {
                bail!("{url}: {e}");
            }
            let blob = unb64(&v["result"]["blob"])?;
            total += blob.len() as u64;
            out.write_all(&blob).context("writing the snapshot")?;
        }
        Ok(total)
    }

    /// Deletes `key`; how many keys went (0 or 1).
    pub fn delete(&self, key: &str) -> Result<u64> {
        let r = self.call("/v3/kv/deleterange", json!({"key": b64(key.as_bytes())}))?;
        Ok(r["deleted"].as_str().and_then(|d| d.parse().ok()).or_else(|| r["deleted"].as_u64()).unwrap_or(0))
    }
}

/// A member as etcd lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty until a member that was added has started.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

impl Member {
    fn from_json(v: &Value) -> Member {
        let urls =
            |k: &str| v[k].as_array().into_iter().flatten().filter_map(|u| u.as_str().map(str::to_owned)).collect();
        Member {
            // etcd's gateway writes 64-bit ids as strings.
            id: v["ID"].as_str().and_then(|s| s.parse().ok()).or_else(|| v["ID"].as_u64()).unwrap_or(0),
            name: v["name"].as_str().unwrap_or_default().to_owned(),
            peer_urls: urls("peerURLs"),
            client_urls: urls("clientURLs"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefix_ends() {
        assert_eq!(super::prefix_end("/a/"), b"/a0");
        assert_eq!(super::prefix_end("a\u{7f}"), b"a\x80");
    }
}
