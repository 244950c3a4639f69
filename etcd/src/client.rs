//! An etcd v3 client over gRPC. With TLS it trusts only the cluster CA and
//! presents a client certificate, whose CN etcd takes as the user name when
//! authentication is on. Requests go to the last endpoint that answered; an
//! unreachable one (or one without a leader) hands over to the next, until
//! every endpoint has failed once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use node_config::ClientTls;
use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

use crate::pb::*;

const UNARY_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys per page when listing a prefix.
const PAGE: i64 = 500;
/// The most one answer may be: etcd's own limit is 1.5 MiB a value, and a
/// page is at most [`PAGE`] keys.
pub const MAX_ANSWER: usize = 64 << 20;

/// The end of the key range that holds every key starting with `prefix`.
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

#[derive(Clone, Debug)]
pub struct Client {
    channels: Arc<Vec<Slot>>,
    current: Arc<AtomicUsize>,
}

/// One endpoint; its channel is made on first use, inside the runtime
/// that will drive it (so a client can be made, and checked, outside one).
#[derive(Debug)]
struct Slot {
    url: String,
    endpoint: Endpoint,
    channel: std::sync::OnceLock<Channel>,
}

impl Slot {
    fn grpc(&self) -> tonic::client::Grpc<Channel> {
        let channel = self.channel.get_or_init(|| self.endpoint.connect_lazy()).clone();
        tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_ANSWER)
    }
}

/// Whether a failed call may succeed at another endpoint: it never reached
/// etcd, or the member could not serve it (no leader, stopping).
fn try_next(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded)
        && !status.message().contains("permission denied")
}

/// `call`, or a deadline error once [`UNARY_TIMEOUT`] (and a little) has
/// passed: a member that accepted the connection and then went silent must
/// not hold the caller for ever. (etcd ends its own requests at the
/// deadline the request carries; this is for one that no longer answers.)
async fn within<T>(call: impl std::future::Future<Output = Result<T, tonic::Status>>) -> Result<T, tonic::Status> {
    match tokio::time::timeout(UNARY_TIMEOUT + Duration::from_secs(2), call).await {
        Ok(r) => r,
        Err(_) => Err(tonic::Status::deadline_exceeded(format!("no answer in {}s", UNARY_TIMEOUT.as_secs() + 2))),
    }
}

fn tls_config(tls: &ClientTls) -> Result<ClientTlsConfig> {
    // Every certificate in it: during a CA rotation, two CAs are trusted.
    let cas = pem_blocks(&tls.ca, "CERTIFICATE");
    anyhow::ensure!(!cas.is_empty(), "etcd.tls.ca: no PEM certificate");
    anyhow::ensure!(
        !pem_blocks(&tls.cert, "CERTIFICATE").is_empty() && tls.key.contains("PRIVATE KEY-----"),
        "etcd.tls: cert and key are not a PEM certificate and private key"
    );
    Ok(ClientTlsConfig::new()
        .ca_certificates(cas.into_iter().map(Certificate::from_pem))
        .identity(Identity::from_pem(&tls.cert, &tls.key)))
}

/// Each PEM block of `label` in `text`, whole.
fn pem_blocks(text: &str, label: &str) -> Vec<String> {
    let (begin, end) = (format!("-----BEGIN {label}-----"), format!("-----END {label}-----"));
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let Some(stop) = rest[start..].find(&end) else { break };
        out.push(rest[start..start + stop + end.len()].to_owned());
        rest = &rest[start + stop + end.len()..];
    }
    out
}

