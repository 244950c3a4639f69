//! Just enough HTTP/1.1 for `imgbuild serve` (GET and HEAD, no bodies),
//! written to stay up under hostile clients: one thread per connection but
//! a bounded number of them (in all and per client address), read and
//! write timeouts and a deadline per connection, a size limit on the
//! request head, and one request read at a time however many a client
//! pipelines, so memory stays bounded whatever clients send.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections served at once, in all and from one client (an IPv4
/// address, an IPv6 /64).
pub const MAX_CONNECTIONS: usize = 512;
pub const MAX_PER_CLIENT: usize = 16;
/// The request line and headers together.
pub const MAX_HEAD: u64 = 8 << 10;
/// Waiting for a request, or for a client to take the next bytes.
pub const IDLE: Duration = Duration::from_secs(10);
/// Everything one connection may take, however slowly it reads.
pub const DEADLINE: Duration = Duration::from_secs(600);
/// Requests on one kept-alive connection.
pub const MAX_REQUESTS: usize = 100;

/// A request as the router sees it.
pub struct Request {
    /// As the client sent it (only GET and HEAD are served).
    pub method: String,
    pub head_only: bool,
    pub get: bool,
    pub target: String,
    pub host: Option<String>,
    /// The first `Range` header, and whether an `If-Range` came with it
    /// (we send no validators, so such a range is never honoured).
    pub range: Option<String>,
    pub if_range: bool,
}

/// What to send back.
pub enum Body {
    Bytes(Vec<u8>),
    File(std::fs::File, u64),
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Body,
    /// Set by `with_range`: the part of a file body sent.
    pub part: Option<Part>,
}

/// What a `Range` header selects of a `total`-byte file (RFC 9110 §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Bytes `start..=end`.
    Range { start: u64, end: u64, total: u64 },
    /// No byte of the file: 416.
    Unsatisfiable { total: u64 },
}

impl Response {
    pub fn text(status: u16, text: &str) -> Self {
        Response { status, content_type: "text/plain", body: Body::Bytes(text.as_bytes().to_vec()), part: None }
    }

    pub fn file(content_type: &'static str, f: std::fs::File, len: u64) -> Self {
        Response { status: 200, content_type, body: Body::File(f, len), part: None }
    }

    /// A whole-file 200 narrowed to what the request's `Range` asks for
    /// (206, or 416 when nothing of the file is asked for); any other
    /// response, a request without a usable range, or one with `If-Range`
    /// stays as it is.
    pub fn with_range(mut self, req: &Request) -> Self {
        let (Some(range), false, 200, Body::File(_, total)) = (&req.range, req.if_range, self.status, &self.body)
        else {
            return self;
        };
        self.part = part(range, *total);
        match self.part {
            Some(Part::Range { .. }) => self.status = 206,
            Some(Part::Unsatisfiable { total }) => {
                self = Response::text(416, "range not satisfiable\n");
                self.part = Some(Part::Unsatisfiable { total });
            }
            None => {}
        }
        self
    }

    pub fn len(&self) -> u64 {
        match (&self.body, self.part) {
            (Body::File(..), Some(Part::Range { start, end, .. })) => end - start + 1,
            (Body::Bytes(b), _) => b.len() as u64,
            (Body::File(_, len), _) => *len,
        }
    }
}

/// The part of a `total`-byte body a `Range` value asks for: one range of
/// bytes (`a-b`, `a-`, `-n`). `None`, to send it whole, for anything else:
/// several ranges, another unit, bad syntax (RFC 9110 lets a server ignore
/// those).
pub fn part(range: &str, total: u64) -> Option<Part> {
    let (unit, spec) = range.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (a, b) = spec.trim().split_once('-')?;
    let number = |s: &str| -> Option<u64> { s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok()).flatten() };
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        (false, true) => (number(a)?, u64::MAX),
        (false, false) => (number(a)?, number(b)?),
        (true, false) => match number(b)? {
            0 => return Some(Part::Unsatisfiable { total }),
            n => (total.saturating_sub(n), u64::MAX),
        },
        (true, true) => return None,
    };
    if end < start {
        return None;
    }
    if start >= total {
        return Some(Part::Unsatisfiable { total });
    }
    Some(Part::Range { start, end: end.min(total - 1), total })
}

/// Serves `handle` on `listener` until the process ends.
pub fn run<F>(listener: TcpListener, handle: F) -> io::Result<()>
where
    F: Fn(&Request, SocketAddr) -> Response + Send + Sync + 'static,
{
    raise_file_limit();
    let handle = Arc::new(handle);
    let slots = Arc::new(Slots::default());
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            // Out of descriptors or a reset before accept: keep serving.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let Some(slot) = Slots::take(&slots, peer.ip(), &stream) else {
            refuse_busy(stream, peer);
            continue;
        };
        let handle = handle.clone();
        let spawned = std::thread::Builder::new().stack_size(256 << 10).spawn(move || {
            let _ = connection(stream, peer, &slot, &*handle);
        });
        if spawned.is_err() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Each connection holds three descriptors (the socket, the reader's and
/// the registry's copies): lift the soft limit to the hard one so a full
/// house never starves `accept`.
fn raise_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

/// Whom a connection counts against: its IPv4 address, or its IPv6 /64
/// (one host can hold a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::V6(o.into())
        }
    }
}

