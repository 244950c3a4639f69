//! Lease logic against a real etcd on loopback, without netlink: many nodes
//! acquiring at once, renewal, expiry, and endpoint failover.

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::{free_port, Etcd};
use node_agent::config::{Backend, BackendType, NetworkConfig};
use node_agent::etcd::Client;
use node_agent::flannel::manager::{self, SubnetManager};
use node_agent::flannel::{alloc, lease};
use node_agent::flannel::{BackendData, LeaseAttrs};

fn network() -> NetworkConfig {
    NetworkConfig {
        network: "10.1.0.0/16".parse().unwrap(),
        subnet_len: 24,
        subnet_min: None,
        subnet_max: None,
        backend: Backend { kind: BackendType::Vxlan, vni: 1, port: 8472 },
        lease_ttl: None,
        enable_nftables: false,
    }
}

fn manager(client: &Client, net: node_agent::flannel::Network, i: u32, ttl: i64) -> SubnetManager {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 17, 0, 0)) + i);
    let mac = format!("52:54:00:00:{:02x}:{:02x}", i >> 8, i & 0xff).parse().unwrap();
    let attrs = LeaseAttrs { public_ip: ip, backend: BackendData::Vxlan { vni: 1, vtep_mac: mac } };
    SubnetManager { client: client.clone(), net, attrs, ttl }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn fifty_nodes_at_once_get_fifty_distinct_subnets() {
    let etcd = Etcd::start(None, "127.0.0.1");
    rt().block_on(async {
        let client = Client::new(std::slice::from_ref(&etcd.endpoint), None).unwrap();
        let net = manager::ensure_network_config(&client, &network()).await.unwrap();
        let tasks: Vec<_> = (1..=50)
            .map(|i| {
                let m = manager(&client, net, i, 3600);
                tokio::spawn(async move { m.acquire(None).await.unwrap() })
            })
            .collect();
        let mut subnets = HashSet::new();
        for t in tasks {
            let lease = t.await.unwrap();
            assert!(subnets.insert(lease.subnet), "{} handed out twice", lease.subnet);
        }
        let (leases, _) = manager::list_leases(&client).await.unwrap();
        assert_eq!(leases.len(), 50);
        // Acquiring again as the same node reuses its lease.
        let again = manager(&client, net, 7, 3600).acquire(None).await.unwrap();
        let first = leases.iter().find(|l| l.attrs.public_ip == again.attrs.public_ip).unwrap();
        assert_eq!(first.subnet, again.subnet);
        assert_eq!(manager::list_leases(&client).await.unwrap().0.len(), 50);
    });
}