fn endpoint(url: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint> {
    let https = url.starts_with("https://");
    anyhow::ensure!(https || url.starts_with("http://"), "etcd endpoint {url}: not an http:// or https:// URL");
    // With the cluster CA, TLS never falls back to plain text.
    anyhow::ensure!(tls.is_none() || https, "etcd endpoint {url}: plain http, but etcd.tls is set");
    // https without it: server-only TLS checked against the web's roots,
    // as flanneld allows.
    let web = ClientTlsConfig::new().with_webpki_roots();
    let tls = tls.or(https.then_some(&web));
    let mut e = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("etcd endpoint {url}"))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        // A watch on a member that went away must end, not hang.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    if let Some(tls) = tls {
        e = e.tls_config(tls.clone()).with_context(|| format!("etcd endpoint {url}: TLS"))?;
    }
    Ok(e)
}

impl Client {
    /// A client for `endpoints`; with `tls`, it trusts only the cluster CA
    /// and presents the node's client certificate. Connects on first use.
    pub fn new(endpoints: &[String], tls: Option<&ClientTls>) -> Result<Self> {
        if endpoints.is_empty() {
            bail!("no etcd endpoints");
        }
        let tls = tls.map(tls_config).transpose()?;
        let channels = endpoints
            .iter()
            .map(|url| {
                let url = url.trim_end_matches('/').to_owned();
                Ok(Slot { endpoint: endpoint(&url, tls.as_ref())?, url, channel: Default::default() })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Client { channels: Arc::new(channels), current: Arc::new(AtomicUsize::new(0)) })
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.channels.iter().map(|s| s.url.clone()).collect()
    }

    /// A client of one endpoint of this one (each member's own status).
    pub fn only(&self, index: usize) -> Client {
        let s = &self.channels[index];
        let slot = Slot { url: s.url.clone(), endpoint: s.endpoint.clone(), channel: s.channel.clone() };
        Client { channels: Arc::new(vec![slot]), current: Arc::new(AtomicUsize::new(0)) }
    }

    /// Sends `req` to `/etcdserverpb.{method}` at each endpoint in turn
    /// until one answers. The typed face of [`Client::call`].
    pub(crate) async fn unary<Req, Resp>(&self, method: &str, req: Req) -> Result<Resp>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let answer = self.call(method, req.encode_to_vec()).await?;
        Resp::decode(answer.as_slice()).with_context(|| format!("etcd {method}: an answer that is not its message"))
    }

    /// One request's bytes to `/etcdserverpb.{method}` and the answer's.
    /// Not generic: tonic's call path is compiled once, not per message
    /// type (that cost the agent about a megabyte).
    async fn call(&self, method: &str, req: Vec<u8>) -> Result<Vec<u8>> {
        self.at_each_endpoint(method, |mut grpc, path| {
            let mut request = tonic::Request::new(req.clone());
            request.set_timeout(UNARY_TIMEOUT);
            async move { grpc.unary(request, path, Raw).await.map(tonic::Response::into_inner) }
        })
        .await
    }

    /// Opens a stream at the first endpoint that accepts it. `reqs` makes
    /// the request stream (encoded messages), once per endpoint tried.
    async fn stream(&self, method: &str, reqs: &(dyn Fn() -> RawStream + Sync)) -> Result<tonic::Streaming<Vec<u8>>> {
        self.at_each_endpoint(method, |mut grpc, path| {
            let request = tonic::Request::new(reqs());
            async move { grpc.streaming(request, path, Raw).await.map(tonic::Response::into_inner) }
        })
        .await
    }

