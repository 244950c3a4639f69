//! The subnet manager: network config put-if-absent, lease acquisition by
//! transaction, renewal, and listing leases. Speaks etcd through `etcd::Client`.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};
use ipnet::Ipv4Net;

use super::alloc::{self, Choice};
use super::config::{Network, CONFIG_KEY};
use super::lease::{self, Lease, LeaseAttrs, SUBNETS_PREFIX};
use crate::config::NetworkConfig;
use crate::etcd::Client;
use crate::log;

/// flanneld's lease lifetime.
pub const LEASE_TTL: i64 = 24 * 3600;

/// Puts the cluster's network config unless etcd has one; etcd's wins.
/// Read first: a node may read the config but not write it once etcd's
/// authentication is on (the etcd members put it before turning it on).
pub async fn ensure_network_config(client: &Client, cfg: &NetworkConfig) -> Result<Network> {
    let ours = Network::to_json(cfg);
    let existing = match client.get(CONFIG_KEY).await? {
        (Some(kv), _) => Some(kv),
        (None, _) => client.create_or_get(CONFIG_KEY, ours.as_bytes(), None).await?,
    };
    let value = match existing {
        None => {
            log::info(&format!("put network config {ours}"));
            ours.into_bytes()
        }
        Some(kv) => kv.value,
    };
    let net = Network::parse(&value).with_context(|| format!("{CONFIG_KEY} in etcd"))?;
    if net != Network::from_config(cfg)? {
        log::warn(&format!(
            "etcd's network config differs from the cluster file; using etcd's: {}",
            String::from_utf8_lossy(&value)
        ));
    }
    Ok(net)
}

/// Every lease in etcd with the store revision; malformed ones are skipped
/// with a warning (someone else's bad write must not stop this node).
pub async fn list_leases(client: &Client) -> Result<(Vec<Lease>, i64)> {
    let (leases, rev) = list_leases_at(client).await?;
    Ok((leases.into_iter().map(|(l, _)| l).collect(), rev))
}

/// As `list_leases`, each lease with the revision it was last written at.
async fn list_leases_at(client: &Client) -> Result<(Vec<(Lease, i64)>, i64)> {
    let (kvs, rev) = client.get_prefix(SUBNETS_PREFIX).await?;
    let leases = kvs.iter().filter_map(|kv| Some((parse_kv(&kv.key, &kv.value, kv.lease)?, kv.mod_revision))).collect();
    Ok((leases, rev))
}

/// A lease from a key and value, or `None` with a warning.
pub fn parse_kv(key: &[u8], value: &[u8], etcd_lease: i64) -> Option<Lease> {
    let key = String::from_utf8_lossy(key);
    let parsed = lease::parse_key(&key).and_then(|subnet| Ok((subnet, LeaseAttrs::parse(value)?)));
    match parsed {
        Ok((subnet, attrs)) => Some(Lease { subnet, attrs, etcd_lease }),
        Err(e) => {
            log::warn(&format!("skipping malformed lease {key}: {e:#}"));
            None
        }
    }
}

/// A lease and whether this call created it (rather than taking back one
/// this node had).
#[derive(Debug, Clone)]
pub struct Acquired {
    pub lease: Lease,
    pub created: bool,
}

pub struct SubnetManager {
    pub client: Client,
    pub net: Network,
    pub attrs: LeaseAttrs,
    pub ttl: i64,
}

impl SubnetManager {
    /// Takes a lease (see `acquire_claim`).
    pub async fn acquire(&self, previous: Option<Ipv4Net>) -> Result<Lease> {
        Ok(self.acquire_claim(previous).await?.lease)
    }

    /// Takes a lease: our previous or preferred subnets with one transaction
    /// each when one is free or already ours, else by listing every lease as
    /// flanneld does. Retries lost creation races; never gives up on one.
    /// A newly created lease is `created`: the caller's first full list then
    /// checks for an older lease of ours elsewhere (`move_to_older`).
    pub async fn acquire_claim(&self, previous: Option<Ipv4Net>) -> Result<Acquired> {
        let id = self.client.grant(self.ttl).await?;
        let claimed = match self.claim_known(previous, id).await {
            Ok(Some(a)) => Ok(a),
            Ok(None) => self.acquire_by_listing(previous, id).await,
            Err(e) => Err(e),
        };
        if !claimed.as_ref().is_ok_and(|a| a.lease.etcd_lease == id) {
            // Failed, or we kept the etcd lease our subnet already had: a
            // granted lease must not outlive this call (a stuck node retries
            // every few seconds; each would live a day).
            if let Err(e) = self.client.revoke(id).await {
                log::warn(&format!("revoking unused etcd lease {id:x} (it expires on its own): {e:#}"));
            }
        }
        claimed
    }

    /// The fast path, no list: the previous subnet, then the preferred ones,
    /// each created on etcd lease `id` if absent or taken back if it holds
    /// our public IP. `None` when all are someone else's (or one of ours
    /// changed while we looked).
    async fn claim_known(&self, previous: Option<Ipv4Net>, id: i64) -> Result<Option<Acquired>> {
        let mut candidates: Vec<Ipv4Net> = previous.into_iter().collect();
        for p in alloc::preferred(&self.net, self.our_ip()) {
            if !candidates.contains(&p) {
                candidates.push(p);
            }
        }
        for subnet in candidates.into_iter().filter(|s| alloc::in_range(&self.net, *s)) {
            let key = lease::key(subnet);
            let Some(kv) = self.client.create_or_get(&key, self.attrs.to_json().as_bytes(), Some(id)).await? else {
                return Ok(Some(Acquired { lease: self.ours(subnet, id), created: true }));
            };
            if let Some(l) = parse_kv(&kv.key, &kv.value, kv.lease).filter(|l| l.attrs.public_ip == self.our_ip()) {
                let taken = self.take_back(l, id, kv.mod_revision).await?;
                return Ok(taken.map(|lease| Acquired { lease, created: false }));
            }
        }
        Ok(None)
    }

