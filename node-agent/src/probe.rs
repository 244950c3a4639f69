//! The connectivity probe: a UDP echo that answers with the source address
//! it saw, and a sender that checks the answer is its own address — so a
//! pass means the peer was reached and no NAT rewrote us on the way.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub const PORT: u16 = 7946;

/// Answers every datagram with "seen SRC_IP".
pub fn serve(listen: SocketAddr) -> Result<()> {
    let sock = UdpSocket::bind(listen).with_context(|| format!("binding {listen}"))?;
    let mut buf = [0u8; 512];
    loop {
        let (_, from) = sock.recv_from(&mut buf)?;
        let _ = sock.send_to(format!("seen {}", from.ip()).as_bytes(), from);
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ours: Ipv4Addr,
    pub seen_as: Ipv4Addr,
}

/// Sends to `target` until it answers or `tries` run out.
pub fn send(target: SocketAddr, tries: u32) -> Result<Outcome> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(target).with_context(|| format!("no route to {target}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    let ours = match sock.local_addr()?.ip() {
        std::net::IpAddr::V4(ip) => ip,
        other => bail!("probe source {other} is not IPv4"),
    };
    let mut buf = [0u8; 512];
    for _ in 0..tries {
        let _ = sock.send(b"probe");
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            let seen = text.strip_prefix("seen ").and_then(|s| s.trim().parse().ok()).context("bad probe answer")?;
            return Ok(Outcome { ours, seen_as: seen });
        }
    }
    bail!("{target} did not answer {tries} probes")
}

/// A transport protocol the port probes speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Transport {
    Tcp,
    Udp,
}

/// Serves `ports` on TCP and UDP alike, as Kubernetes' network-policy tests'
/// pods do: a TCP connection gets "seen SRC_IP" and is closed; a datagram
/// gets the same answer.
pub fn serve_ports(ports: &[u16]) -> Result<()> {
    let mut threads = Vec::new();
    for &port in ports {
        let tcp = std::net::TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("binding TCP {port}"))?;
        let udp = UdpSocket::bind(("0.0.0.0", port)).with_context(|| format!("binding UDP {port}"))?;
        threads.push(std::thread::spawn(move || {
            for conn in tcp.incoming().flatten() {
                if let Ok(peer) = conn.peer_addr() {
                    let _ = std::io::Write::write_all(&mut &conn, format!("seen {}\n", peer.ip()).as_bytes());
                }
            }
        }));
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((_, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(format!("seen {}", from.ip()).as_bytes(), from);
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    bail!("the port servers stopped")
}

/// Whether `target` answers over `transport` within `timeout`, and saw us
/// as the address we sent from.
pub fn reaches(target: SocketAddr, transport: Transport, timeout: Duration) -> bool {
    let answer = match transport {
        Transport::Tcp => tcp_answer(target, timeout),
        Transport::Udp => udp_answer(target, timeout),
    };
    answer.is_some_and(|(ours, seen)| ours == seen)
}

fn tcp_answer(target: SocketAddr, timeout: Duration) -> Option<(std::net::IpAddr, std::net::IpAddr)> {
    use std::io::Read;
    let conn = std::net::TcpStream::connect_timeout(&target, timeout).ok()?;
    conn.set_read_timeout(Some(timeout)).ok()?;
    let ours = conn.local_addr().ok()?.ip();
    let mut text = String::new();
    conn.take(128).read_to_string(&mut text).ok()?;
    Some((ours, text.trim().strip_prefix("seen ")?.parse().ok()?))
}

fn udp_answer(target: SocketAddr, timeout: Duration) -> Option<(std::net::IpAddr, std::net::IpAddr)> {
    let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect(target).ok()?;
    let ours = sock.local_addr().ok()?.ip();
    // A few datagrams within the timeout: one may be lost on a first ARP.
    let tries = 4;
    sock.set_read_timeout(Some(timeout / tries)).ok()?;
    let mut buf = [0u8; 512];
    for _ in 0..tries {
        let _ = sock.send(b"probe");
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            return Some((ours, text.trim().strip_prefix("seen ")?.parse().ok()?));
        }
    }
    None
}

/// Probes every target at once; prints `ADDR:PORT/PROTO yes|no` per
/// target, in the order given.
pub fn matrix(targets: &[(SocketAddr, Transport)], timeout: Duration) -> Result<()> {
    let handles: Vec<_> = targets.iter().map(|&(t, tr)| std::thread::spawn(move || reaches(t, tr, timeout))).collect();
    for ((target, transport), h) in targets.iter().zip(handles) {
        let ok = h.join().unwrap_or(false);
        let proto = if *transport == Transport::Tcp { "TCP" } else { "UDP" };
        println!("{target}/{proto} {}", if ok { "yes" } else { "no" });
    }
    Ok(())
}