    /// `attempt` at each endpoint in turn, from the last one that answered,
    /// until one answers: an endpoint that is unreachable, silent or
    /// without a leader hands over to the next; any other answer of etcd's
    /// is the answer.
    async fn at_each_endpoint<T, Fut>(
        &self,
        method: &str,
        attempt: impl Fn(tonic::client::Grpc<Channel>, http::uri::PathAndQuery) -> Fut,
    ) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let path = path(method);
        let n = self.channels.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last_err = anyhow!("no etcd endpoint tried");
        for i in 0..n {
            let idx = (start + i) % n;
            let (url, mut grpc) = (&self.channels[idx].url, self.channels[idx].grpc());
            let call = async {
                grpc.ready().await.map_err(|e| tonic::Status::unavailable(chain(&e)))?;
                attempt(grpc, path.clone()).await
            };
            match within(call).await {
                Ok(answer) => {
                    self.current.store(idx, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(status) if try_next(&status) => last_err = anyhow!("etcd {url} {method}: {}", describe(&status)),
                // etcd answered: that is its answer, not a dead endpoint.
                Err(status) => bail!("etcd {url} {method}: {}", describe(&status)),
            }
        }
        Err(last_err)
    }

    /// The cluster's members; one that was added and has not started yet
    /// has no name.
    pub async fn members(&self) -> Result<Vec<Member>> {
        let r: MemberListResponse = self.unary("Cluster/MemberList", Empty {}).await?;
        Ok(r.members)
    }

    /// Adds a member that will join at `peer_url`.
    pub async fn member_add(&self, peer_url: &str) -> Result<Member> {
        let r: MemberAddResponse =
            self.unary("Cluster/MemberAdd", MemberAddRequest { peer_urls: vec![peer_url.to_owned()] }).await?;
        r.member.context("etcd added a member without naming it")
    }

    pub async fn member_remove(&self, id: u64) -> Result<()> {
        let _: MemberListResponse = self.unary("Cluster/MemberRemove", MemberRemoveRequest { id }).await?;
        Ok(())
    }

    /// The answering member's status (version, leader, database size).
    pub async fn status(&self) -> Result<StatusResponse> {
        self.unary("Maintenance/Status", Empty {}).await
    }

    /// Streams a snapshot of the database into `out`; returns its size.
    pub async fn snapshot(&self, out: &mut (dyn std::io::Write + Send)) -> Result<u64> {
        let mut stream = self.stream("Maintenance/Snapshot", &|| one(&Empty {})).await?;
        let mut total = 0u64;
        while let Some(chunk) = next::<SnapshotResponse>(&mut stream, "snapshot").await? {
            total += chunk.blob.len() as u64;
            out.write_all(&chunk.blob).context("writing the snapshot")?;
        }
        Ok(total)
    }

    /// One key, with the store's revision.
    pub async fn get(&self, key: &str) -> Result<(Option<KeyValue>, i64)> {
        let r: RangeResponse = self.unary("KV/Range", RangeRequest::one(key)).await?;
        Ok((r.kvs.into_iter().next(), r.header.map_or(0, |h| h.revision)))
    }

    /// Every key under `prefix`, with the store's revision. Read in pages
    /// at one revision: a thousand nodes listing thousands of leases at once
    /// would otherwise make etcd hold every full answer in memory.
    pub async fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        let end = prefix_end(prefix.as_bytes());
        let (mut kvs, mut start, mut rev) = (Vec::new(), prefix.as_bytes().to_vec(), 0i64);
        loop {
            let req = RangeRequest { key: start.clone(), range_end: end.clone(), limit: PAGE, revision: rev };
            let r: RangeResponse = self.unary("KV/Range", req).await?;
            if rev == 0 {
                rev = r.header.as_ref().map_or(0, |h| h.revision);
            }
            let more = r.more && !r.kvs.is_empty();
            if let Some(last) = r.kvs.last() {
                // The next page starts just after the last key.
                start = last.key.iter().copied().chain([0]).collect();
            }
            // Only what was asked for, whatever a server sends.
            kvs.extend(r.kvs.into_iter().filter(|kv| kv.key.starts_with(prefix.as_bytes())));
            if !more {
                return Ok((kvs, rev));
            }
        }
    }

    pub async fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<()> {
        let _: PutResponse = self.unary("KV/Put", put(key, value, lease)).await?;
        Ok(())
    }

    /// Puts every pair in one transaction.
    pub async fn put_all(&self, kvs: &[(String, Vec<u8>)]) -> Result<()> {
        let success = kvs.iter().map(|(k, v)| op(Request::Put(put(k, v, None)))).collect();
        let _: TxnResponse = self.unary("KV/Txn", TxnRequest { compare: vec![], success, failure: vec![] }).await?;
        Ok(())
    }