/// The network config goes in only if absent, in one transaction that also
/// reads what is there: the first writer's wins, and a node with another
/// cluster file takes etcd's.
#[test]
fn the_first_network_config_wins() {
    let etcd = Etcd::start(None, "127.0.0.1");
    rt().block_on(async {
        let client = Client::new(std::slice::from_ref(&etcd.endpoint), None).unwrap();
        let first = manager::ensure_network_config(&client, &network()).await.unwrap();
        let other = NetworkConfig { subnet_len: 26, enable_nftables: true, ..network() };
        let second = manager::ensure_network_config(&client, &other).await.unwrap();
        assert_eq!(second, first);
        assert_eq!((second.subnet_len, second.nftables), (24, false));
    });
    let stored = etcd.get("/coreos.com/network/config").unwrap();
    assert!(stored.contains(r#""SubnetLen":24"#) && !stored.contains("EnableNFTables"), "{stored}");
}

#[test]
fn renewal_keeps_a_lease_and_expiry_drops_it() {
    let etcd = Etcd::start(None, "127.0.0.1");
    rt().block_on(async {
        let client = Client::new(std::slice::from_ref(&etcd.endpoint), None).unwrap();
        let net = manager::ensure_network_config(&client, &network()).await.unwrap();
        let renewed = manager(&client, net, 1, 3);
        let idle = manager(&client, net, 2, 3);
        let kept = renewed.acquire(None).await.unwrap();
        let dropped = idle.acquire(None).await.unwrap();
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(renewed.renew(&kept).await.unwrap(), "renewal failed");
        }
        let (leases, _) = manager::list_leases(&client).await.unwrap();
        let subnets: Vec<_> = leases.iter().map(|l| l.subnet).collect();
        assert!(subnets.contains(&kept.subnet), "renewed lease expired");
        assert!(!subnets.contains(&dropped.subnet), "unrenewed lease outlived its TTL");
        assert!(!idle.renew(&dropped).await.unwrap(), "renewing an expired lease must report it gone");
    });
}

#[test]
fn client_fails_over_to_a_live_endpoint() {
    let etcd = Etcd::start(None, "127.0.0.1");
    rt().block_on(async {
        let dead = format!("http://127.0.0.1:{}", free_port());
        let client = Client::new(&[dead, etcd.endpoint.clone()], None).unwrap();
        client.put("/x", b"1", None).await.unwrap();
        assert_eq!(client.get("/x").await.unwrap().0.unwrap().value, b"1");
        let none = Client::new(&[format!("http://127.0.0.1:{}", free_port())], None).unwrap();
        assert!(none.get("/x").await.is_err());
        // A member that takes the connection and then says nothing (hung,
        // or a black hole): the request gives up on it and the next answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_url = format!("http://{}", silent.local_addr().unwrap());
        let held = std::thread::spawn(move || silent.accept().map(|(conn, _)| conn));
        let client = Client::new(&[silent_url, etcd.endpoint.clone()], None).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(client.get("/x").await.unwrap().0.unwrap().value, b"1");
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
        drop(held);
    });
}

#[test]
fn existing_network_config_wins() {
    let etcd = Etcd::start(None, "127.0.0.1");
    let theirs = r#"{"network":"10.9.0.0/16","subnetlen":26,"backend":{"type":"host-gw"}}"#;
    assert!(etcd.ctl(&["put", "/coreos.com/network/config", theirs]).0);
    rt().block_on(async {
        let client = Client::new(std::slice::from_ref(&etcd.endpoint), None).unwrap();
        let net = manager::ensure_network_config(&client, &network()).await.unwrap();
        assert_eq!(net.network.to_string(), "10.9.0.0/16");
        assert_eq!(net.subnet_len, 26);
        assert_eq!(net.backend.kind, BackendType::HostGw);
    });
    assert_eq!(etcd.get("/coreos.com/network/config").unwrap(), theirs);
}

/// Listing reads in pages at one revision: every key once, in order, and
/// nothing written after the listing began.
#[test]
fn listing_many_leases_reads_every_key_once() {
    let etcd = Etcd::start(None, "127.0.0.1");
    let client = Client::new(std::slice::from_ref(&etcd.endpoint), None).unwrap();
    rt().block_on(async {
        let puts = (0..1203u32).map(|i| {
            let client = client.clone();
            async move { client.put(&format!("/bench/list/{i:05}"), b"v", None).await }
        });
        for r in futures::future::join_all(puts).await {
            r.unwrap();
        }
        let (kvs, rev) = client.get_prefix("/bench/list/").await.unwrap();
        let keys: Vec<String> = kvs.iter().map(|kv| String::from_utf8(kv.key.clone()).unwrap()).collect();
        let want: Vec<String> = (0..1203).map(|i| format!("/bench/list/{i:05}")).collect();
        assert_eq!(keys, want);
        assert!(rev >= 1203);
    });
}

/// A node finds its own lease wherever it is, flanneld's format included:
/// at its preferred subnet with one transaction, elsewhere (its preferred
/// subnet held by another node) by listing; a free previous subnet comes
/// before the preferred one; an unused etcd lease is revoked.
#[test]
fn a_node_takes_back_its_lease_wherever_flanneld_put_it() {
    let etcd = Etcd::start(None, "127.0.0.1");
    let flanneld = |ip: &str| {
        format!(
            r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"6e:24:cf:11:72:9a"}},"BackendV6Data":null}}"#
        )
    };
    rt().block_on(async {
        let client = Client::new(std::slice::from_ref(&etcd.endpoint), None).unwrap();
        let net = manager::ensure_network_config(&client, &network()).await.unwrap();
        let me = manager(&client, net, 9, 3600);
        let all_preferred: Vec<_> = alloc::preferred(&net, me.our_ip()).collect();
        let preferred = all_preferred[0];
        let key = |s: ipnet::Ipv4Net| lease::key(s);

        // Preferred subnet holds our flanneld lease: taken back there, ours now.
        client.put(&key(preferred), flanneld(&me.our_ip().to_string()).as_bytes(), None).await.unwrap();
        let got = me.acquire(None).await.unwrap();
        assert_eq!((got.subnet, &got.attrs), (preferred, &me.attrs));
        assert!(client.time_to_live(got.etcd_lease).await.unwrap() > 0);
        // Again: kept as it is, the same etcd lease, and the one granted meanwhile revoked.
        let leases_before = etcd.ctl(&["lease", "list"]).1;
        let again = me.acquire(None).await.unwrap();
        assert_eq!((again.subnet, again.etcd_lease), (got.subnet, got.etcd_lease));
        assert_eq!(etcd.ctl(&["lease", "list"]).1, leases_before, "no etcd lease left behind");

        // Preferred subnets are other nodes', ours is elsewhere: found by listing.
        for (i, s) in all_preferred.iter().enumerate() {
            client.put(&key(*s), flanneld(&format!("172.17.200.{i}")).as_bytes(), None).await.unwrap();
        }
        let elsewhere =
            net.network.subnets(24).unwrap().find(|s| !all_preferred.contains(s) && alloc::in_range(&net, *s)).unwrap();
        client.put(&key(elsewhere), flanneld(&me.our_ip().to_string()).as_bytes(), None).await.unwrap();
        assert_eq!(me.acquire(None).await.unwrap().subnet, elsewhere);
        assert_eq!(manager::list_leases(&client).await.unwrap().0.len(), all_preferred.len() + 1);

        // A fresh node with a free previous subnet gets that one, not its preferred.
        let other = manager(&client, net, 10, 3600);
        let mut taken: Vec<_> = alloc::preferred(&net, other.our_ip()).chain(all_preferred.clone()).collect();
        taken.push(elsewhere);
        let prev = net.network.subnets(24).unwrap().find(|s| alloc::in_range(&net, *s) && !taken.contains(s)).unwrap();
        assert_eq!(other.acquire(Some(prev)).await.unwrap().subnet, prev);
    });
}

