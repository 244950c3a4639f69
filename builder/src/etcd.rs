//! A small blocking etcd v3 client for the administrator's commands
//! (`imgbuild policy ...`): the JSON gateway over HTTPS with a client
//! certificate from the cluster CA, as the agents speak to etcd.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
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
            let ca =
                reqwest::Certificate::from_pem(t.ca.as_bytes()).context("the cluster CA is not a PEM certificate")?;
            let id = reqwest::Identity::from_pem(format!("{}\n{}", t.cert, t.key).as_bytes())
                .context("the admin certificate or key is not PEM")?;
            b = b
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca)
                .identity(id)
                .https_only(true);
        }
        Ok(Etcd { client: b.build().context("building the etcd client")?, endpoints })
    }

    /// POSTs `body` to `path` on the first endpoint that answers.
    fn call(&self, path: &str, body: Value) -> Result<Value> {
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
                    let bytes = r.bytes().with_context(|| format!("{url}: reading the answer"))?;
                    return serde_json::from_slice(&bytes).with_context(|| format!("{url}: not JSON"));
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().unwrap_or_default();
                    bail!("{url}: {status}: {}", text.trim());
                }
                Err(err) => last = Some(anyhow::anyhow!("{url}: {err:#}")),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no etcd endpoint")))
    }

    /// Every key and value under `prefix`, in key order.
    pub fn range(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let r =
            self.call("/v3/kv/range", json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix))}))?;
        let kvs = r["kvs"].as_array().cloned().unwrap_or_default();
        kvs.iter()
            .map(|kv| Ok((String::from_utf8_lossy(&unb64(&kv["key"])?).into_owned(), unb64(&kv["value"])?)))
            .collect()
    }

    /// Puts every pair in one transaction: all or nothing.
    pub fn put_all(&self, kvs: &[(String, Vec<u8>)]) -> Result<()> {
        let success: Vec<Value> =
            kvs.iter().map(|(k, v)| json!({"request_put": {"key": b64(k.as_bytes()), "value": b64(v)}})).collect();
        self.call("/v3/kv/txn", json!({"success": success}))?;
        Ok(())
    }

    /// Deletes `key`; how many keys went (0 or 1).
    pub fn delete(&self, key: &str) -> Result<u64> {
        let r = self.call("/v3/kv/deleterange", json!({"key": b64(key.as_bytes())}))?;
        Ok(r["deleted"].as_str().and_then(|d| d.parse().ok()).or_else(|| r["deleted"].as_u64()).unwrap_or(0))
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
