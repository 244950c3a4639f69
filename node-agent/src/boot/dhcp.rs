//! A small DHCPv4 client for boots that do not know their address yet (PXE,
//! cloud): DISCOVER, OFFER, REQUEST, ACK on one interface, over a UDP socket
//! bound to the device (the kernel sends from 0.0.0.0 before an address).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::RngCore;

use crate::types::MacAddr;

const COOKIE: [u8; 4] = [99, 130, 83, 99];

/// DHCP options as (code, value) pairs.
type Options = Vec<(u8, Vec<u8>)>;

/// What the server gave us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpLease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub server: Ipv4Addr,
    /// How long the address is ours (option 51), when the server says.
    pub lease_secs: Option<u32>,
    /// DNS servers (option 6), at most three as resolv.conf reads them.
    pub dns: Vec<Ipv4Addr>,
}

/// A BOOTREQUEST with DHCP message type `kind` and extra options.
pub fn request(xid: u32, mac: MacAddr, kind: u8, extra: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10] = 0x80; // broadcast replies: we have no address to receive unicast on
    p[28..34].copy_from_slice(&mac.0);
    p.extend_from_slice(&COOKIE);
    p.extend_from_slice(&[53, 1, kind]);
    p.extend_from_slice(&[55, 4, 1, 3, 6, 54]);
    for (code, v) in extra {
        p.push(*code);
        p.push(v.len() as u8);
        p.extend_from_slice(v);
    }
    p.push(255);
    p
}

/// Parses a BOOTREPLY for `xid`: (message type, yiaddr, options).
pub fn parse_reply(b: &[u8], xid: u32) -> Option<(u8, Ipv4Addr, Options)> {
    if b.len() < 240 || b[0] != 2 || b[4..8] != xid.to_be_bytes() || b[236..240] != COOKIE {
        return None;
    }
    let yiaddr = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
    let mut opts = Vec::new();
    let mut i = 240;
    while i < b.len() {
        match b[i] {
            255 => break,
            0 => i += 1,
            code => {
                let len = *b.get(i + 1)? as usize;
                opts.push((code, b.get(i + 2..i + 2 + len)?.to_vec()));
                i += 2 + len;
            }
        }
    }
    let kind = opts.iter().find(|(c, _)| *c == 53).and_then(|(_, v)| v.first().copied())?;
    Some((kind, yiaddr, opts))
}

fn opt_ip(opts: &[(u8, Vec<u8>)], code: u8) -> Option<Ipv4Addr> {
    opts.iter().find(|(c, v)| *c == code && v.len() >= 4).map(|(_, v)| Ipv4Addr::new(v[0], v[1], v[2], v[3]))
}

/// A lease's address and netmask as a node can hold them: a unicast host
/// address, a contiguous mask of /1 to /32 (clouds such as GCP hand out
/// /32 with an on-link router). Returns the prefix length.
pub fn check_lease(address: Ipv4Addr, mask: Ipv4Addr) -> Result<u8, String> {
    let m = u32::from(mask);
    let prefix = m.leading_ones();
    if m.count_ones() != prefix || prefix == 0 {
        return Err("the netmask is not a contiguous /1 to /32".into());
    }
    if address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || address.is_broadcast()
        || address.is_link_local()
        || address.octets()[0] >= 240
    {
        return Err("not a unicast host address".into());
    }
    if prefix < 31 {
        let host = u32::from(address) & !m;
        if host == 0 || host == !m {
            return Err("the network's or the broadcast address".into());
        }
    }
    Ok(prefix as u8)
}

/// Every address in an option holding a list of them.
fn opt_ips(opts: &[(u8, Vec<u8>)], code: u8) -> Vec<Ipv4Addr> {
    opts.iter()
        .filter(|(c, _)| *c == code)
        .flat_map(|(_, v)| v.chunks_exact(4).map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3])))
        .filter(|ip| !ip.is_unspecified() && !ip.is_broadcast() && !ip.is_multicast() && !ip.is_loopback())
        .collect()
}