/// flanneld's own-lease-first rule where the fast path cannot see it: a node
/// whose earlier lease sits away from its previous and preferred subnets
/// creates one there, and its first full list moves it back to the earlier
/// one, releasing the new; a failing acquire leaves no etcd lease behind; a
/// take-back only writes over the value it read.
#[test]
fn an_earlier_lease_elsewhere_wins_and_nothing_leaks() {
    let etcd = Etcd::start(None, "127.0.0.1");
    let theirs = |ip: &str| {
        format!(
            r#"{{"PublicIP":"{ip}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"6e:24:cf:11:72:9a"}}}}"#
        )
    };
    rt().block_on(async {
        let client = Client::new(std::slice::from_ref(&etcd.endpoint), None).unwrap();
        let net = manager::ensure_network_config(&client, &network()).await.unwrap();
        let me = manager(&client, net, 9, 3600);
        let preferred: Vec<_> = alloc::preferred(&net, me.our_ip()).collect();
        let earlier =
            net.network.subnets(24).unwrap().find(|s| !preferred.contains(s) && alloc::in_range(&net, *s)).unwrap();
        client.put(&lease::key(earlier), theirs(&me.our_ip().to_string()).as_bytes(), None).await.unwrap();

        let fresh = me.acquire_claim(None).await.unwrap();
        assert!(fresh.created && fresh.lease.subnet == preferred[0], "{fresh:?}");
        let (leases, _) = manager::list_leases(&client).await.unwrap();
        let moved = me.move_to_older(&fresh.lease, &leases).await.unwrap().expect("moved to the earlier lease");
        assert_eq!((moved.subnet, &moved.attrs, moved.etcd_lease), (earlier, &me.attrs, fresh.lease.etcd_lease));
        let now = manager::list_leases(&client).await.unwrap().0;
        assert_eq!(now.iter().map(|l| l.subnet).collect::<Vec<_>>(), vec![earlier], "the fresh lease is released");
        assert!(me.move_to_older(&moved, &now).await.unwrap().is_none());

        // A value rewritten since it was read is not written over.
        let (kv, _) = client.get(&lease::key(earlier)).await.unwrap();
        let kv = kv.unwrap();
        client.put(&lease::key(earlier), theirs("172.17.200.9").as_bytes(), None).await.unwrap();
        assert!(!client.put_if_unchanged(&lease::key(earlier), b"x", None, kv.mod_revision).await.unwrap());
        assert!(client
            .get(&lease::key(earlier))
            .await
            .unwrap()
            .0
            .unwrap()
            .value
            .starts_with(b"{\"PublicIP\":\"172.17.200.9\""));
    });

    // A full network: every acquire fails, and revokes what it granted.
    let etcd = Etcd::start(None, "127.0.0.1");
    let full = r#"{"Network":"10.1.0.0/16","SubnetLen":24,"SubnetMin":"10.1.1.0","SubnetMax":"10.1.2.0","Backend":{"Type":"vxlan"}}"#;
    assert!(etcd.ctl(&["put", "/coreos.com/network/config", full]).0);
    for s in ["10.1.1.0-24", "10.1.2.0-24"] {
        assert!(etcd.ctl(&["put", &format!("/coreos.com/network/subnets/{s}"), &theirs("172.17.200.1")]).0);
    }
    rt().block_on(async {
        let client = Client::new(std::slice::from_ref(&etcd.endpoint), None).unwrap();
        let net = manager::ensure_network_config(&client, &network()).await.unwrap();
        let me = manager(&client, net, 9, 3600);
        for _ in 0..3 {
            let e = me.acquire(None).await.unwrap_err().to_string();
            assert!(e.contains("no free /24 subnet"), "{e}");
        }
    });
    assert_eq!(etcd.ctl(&["lease", "list"]).1.trim(), "found 0 leases");
}