    /// flanneld's way: list every lease, choose, create; again on a lost race.
    async fn acquire_by_listing(&self, previous: Option<Ipv4Net>, id: i64) -> Result<Acquired> {
        let mut rng = rand::rngs::StdRng::from_entropy();
        loop {
            let (leases, _) = list_leases_at(&self.client).await?;
            let plain: Vec<Lease> = leases.iter().map(|(l, _)| l.clone()).collect();
            match alloc::choose(&self.net, &plain, self.our_ip(), previous, &mut rng)? {
                Choice::Reuse(l) => {
                    let rev = leases.iter().find(|(x, _)| x.subnet == l.subnet).map_or(0, |(_, r)| *r);
                    if let Some(lease) = self.take_back(l, id, rev).await? {
                        return Ok(Acquired { lease, created: false });
                    }
                    log::info("our lease changed while we took it back; listing again");
                }
                Choice::New(subnet) => {
                    if self.client.create(&lease::key(subnet), self.attrs.to_json().as_bytes(), Some(id)).await? {
                        return Ok(Acquired { lease: self.ours(subnet, id), created: true });
                    }
                    // Someone took it between our list and our create: try again.
                    log::info(&format!("lost the race for {subnet}; retrying"));
                    tokio::time::sleep(Duration::from_millis(rand::Rng::gen_range(&mut rng, 10..100))).await;
                }
            }
        }
    }

    /// A lease of ours from before (read at `mod_revision`): kept as it is
    /// while its etcd lease lives and its attributes are ours, else
    /// rewritten with ours onto `id` only if nobody wrote it since: a
    /// subnet freed and taken by another node meanwhile stays theirs.
    async fn take_back(&self, l: Lease, id: i64, mod_revision: i64) -> Result<Option<Lease>> {
        if l.attrs == self.attrs && l.etcd_lease != 0 && self.client.keepalive(l.etcd_lease).await? > 0 {
            return Ok(Some(l));
        }
        let key = lease::key(l.subnet);
        let put = self.client.put_if_unchanged(&key, self.attrs.to_json().as_bytes(), Some(id), mod_revision).await?;
        Ok(put.then(|| self.ours(l.subnet, id)))
    }

    /// After creating `ours`, with every lease listed: an older lease of this
    /// node elsewhere in range (flanneld's own lease-first rule; the fast
    /// path does not see it) is taken back and `ours` released. `None` when
    /// there is none, or it changed meanwhile.
    pub async fn move_to_older(&self, ours: &Lease, leases: &[Lease]) -> Result<Option<Lease>> {
        let older = leases.iter().find(|l| {
            l.subnet != ours.subnet && l.attrs.public_ip == self.our_ip() && alloc::in_range(&self.net, l.subnet)
        });
        let Some(older) = older else { return Ok(None) };
        let (Some(kv), _) = self.client.get(&lease::key(older.subnet)).await? else { return Ok(None) };
        let Some(now) = parse_kv(&kv.key, &kv.value, kv.lease).filter(|l| l.attrs.public_ip == self.our_ip()) else {
            return Ok(None);
        };
        let Some(taken) = self.take_back(now, ours.etcd_lease, kv.mod_revision).await? else { return Ok(None) };
        log::info(&format!("found this node's earlier lease {}; releasing {}", taken.subnet, ours.subnet));
        self.client.delete(&lease::key(ours.subnet)).await?;
        if taken.etcd_lease != ours.etcd_lease {
            self.client.revoke(ours.etcd_lease).await?;
        }
        Ok(Some(taken))
    }

    fn ours(&self, subnet: Ipv4Net, etcd_lease: i64) -> Lease {
        Lease { subnet, attrs: self.attrs.clone(), etcd_lease }
    }

    /// Re-attaches our existing lease to a fresh etcd lease with our attributes.
    async fn refresh(&self, subnet: Ipv4Net) -> Result<Lease> {
        let id = self.client.grant(self.ttl).await?;
        self.client.put(&lease::key(subnet), self.attrs.to_json().as_bytes(), Some(id)).await?;
        Ok(Lease { subnet, attrs: self.attrs.clone(), etcd_lease: id })
    }

    /// Writes our lease back over another writer's value for our subnet, on
    /// our etcd lease while it lives (else a fresh one): the node keeps its
    /// subnet, and the pods on it keep their addresses.
    pub async fn reclaim(&self, ours: &Lease) -> Result<Lease> {
        if ours.etcd_lease != 0 && self.client.keepalive(ours.etcd_lease).await? > 0 {
            self.client.put(&lease::key(ours.subnet), self.attrs.to_json().as_bytes(), Some(ours.etcd_lease)).await?;
            return Ok(Lease { subnet: ours.subnet, attrs: self.attrs.clone(), etcd_lease: ours.etcd_lease });
        }
        self.refresh(ours.subnet).await
    }

    /// Renews before expiry; false when etcd no longer has the lease.
    pub async fn renew(&self, lease: &Lease) -> Result<bool> {
        Ok(self.client.keepalive(lease.etcd_lease).await? > 0)
    }

    /// How often to renew: a third of the TTL, so two renewals may fail.
    pub fn renew_interval(&self) -> Duration {
        Duration::from_secs((self.ttl / 3).max(1) as u64)
    }

    pub fn our_ip(&self) -> Ipv4Addr {
        self.attrs.public_ip
    }
}

use rand::SeedableRng;