    /// Puts `key` only if it does not exist; true when this call created it.
    pub async fn create(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<bool> {
        let txn = TxnRequest {
            compare: vec![key_absent(key)],
            success: vec![op(Request::Put(put(key, value, lease)))],
            failure: vec![],
        };
        let r: TxnResponse = self.unary("KV/Txn", txn).await?;
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
            success: vec![op(Request::Put(put(key, value, lease)))],
            failure: vec![],
        };
        let r: TxnResponse = self.unary("KV/Txn", txn).await?;
        Ok(r.succeeded)
    }

    /// Puts `value` at `key` (on etcd lease `lease`, if given) unless the key
    /// exists, in one transaction: `None` when it was put, else the value
    /// already there.
    pub async fn create_or_get(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<Option<KeyValue>> {
        let txn = TxnRequest {
            compare: vec![key_absent(key)],
            success: vec![op(Request::Put(put(key, value, lease)))],
            failure: vec![op(Request::Range(RangeRequest::one(key)))],
        };
        let r: TxnResponse = self.unary("KV/Txn", txn).await?;
        if r.succeeded {
            return Ok(None);
        }
        let kv = r.responses.into_iter().find_map(|op| match op.response {
            Some(Response::Range(r)) => r.kvs.into_iter().next(),
            _ => None,
        });
        // The failure branch runs only when the key exists.
        kv.map(Some).with_context(|| format!("etcd: {key} exists but its range came back empty"))
    }

    /// Deletes `key`; how many keys went (0 or 1).
    pub async fn delete(&self, key: &str) -> Result<i64> {
        let req = DeleteRangeRequest { key: key.as_bytes().to_vec(), range_end: vec![] };
        let r: DeleteRangeResponse = self.unary("KV/DeleteRange", req).await?;
        Ok(r.deleted)
    }

    /// A new lease of `ttl` seconds.
    pub async fn grant(&self, ttl: i64) -> Result<i64> {
        let r: LeaseGrantResponse = self.unary("Lease/LeaseGrant", LeaseGrantRequest { ttl }).await?;
        anyhow::ensure!(r.error.is_empty(), "etcd lease grant: {}", r.error);
        Ok(r.id)
    }

    /// Ends a lease (and deletes its keys); one etcd no longer has is no error.
    pub async fn revoke(&self, id: i64) -> Result<()> {
        match self.unary::<_, LeaseTtl>("Lease/LeaseRevoke", LeaseId { id }).await {
            Err(e) if format!("{e:#}").contains("requested lease not found") => Ok(()),
            r => r.map(drop),
        }
    }

    /// Refreshes a lease; returns its new TTL, or 0 when etcd no longer has it.
    pub async fn keepalive(&self, id: i64) -> Result<i64> {
        let mut stream = self.stream("Lease/LeaseKeepAlive", &|| one(&LeaseId { id })).await?;
        let answer = tokio::time::timeout(UNARY_TIMEOUT, next::<LeaseTtl>(&mut stream, "lease keepalive"))
            .await
            .context("etcd lease keepalive: no answer")??;
        Ok(answer.map_or(0, |r| r.ttl))
    }

    /// The remaining TTL of a lease (0 or less when it is gone).
    pub async fn time_to_live(&self, id: i64) -> Result<i64> {
        let r: LeaseTtl = self.unary("Lease/LeaseTimeToLive", LeaseId { id }).await?;
        Ok(r.ttl)
    }

    /// Watches every key under `prefix` from `start_revision` on.
    pub async fn watch_prefix(&self, prefix: &str, start_revision: i64) -> Result<Watch> {
        let create = WatchCreateRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            start_revision,
        };
        let req = WatchRequest { request_union: Some(WatchRequestUnion::Create(create)) }.encode_to_vec();
        // The request side stays open: etcd ends a watch whose client hung up.
        let reqs = || -> RawStream { Box::pin(futures::stream::iter([req.clone()]).chain(futures::stream::pending())) };
        Ok(Watch { stream: self.stream("Watch/Watch", &reqs).await? })
    }
}

