//! The administrator's etcd (`imgbuild policy ...`, `imgbuild etcd ...`): a
//! blocking face on the agents' gRPC client, with an admin certificate from
//! the cluster CA, whose CN etcd maps to a user with full access.

use std::time::Duration;

use anyhow::{Context, Result};
pub use imgbuild_etcd::pb::{Member, StatusResponse};
use imgbuild_etcd::Client;
pub use node_config::ClientTls;

/// The cluster's etcd, tried endpoint by endpoint.
pub struct Etcd {
    rt: tokio::runtime::Runtime,
    client: Client,
}

/// etcd's default `--max-txn-ops`: a larger apply goes in several transactions.
pub const MAX_TXN_OPS: usize = 128;

/// How long one command may take: a snapshot of a large database streams
/// for a while; anything else answers in seconds or its endpoint is down.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

impl Etcd {
    pub fn new(endpoints: Vec<String>, tls: Option<ClientTls>) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
        Ok(Etcd { rt, client: Client::new(&endpoints, tls.as_ref())? })
    }

    fn run<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        self.rt.block_on(async {
            tokio::time::timeout(COMMAND_TIMEOUT, f).await.map_err(|_| anyhow::anyhow!("etcd: no answer in time"))?
        })
    }

    /// Every key and value under `prefix`, in key order.
    pub fn range(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let (kvs, _) = self.run(self.client.get_prefix(prefix))?;
        Ok(kvs.into_iter().map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.value)).collect())
    }

    /// Puts every pair, in transactions of at most [`MAX_TXN_OPS`].
    pub fn put_all(&self, kvs: &[(String, Vec<u8>)]) -> Result<()> {
        for chunk in kvs.chunks(MAX_TXN_OPS) {
            self.run(self.client.put_all(chunk))?;
        }
        Ok(())
    }

    /// The cluster's members.
    pub fn members(&self) -> Result<Vec<Member>> {
        self.run(self.client.members())
    }

    /// Adds a member that will join at `peer_url`.
    pub fn member_add(&self, peer_url: &str) -> Result<Member> {
        self.run(self.client.member_add(peer_url))
    }

    pub fn member_remove(&self, id: u64) -> Result<()> {
        self.run(self.client.member_remove(id))
    }

    /// Each endpoint's own status (version, leader, database size), or why not.
    pub fn statuses(&self) -> Vec<(String, Result<StatusResponse>)> {
        let endpoints = self.client.endpoints();
        let mut out = Vec::new();
        for (i, e) in endpoints.into_iter().enumerate() {
            let one = self.client.only(i);
            out.push((e, self.run(one.status())));
        }
        out
    }

    /// Streams a snapshot of the database into `out`; returns its size.
    pub fn snapshot(&self, out: &mut (dyn std::io::Write + Send)) -> Result<u64> {
        self.run(self.client.snapshot(out))
    }

    /// Deletes `key`; how many keys went (0 or 1).
    pub fn delete(&self, key: &str) -> Result<u64> {
        Ok(self.run(self.client.delete(key))?.max(0) as u64)
    }

    /// Makes the users and roles of `access` and turns authentication on;
    /// says why the roles may not hold on this etcd, if a known flaw does.
    pub fn ensure_access(&self, access: &node_config::EtcdAccess) -> Result<Option<String>> {
        self.run(async {
            imgbuild_etcd::access::ensure(&self.client, access).await?;
            imgbuild_etcd::access::bypass_warning(&self.client).await
        })
    }
}
