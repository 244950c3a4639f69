//! Clouds' user data, as Ignition's providers read it (chosen by
//! `ignition.platform.id=` with Ignition's platform names): each cloud's
//! metadata service at 169.254.169.254 with the headers it requires, and
//! OpenStack's config drive first (`drive`). Connection errors and 5xx
//! answers are retried with backoff while the link comes up (Ignition
//! retries those forever; here for a bounded time, then the next source);
//! a 404 means the cloud holds no user data for this machine.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;

use crate::log;

/// Where every supported cloud serves its metadata.
pub const METADATA: &str = "http://169.254.169.254";

/// A cloud whose user data we can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Aws,
    Gcp,
    Azure,
    OpenStack,
    DigitalOcean,
    Hetzner,
}

impl Platform {
    /// From Ignition's `ignition.platform.id` (`ec2` is Ignition's old name for AWS).
    pub fn from_id(id: &str) -> Option<Self> {
        Some(match id {
            "aws" | "ec2" => Platform::Aws,
            "gcp" => Platform::Gcp,
            "azure" => Platform::Azure,
            "openstack" => Platform::OpenStack,
            "digitalocean" => Platform::DigitalOcean,
            "hetzner" => Platform::Hetzner,
            _ => return None,
        })
    }

    pub fn id(self) -> &'static str {
        match self {
            Platform::Aws => "aws",
            Platform::Gcp => "gcp",
            Platform::Azure => "azure",
            Platform::OpenStack => "openstack",
            Platform::DigitalOcean => "digitalocean",
            Platform::Hetzner => "hetzner",
        }
    }

    /// The user data's path and query under the metadata base URL.
    pub fn path(self) -> &'static str {
        match self {
            Platform::Aws => "/latest/user-data",
            Platform::Gcp => "/computeMetadata/v1/instance/attributes/user-data",
            Platform::Azure => "/metadata/instance/compute/userData?api-version=2021-01-01&format=text",
            Platform::OpenStack => "/openstack/latest/user_data",
            Platform::DigitalOcean => "/metadata/v1/user-data",
            Platform::Hetzner => "/hetzner/v1/userdata",
        }
    }

    /// Headers the service refuses requests without (AWS's token comes from
    /// its own request first).
    fn headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Platform::Gcp => &[("Metadata-Flavor", "Google")],
            Platform::Azure => &[("Metadata", "true")],
            _ => &[],
        }
    }

    /// Answers that mean "not yet" on this cloud, beyond 5xx: Azure's
    /// service answers 404, 410 or 429 while it is still being set up.
    fn retry_status(self, status: u16) -> bool {
        status >= 500 || (self == Platform::Azure && matches!(status, 404 | 410 | 429))
    }
}

