//! etcd's v3 JSON gateway messages: keys and values are base64, 64-bit
//! integers are decimal strings, zero values are left out.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize};

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn de_b64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    B64.decode(s).map_err(serde::de::Error::custom)
}

/// int64 fields arrive as strings; be lenient and take numbers too.
fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        I(i64),
    }
    match N::deserialize(d)? {
        N::S(s) => s.parse().map_err(serde::de::Error::custom),
        N::I(i) => Ok(i),
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Header {
    #[serde(default, deserialize_with = "de_i64")]
    pub revision: i64,
}

/// One key-value pair as etcd stores it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct KeyValue {
    #[serde(deserialize_with = "de_b64")]
    pub key: Vec<u8>,
    #[serde(default, deserialize_with = "de_b64")]
    pub value: Vec<u8>,
    #[serde(default, deserialize_with = "de_i64")]
    pub create_revision: i64,
    #[serde(default, deserialize_with = "de_i64")]
    pub mod_revision: i64,
    #[serde(default, deserialize_with = "de_i64")]
    pub lease: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RangeResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
    /// More keys in the range than `limit` let through.
    #[serde(default)]
    pub more: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RangeRequest {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// Read at this revision (0 or absent: the latest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

impl RangeRequest {
    /// Just `key`.
    pub fn one(key: &str) -> Self {
        RangeRequest { key: b64(key.as_bytes()), range_end: None, limit: None, revision: None }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PutRequest {
    pub key: String,
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Compare {
    pub key: String,
    pub target: &'static str,
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mod_revision: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub enum RequestOp {
    #[serde(rename = "request_put")]
    Put(PutRequest),
    #[serde(rename = "request_range")]
    Range(RangeRequest),
}

#[derive(Debug, Clone, Serialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TxnResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub succeeded: bool,
    /// One per operation of the branch that ran.
    #[serde(default)]
    pub responses: Vec<ResponseOp>,
}

/// A transaction's operation result; only ranges are read back.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResponseOp {
    #[serde(default)]
    pub response_range: Option<RangeResponse>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct LeaseGrantResponse {
    #[serde(rename = "ID", deserialize_with = "de_i64")]
    pub id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "de_i64")]
    pub ttl: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct LeaseKeepAliveResponse {
    #[serde(default)]
    pub result: Option<LeaseGrantKeepAlive>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct LeaseGrantKeepAlive {
    #[serde(rename = "TTL", default, deserialize_with = "de_i64")]
    pub ttl: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct WatchMessage {
    #[serde(default)]
    pub result: Option<WatchResponse>,
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct WatchResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub canceled: bool,
    #[serde(default, deserialize_with = "de_i64")]
    pub compact_revision: i64,
    #[serde(default)]
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Event {
    /// Absent for PUT (the zero value), `"DELETE"` for deletions.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub kv: KeyValue,
}

impl Event {
    pub fn is_delete(&self) -> bool {
        self.kind.as_deref() == Some("DELETE")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gateway_json() {
        let r: RangeResponse = serde_json::from_str(
            r#"{"header":{"cluster_id":"1","revision":"42"},"kvs":[{"key":"YQ==","value":"Yg==","create_revision":"5","mod_revision":"7","version":"2","lease":"99"}],"count":"1"}"#,
        )
        .unwrap();
        assert_eq!(r.header.revision, 42);
        assert_eq!(
            r.kvs[0],
            KeyValue { key: b"a".to_vec(), value: b"b".to_vec(), create_revision: 5, mod_revision: 7, lease: 99 }
        );
        let w: WatchMessage =
            serde_json::from_str(r#"{"result":{"header":{"revision":"9"},"events":[{"type":"DELETE","kv":{"key":"YQ==","mod_revision":"9"}},{"kv":{"key":"Yg==","value":"Yw=="}}]}}"#)
                .unwrap();
        let events = w.result.unwrap().events;
        assert!(events[0].is_delete() && !events[1].is_delete());
    }
}