/// One open connection as the registry knows it.
struct Conn {
    client: IpAddr,
    /// To close it when a newcomer needs its slot.
    stream: TcpStream,
    /// Waiting for (or reading) a request head: it may be closed for a newcomer.
    idle: Arc<AtomicBool>,
}

/// The open connections, bounded in all and per client. At the bound, a
/// connection that is only waiting for its next request (kept alive, or
/// trickling a request head in) is closed to make room, as busy web
/// servers do: holding connections open costs a client its slots, not
/// everyone else theirs.
#[derive(Default)]
struct Slots(Mutex<(u64, HashMap<u64, Conn>)>);

/// One taken slot, given back when the connection ends.
struct Slot {
    slots: Arc<Slots>,
    id: u64,
    idle: Arc<AtomicBool>,
}

impl Slots {
    fn take(slots: &Arc<Slots>, ip: IpAddr, stream: &TcpStream) -> Option<Slot> {
        let client = client_key(ip);
        let mut g = slots.0.lock().expect("not poisoned");
        let mine = g.1.values().filter(|c| c.client == client).count();
        if mine >= MAX_PER_CLIENT {
            evict(&mut g.1, Some(client))?;
        } else if g.1.len() >= MAX_CONNECTIONS {
            evict(&mut g.1, None)?;
        }
        g.0 += 1;
        let id = g.0;
        let idle = Arc::new(AtomicBool::new(true));
        g.1.insert(id, Conn { client, stream: stream.try_clone().ok()?, idle: idle.clone() });
        Some(Slot { slots: slots.clone(), id, idle })
    }
}

/// Closes one idle connection (of `client`, or of whoever holds the most),
/// and forgets it; `None` when every one is busy.
fn evict(conns: &mut HashMap<u64, Conn>, client: Option<IpAddr>) -> Option<()> {
    let mut per: HashMap<IpAddr, usize> = HashMap::new();
    for c in conns.values() {
        *per.entry(c.client).or_default() += 1;
    }
    let candidates =
        conns.iter().filter(|(_, c)| c.idle.load(Ordering::Relaxed) && client.is_none_or(|k| c.client == k));
    let (&id, _) = candidates.max_by_key(|(id, c)| (per[&c.client], std::cmp::Reverse(**id)))?;
    let conn = conns.remove(&id).expect("found");
    let _ = conn.stream.shutdown(Shutdown::Both);
    Some(())
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.0.lock().expect("not poisoned").1.remove(&self.id);
    }
}

fn refuse_busy(mut stream: TcpStream, peer: SocketAddr) {
    eprintln!("imgbuild: {peer} - - 503 0 (no free connection)");
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

fn connection<F>(stream: TcpStream, peer: SocketAddr, slot: &Slot, handle: &F) -> io::Result<()>
where
    F: Fn(&Request, SocketAddr) -> Response,
{
    let deadline = Instant::now() + DEADLINE;
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(IDLE))?;
    let mut reader =
        BufReader::with_capacity(MAX_HEAD as usize, Timed { stream: stream.try_clone()?, until: deadline });
    let mut writer = stream;
    for served in 1..=MAX_REQUESTS {
        // A request head must arrive whole within IDLE, however slowly it trickles in.
        reader.get_mut().until = deadline.min(Instant::now() + IDLE);
        slot.idle.store(true, Ordering::Relaxed);
        let head = read_head(&mut reader);
        slot.idle.store(false, Ordering::Relaxed);
        let req = match head {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(Bad(status, why)) => {
                eprintln!("imgbuild: {peer} - - {status} 0 ({})", why.trim_end());
                let _ = send(&mut writer, &Response::text(status, why), false, false, deadline);
                return Ok(());
            }
        };
        let keep = served < MAX_REQUESTS && req.keep_alive;
        let resp = if req.has_body {
            eprintln!("imgbuild: {peer} {} - 400 0 (a request body)", req.request.method);
            Response::text(400, "request bodies are not accepted\n")
        } else {
            handle(&req.request, peer)
        };
        send(&mut writer, &resp, req.request.head_only, keep && !req.has_body, deadline)?;
        if !keep || req.has_body {
            return Ok(());
        }
    }
    Ok(())
}

