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
