//! Times the agent's first etcd request (a new client: TLS handshake with
//! the node's certificate, then one range) several times in one process.
//! `bench/first-request.sh` runs it natively and under QEMU's translator:
//! under TCG the first round also pays for translating the code it runs for
//! the first time, the later rounds run code already translated.
//!
//!   first_request ENDPOINT CA CERT KEY ROUNDS   (prints one time per round, ms)

use anyhow::{Context, Result};
use node_agent::config::ClientTls;
use node_agent::etcd::Client;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, ca, cert, key, rounds] = args.as_slice() else {
        anyhow::bail!("usage: first_request ENDPOINT CA CERT KEY ROUNDS");
    };
    let read = |p: &String| std::fs::read_to_string(p).with_context(|| format!("reading {p}"));
    let tls = ClientTls { ca: read(ca)?, cert: read(cert)?, key: read(key)? };
    let rounds: u32 = rounds.parse().context("ROUNDS: not a number")?;
    node_agent::process::runtime()?.block_on(async {
        for _ in 0..rounds {
            let start = std::time::Instant::now();
            let client = Client::new(std::slice::from_ref(endpoint), Some(&tls))?;
            client.get("/imgbuild-bench/first-request").await?;
            println!("{:.3}", start.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(())
    })
}