/// A stream whose reads fail once `until` has passed.
struct Timed {
    stream: TcpStream,
    until: Instant,
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request head deadline"));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

struct Head {
    request: Request,
    keep_alive: bool,
    has_body: bool,
}

/// A refusal: status and reason.
struct Bad(u16, &'static str);

/// Reads one request head; `None` when the client closed (or went idle)
/// between requests.
fn read_head(reader: &mut BufReader<Timed>) -> Result<Option<Head>, Bad> {
    let mut limited = reader.take(MAX_HEAD);
    let mut line = Vec::new();
    match limited.read_until(b'\n', &mut line) {
        Ok(0) | Err(_) if line.is_empty() => return Ok(None),
        _ => {}
    }
    let first = std::str::from_utf8(trim_eol(&line)).map_err(|_| Bad(400, "bad request line\n"))?.to_owned();
    let mut parts = first.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if v.starts_with("HTTP/1.") => (m, t, v),
        _ if !line.ends_with(b"\n") => return Err(Bad(414, "request line too long\n")),
        _ => return Err(Bad(400, "bad request line\n")),
    };
    let mut head = Head {
        request: Request {
            method: method.chars().filter(char::is_ascii_alphabetic).take(16).collect(),
            head_only: method == "HEAD",
            get: method == "GET" || method == "HEAD",
            target: target.to_owned(),
            host: None,
            range: None,
            if_range: false,
        },
        keep_alive: version == "HTTP/1.1",
        has_body: false,
    };
    loop {
        line.clear();
        match limited.read_until(b'\n', &mut line) {
            Ok(_) if line.ends_with(b"\n") => {}
            Ok(_) if limited.limit() == 0 => return Err(Bad(431, "request head too large\n")),
            _ => return Err(Bad(400, "incomplete request head\n")),
        }
        let l = trim_eol(&line);
        if l.is_empty() {
            return Ok(Some(head));
        }
        header(&mut head, l)?;
    }
}

fn header(head: &mut Head, line: &[u8]) -> Result<(), Bad> {
    let text = std::str::from_utf8(line).map_err(|_| Bad(400, "bad header\n"))?;
    let (name, value) = text.split_once(':').ok_or(Bad(400, "bad header\n"))?;
    // A header name is an RFC 9110 token: no spaces, no separators.
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(tchar) {
        return Err(Bad(400, "bad header name\n"));
    }
    let value = value.trim();
    match name.to_ascii_lowercase().as_str() {
        "host" if head.request.host.is_some() => return Err(Bad(400, "more than one Host header\n")),
        "host" => head.request.host = Some(value.to_owned()),
        "connection" if value.eq_ignore_ascii_case("close") => head.keep_alive = false,
        "connection" if value.eq_ignore_ascii_case("keep-alive") => head.keep_alive = true,
        "range" if head.request.range.is_none() => head.request.range = Some(value.to_owned()),
        "if-range" => head.request.if_range = true,
        "content-length" => head.has_body |= value != "0",
        "transfer-encoding" => head.has_body = true,
        _ => {}
    }
    Ok(())
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        416 => "Range Not Satisfiable",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// Writes a response; a body is sent in chunks, each under the idle
/// timeout, all under the connection's deadline.
fn send(w: &mut TcpStream, resp: &Response, head_only: bool, keep: bool, deadline: Instant) -> io::Result<()> {
    let ranges = match (&resp.body, resp.part) {
        (_, Some(Part::Range { start, end, total })) => {
            format!("Accept-Ranges: bytes\r\nContent-Range: bytes {start}-{end}/{total}\r\n")
        }
        (_, Some(Part::Unsatisfiable { total })) => format!("Content-Range: bytes */{total}\r\n"),
        (Body::File(..), None) => "Accept-Ranges: bytes\r\n".to_owned(),
        (Body::Bytes(_), None) => String::new(),
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{ranges}Connection: {}\r\n\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.len(),
        if keep { "keep-alive" } else { "close" }
    );
    w.write_all(head.as_bytes())?;
    if head_only {
        return Ok(());
    }
    match &resp.body {
        Body::Bytes(b) => w.write_all(b),
        Body::File(f, _) => {
            let start = match resp.part {
                Some(Part::Range { start, .. }) => start,
                _ => 0,
            };
            send_file(w, f, start, resp.len(), deadline)
        }
    }
}

/// A file's bytes from the page cache straight to the socket (sendfile: no
/// copy through us, as nginx serves), 64 KiB at a time so the deadline is
/// checked; a chunk that makes no progress within the socket's write
/// timeout fails. A file that shrank under us ends the connection: the
/// Content-Length sent can no longer be kept.
fn send_file(w: &TcpStream, f: &std::fs::File, start: u64, len: u64, deadline: Instant) -> io::Result<()> {
    // Small enough that a client reading a byte at a time cannot hold a
    // call (and the connection) long past the deadline.
    const CHUNK: u64 = 64 << 10;
    let (mut offset, end) = (start, start + len);
    while offset < end {
        if Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connection deadline"));
        }
        let count = (end - offset).min(CHUNK) as usize;
        let n = rustix::fs::sendfile(w, f, Some(&mut offset), count)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while being sent"));
        }
    }
    Ok(())
}