/// Runs DISCOVER→ACK on `ifname` (already up) within `timeout`.
pub fn acquire(ifname: &str, mac: MacAddr, timeout: Duration) -> Result<DhcpLease> {
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)).context("binding UDP port 68")?;
    sock.set_broadcast(true)?;
    let dev = std::ffi::OsString::from(ifname);
    nix::sys::socket::setsockopt(&sock.as_fd(), nix::sys::socket::sockopt::BindToDevice, &dev)
        .context("SO_BINDTODEVICE")?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    let xid = rand::thread_rng().next_u32();
    let dest = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    let mut offer: Option<(Ipv4Addr, Ipv4Addr)> = None;
    let mut last_sent = Instant::now() - Duration::from_secs(10);
    while Instant::now() < deadline {
        if last_sent.elapsed() > Duration::from_secs(2) {
            let pkt = match offer {
                None => request(xid, mac, 1, &[]),
                Some((ip, server)) => {
                    request(xid, mac, 3, &[(50, ip.octets().to_vec()), (54, server.octets().to_vec())])
                }
            };
            sock.send_to(&pkt, dest).context("sending a DHCP request")?;
            last_sent = Instant::now();
        }
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let Some((kind, yiaddr, opts)) = parse_reply(&buf[..n], xid) else { continue };
        let server = opt_ip(&opts, 54).unwrap_or(Ipv4Addr::UNSPECIFIED);
        match (kind, offer) {
            (2, None) => {
                offer = Some((yiaddr, server));
                last_sent = Instant::now() - Duration::from_secs(10);
            }
            // Only the server we asked: anyone else's ACK or NAK is ignored.
            (5 | 6, Some((_, asked))) if server != asked && !asked.is_unspecified() => {}
            (5, Some((ip, _))) if ip == yiaddr => {
                let mask = opt_ip(&opts, 1).unwrap_or(Ipv4Addr::new(255, 255, 255, 0));
                let prefix_len = match check_lease(yiaddr, mask) {
                    Ok(p) => p,
                    Err(why) => {
                        // A server handing out such a lease is not one to use: ask again.
                        crate::log::warn(&format!(
                            "dhcp on {ifname}: refusing {yiaddr} mask {mask} from {server}: {why}"
                        ));
                        offer = None;
                        continue;
                    }
                };
                return Ok(DhcpLease {
                    address: yiaddr,
                    prefix_len,
                    router: opt_ip(&opts, 3),
                    server,
                    lease_secs: opts
                        .iter()
                        .find(|(c, v)| *c == 51 && v.len() == 4)
                        .map(|(_, v)| u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
                    dns: opt_ips(&opts, 6).into_iter().take(3).collect(),
                });
            }
            (6, _) => offer = None, // NAK: start over
            _ => {}
        }
    }
    bail!("no DHCP answer on {ifname} in {}s", timeout.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets() {
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let p = request(7, mac, 1, &[]);
        assert_eq!(&p[236..240], &COOKIE);
        assert_eq!(&p[240..243], &[53, 1, 1]);
        assert_eq!(&p[28..34], &mac.0);
        // A reply as a server would send it.
        let mut r = p.clone();
        r[0] = 2;
        r[16..20].copy_from_slice(&[10, 0, 2, 15]);
        r.truncate(240);
        r.extend_from_slice(&[53, 1, 2, 1, 4, 255, 255, 255, 0, 54, 4, 10, 0, 2, 2, 255]);
        let (kind, ip, opts) = parse_reply(&r, 7).unwrap();
        assert_eq!((kind, ip), (2, Ipv4Addr::new(10, 0, 2, 15)));
        assert_eq!(opt_ip(&opts, 54), Some(Ipv4Addr::new(10, 0, 2, 2)));
        let dns = vec![(6, vec![10, 0, 2, 3, 1, 1, 1, 1, 0, 0, 0, 0, 224, 0, 0, 1, 127, 0, 0, 1, 9])];
        assert_eq!(opt_ips(&dns, 6), [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)]);
        assert!(parse_reply(&r, 8).is_none());
    }

    #[test]
    fn leases_a_node_can_hold() {
        let ok = |a: [u8; 4], m: [u8; 4]| check_lease(a.into(), m.into());
        assert_eq!(ok([10, 0, 2, 15], [255, 255, 255, 0]), Ok(24));
        assert_eq!(ok([10, 128, 0, 7], [255, 255, 255, 255]), Ok(32), "GCP's /32");
        for (a, m) in [
            ([10, 0, 2, 15], [0, 0, 0, 0]),
            ([10, 0, 2, 15], [255, 0, 255, 0]),
            ([0, 0, 0, 0], [255, 255, 255, 0]),
            ([127, 0, 0, 1], [255, 0, 0, 0]),
            ([224, 0, 0, 1], [255, 255, 255, 0]),
            ([255, 255, 255, 255], [255, 255, 255, 0]),
            ([169, 254, 1, 1], [255, 255, 0, 0]),
            ([250, 1, 1, 1], [255, 255, 255, 0]),
            ([10, 0, 2, 0], [255, 255, 255, 0]),
            ([10, 0, 2, 255], [255, 255, 255, 0]),
        ] {
            assert!(ok(a, m).is_err(), "{a:?} {m:?}");
        }
    }
}