/// How long one source keeps retrying before the next is tried (the boot
/// loop comes back to it).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The cloud's user data, `None` when it holds none (404, or an empty body).
pub fn user_data(platform: Platform, base: &str, patience: Duration, limit: u64) -> Result<Option<Vec<u8>>> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        // Metadata services answer directly; a redirect is not theirs.
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let deadline = Instant::now() + patience;
    let mut delay = Duration::from_millis(200);
    loop {
        let err = match attempt(&client, platform, base, limit) {
            Ok(Attempt::Data(d)) if d.is_empty() => return Ok(None),
            Ok(Attempt::Data(d)) => return decode(platform, d).map(Some),
            Ok(Attempt::NotFound) => return Ok(None),
            Ok(Attempt::Retry(why)) | Err(Retryable(why)) => why,
        };
        if Instant::now() + delay > deadline {
            bail!("{} metadata at {base}: {err}; gave up after {}s", platform.id(), patience.as_secs());
        }
        log::warn(&format!("{} metadata: {err}; retrying", platform.id()));
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

enum Attempt {
    Data(Vec<u8>),
    NotFound,
    Retry(String),
}

/// A failure worth another try (the link, the service not up yet).
struct Retryable(String);

fn attempt(
    client: &reqwest::blocking::Client,
    platform: Platform,
    base: &str,
    limit: u64,
) -> std::result::Result<Attempt, Retryable> {
    let chain = |e: &reqwest::Error| Retryable(imgbuild_ignition::apply::error_chain(e));
    let mut req = client.get(format!("{base}{}", platform.path()));
    if platform == Platform::Aws {
        // IMDSv2's token; a service that refuses the PUT outright (IMDSv1
        // only) is asked without one, as Ignition does.
        match aws_token(client, base) {
            Ok(token) => req = req.header("X-aws-ec2-metadata-token", token),
            Err(e) if e.status().is_some_and(|s| s.is_client_error()) => {}
            Err(e) => return Err(chain(&e.without_url())),
        }
    }
    for (k, v) in platform.headers() {
        req = req.header(*k, *v);
    }
    let resp = req.send().map_err(|e| chain(&e.without_url()))?;
    let status = resp.status().as_u16();
    match status {
        200 | 204 => read_limited(resp, limit).map(Attempt::Data).map_err(Retryable),
        s if platform.retry_status(s) => Ok(Attempt::Retry(format!("HTTP {s}"))),
        404 => Ok(Attempt::NotFound),
        // 401, 403, ...: asked again later, with the reason logged.
        s => Ok(Attempt::Retry(format!("HTTP {s} (unexpected answer)"))),
    }
}

/// IMDSv2's session token, by PUT (a few dozen bytes; more is not one).
fn aws_token(client: &reqwest::blocking::Client, base: &str) -> reqwest::Result<String> {
    use std::io::Read;
    let resp = client
        .put(format!("{base}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "300")
        .send()?
        .error_for_status()?;
    let mut token = String::new();
    let _ = resp.take(4096).read_to_string(&mut token);
    Ok(token.trim().to_owned())
}

fn read_limited(resp: reqwest::blocking::Response, limit: u64) -> std::result::Result<Vec<u8>, String> {
    super::read_at_most(resp, limit)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the user data is larger than the limit of {limit} bytes"))
}

/// Azure's service sends the user data base64-encoded; the others as is.
fn decode(platform: Platform, data: Vec<u8>) -> Result<Vec<u8>> {
    if platform != Platform::Azure {
        return Ok(data);
    }
    let text: Vec<u8> = data.into_iter().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| anyhow!("azure userData is not base64: {e}"))
        .context("decoding the user data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_by_ignition_name() {
        for id in ["aws", "gcp", "azure", "openstack", "digitalocean", "hetzner"] {
            assert_eq!(Platform::from_id(id).unwrap().id(), id);
        }
        assert_eq!(Platform::from_id("ec2"), Some(Platform::Aws));
        assert_eq!(Platform::from_id("qemu"), None);
    }

    #[test]
    fn azure_decodes_base64() {
        assert_eq!(decode(Platform::Azure, b"e30=\n".to_vec()).unwrap(), b"{}");
        assert!(decode(Platform::Azure, b"{}".to_vec()).is_err());
        assert_eq!(decode(Platform::Gcp, b"{}".to_vec()).unwrap(), b"{}");
    }

    /// A loopback stand-in for one cloud's metadata service that answers
    /// only requests made exactly as that cloud documents (path, query,
    /// headers), first `busy` times with `busy_status`, then `answer`. It
    /// starts listening `late` after the port is chosen, as a service
    /// behind a link that is still coming up.
    fn service(
        platform: Platform,
        answer: (u16, &'static str),
        busy: usize,
        busy_status: u16,
        late: Duration,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{BufRead, BufReader, Write};
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        std::thread::spawn(move || {
            std::thread::sleep(late);
            let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
            for stream in l.incoming().flatten() {
                let mut r = BufReader::new(&stream);
                let mut first = String::new();
                r.read_line(&mut first).unwrap();
                let mut headers = String::new();
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    headers.push_str(&line.to_ascii_lowercase());
                    line.clear();
                }
                let want_get = format!("GET {} HTTP/1.1", platform.path());
                let required = platform
                    .headers()
                    .iter()
                    .all(|(k, v)| headers.contains(&format!("{}: {}", k.to_ascii_lowercase(), v.to_ascii_lowercase())));
                let (code, body) = if platform == Platform::Aws && first.starts_with("PUT /latest/api/token ") {
                    if headers.contains("x-aws-ec2-metadata-token-ttl-seconds: 300") {
                        (200, "tok123")
                    } else {
                        (400, "")
                    }
                } else if !first.starts_with(&want_get) || !required {
                    (400, "")
                } else if platform == Platform::Aws && !headers.contains("x-aws-ec2-metadata-token: tok123") {
                    (401, "")
                } else if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < busy {
                    (busy_status, "")
                } else {
                    answer
                };
                let mut s = &stream;
                let _ =
                    write!(s, "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            }
        });
        (format!("http://127.0.0.1:{port}"), served)
    }

    const CONFIG: &str = "{\"ignition\":{\"version\":\"3.3.0\"}}";

    /// Every cloud, exactly as documented: its user data arrives even
    /// while the link comes up late and the service first says it is busy.
    #[test]
    fn each_cloud_as_documented_through_a_late_link_and_a_busy_service() {
        for p in [
            Platform::Aws,
            Platform::Gcp,
            Platform::Azure,
            Platform::OpenStack,
            Platform::DigitalOcean,
            Platform::Hetzner,
        ] {
            let body = if p == Platform::Azure { "eyJpZ25pdGlvbiI6eyJ2ZXJzaW9uIjoiMy4zLjAifX0=" } else { CONFIG };
            let busy_status = if p == Platform::Azure { 404 } else { 503 };
            let (base, served) = service(p, (200, body), 1, busy_status, Duration::from_millis(300));
            let got = user_data(p, &base, Duration::from_secs(30), 1 << 20).unwrap();
            assert_eq!(got.as_deref(), Some(CONFIG.as_bytes()), "{p:?}");
            assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 2, "{p:?}: a busy answer, then the data");
        }
    }

    /// A 404 is "no user data" (but on Azure "not yet"); an empty body too.
    #[test]
    fn no_user_data_and_bounded_patience() {
        for p in [Platform::Gcp, Platform::OpenStack, Platform::DigitalOcean, Platform::Hetzner, Platform::Aws] {
            let (base, _) = service(p, (404, ""), 0, 503, Duration::ZERO);
            assert_eq!(user_data(p, &base, Duration::from_secs(10), 1 << 20).unwrap(), None, "{p:?}");
        }
        let (base, _) = service(Platform::Azure, (200, ""), 0, 503, Duration::ZERO);
        assert_eq!(user_data(Platform::Azure, &base, Duration::from_secs(10), 1 << 20).unwrap(), None);
        let (base, _) = service(Platform::Azure, (404, ""), 0, 503, Duration::ZERO);
        let e = user_data(Platform::Azure, &base, Duration::from_secs(2), 1 << 20).unwrap_err();
        assert!(format!("{e:#}").contains("HTTP 404; gave up after 2s"), "{e:#}");
        // Without the required header the service refuses: the request must carry it.
        let (base, _) = service(Platform::Gcp, (200, CONFIG), 0, 503, Duration::ZERO);
        // The service binds in its own thread: wait for it, as user_data's retries do.
        let addr = base.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(&addr).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let plain = reqwest::blocking::get(format!("{base}{}", Platform::Gcp.path())).unwrap();
        assert_eq!(plain.status().as_u16(), 400);
        // Too big is refused, not truncated.
        let (base, _) = service(Platform::Hetzner, (200, CONFIG), 0, 503, Duration::ZERO);
        let e = user_data(Platform::Hetzner, &base, Duration::from_secs(1), 8).unwrap_err();
        assert!(format!("{e:#}").contains("larger than the limit of 8 bytes"), "{e:#}");
    }
}