fn path(method: &str) -> http::uri::PathAndQuery {
    http::uri::PathAndQuery::try_from(format!("/etcdserverpb.{method}")).expect("a valid gRPC path")
}

fn op(request: Request) -> RequestOp {
    RequestOp { request: Some(request) }
}

fn put(key: &str, value: &[u8], lease: Option<i64>) -> PutRequest {
    PutRequest { key: key.as_bytes().to_vec(), value: value.to_vec(), lease: lease.unwrap_or(0) }
}

/// A transaction's condition: `key` does not exist.
fn key_absent(key: &str) -> Compare {
    Compare {
        result: COMPARE_EQUAL,
        target: TARGET_CREATE,
        key: key.as_bytes().to_vec(),
        target_union: Some(CompareTo::CreateRevision(0)),
    }
}

/// A transaction's condition: `key` was last written at `mod_revision`.
fn key_unchanged(key: &str, mod_revision: i64) -> Compare {
    Compare {
        result: COMPARE_EQUAL,
        target: TARGET_MOD,
        key: key.as_bytes().to_vec(),
        target_union: Some(CompareTo::ModRevision(mod_revision)),
    }
}

/// A gRPC status as one line: etcd's message, or the transport's causes.
fn describe(status: &tonic::Status) -> String {
    use std::error::Error;
    with_sources(status.message().to_owned(), status.source())
}

fn chain(e: &dyn std::error::Error) -> String {
    with_sources(e.to_string(), e.source())
}

/// `s`, then each cause that does not repeat what is already said.
fn with_sources(mut s: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    while let Some(e) = source {
        let text = e.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = e.source();
    }
    s
}

/// A watch's stream of answers.
pub struct Watch {
    stream: tonic::Streaming<Vec<u8>>,
}

impl Watch {
    /// The next answer; `None` when etcd closed the stream.
    pub async fn next(&mut self) -> Result<Option<WatchResponse>> {
        next(&mut self.stream, "watch").await
    }
}

/// Encoded requests for a stream.
type RawStream = std::pin::Pin<Box<dyn futures::Stream<Item = Vec<u8>> + Send>>;

/// A request stream of one message.
fn one(msg: &impl prost::Message) -> RawStream {
    Box::pin(futures::stream::iter([msg.encode_to_vec()]))
}

/// The next message of a stream, decoded; `None` when it ended.
async fn next<T: prost::Message + Default>(stream: &mut tonic::Streaming<Vec<u8>>, what: &str) -> Result<Option<T>> {
    match stream.message().await.map_err(|s| anyhow!("etcd {what}: {}", describe(&s)))? {
        Some(bytes) => {
            Ok(Some(T::decode(bytes.as_slice()).with_context(|| format!("etcd {what}: a message that is not one"))?))
        }
        None => Ok(None),
    }
}

/// Messages as bytes, both ways: the typed side encodes and decodes with
/// prost, and tonic's machinery sees one message type.
#[derive(Clone, Copy, Debug, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut v = vec![0; bytes::Buf::remaining(src)];
        bytes::Buf::copy_to_slice(src, &mut v);
        Ok(Some(v))
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

    #[test]
    fn pem_blocks_split_a_bundle() {
        let one = "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----";
        let two = format!("junk\n{one}\n{}\n", one.replace("AA", "BB"));
        assert_eq!(pem_blocks(&two, "CERTIFICATE").len(), 2);
        assert!(pem_blocks("no pem", "CERTIFICATE").is_empty());
    }

    #[test]
    fn tls_and_scheme_must_agree() {
        assert!(endpoint("https://10.0.0.1:2379", None).is_ok());
        assert!(endpoint("ftp://10.0.0.1:2379", None).is_err());
        assert!(endpoint("http://10.0.0.1:2379", None).is_ok());
    }
}
