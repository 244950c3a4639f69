//! Retrying with capped exponential backoff: a node keeps trying until the
//! cluster is there (etcd started later, a network blip), logging each miss.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;

use crate::log;

pub const FIRST: Duration = Duration::from_millis(200);
pub const MAX: Duration = Duration::from_secs(5);

pub async fn retry<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = super::Backoff::new(FIRST, MAX);
    let mut failures = 0u32;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                failures += 1;
                // The first miss and then every tenth: waiting for etcd is normal.
                if failures == 1 || failures % 10 == 0 {
                    log::warn(&format!("{what} (try {failures}, retrying): {e:#}"));
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}
