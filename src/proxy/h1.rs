//! The HTTP/1.1 fast front end of the plain-TCP proxy listener, and its transport.
//!
//! Most calls a sidecar carries are HTTP/1.1 requests without a body or with a small one. For
//! those, this loop reads the head with `httparse` (and a `Content-Length` body of at most
//! [`FAST_BODY_MAX`], whole, within the body timeouts), runs the pipeline's phases (`pipeline.rs`) with [`FastTransport`]: it writes the
//! upstream request itself on a connection from this worker's own pool (plain TCP, or TLS with the
//! route's settings for an `https` upstream), reads the answer's head by the rules of `message.rs`,
//! and passes the body through as bytes. No HTTP library object is built for the answer, no task
//! or channel sits between the two sockets, and an idle connection keeps no buffer.
//!
//! Anything else goes to the general (hyper) path, with the bytes read so far, for the rest of the
//! connection: a request with a chunked body or one over [`FAST_BODY_MAX`] or `max_body_bytes`,
//! `Expect`, `Upgrade`, a `Connection` option other than `close` / `keep-alive`, HTTP/1.0, a
//! target not in origin form, a head `httparse` does not accept or that is over the limits (hyper
//! answers 400 / 431), HTTP/2, `proxy.fast_path = false`, and routes whose upstream is reached
//! through a connector or whose profile rewrites the payload. The hand-over happens before anything with an effect (no token is fetched,
//! nothing is sent), so the general path serves the request as if it had seen it first.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::body::BodyError;
use super::message::{
    self, invalid_answer, Framing, StatusKind, MAX_ANSWER_HEAD, MAX_ANSWER_HEADERS,
    MAX_INTERIM_ANSWERS,
};
use super::pipeline::{AttemptBody, CallerBody, Outbound};
use super::upstream::{POOL_IDLE_TIMEOUT, POOL_MAX_IDLE_PER_HOST};
use super::{resolve, ConnCtx, Proxy, Resolved};
use crate::error::{ErrorCode, ProxyError};
use crate::serve::Limits;

/// Most header fields the fast path parses in one request head; a listener that allows more
/// leaves such heads to the general path.
const MAX_FAST_HEADERS: usize = 128;
/// Read buffer growth step (request heads and answer bytes).
const READ_CHUNK: usize = 4096;
/// Largest request body the fast path reads whole (with `Content-Length`); a larger one goes to
/// the general path, which streams it.
const FAST_BODY_MAX: u64 = 64 * 1024;

/// How one connection ended on the fast path.
pub enum Ended {
    /// Closed (by either side, a timeout or shutdown).
    Closed,
    /// The general path takes the connection, starting with these bytes.
    Handover(TcpStream, Bytes),
}

/// One parsed request head.
pub(crate) struct Head {
    pub(crate) parts: http::request::Parts,
    /// Bytes of the head in the buffer.
    pub(crate) len: usize,
    /// The caller sent `Connection: close`.
    pub(crate) close: bool,
    /// The caller takes trailer fields (`TE: trailers`).
    pub(crate) trailers: bool,
    /// The body's declared length (`Content-Length`; 0 without one).
    pub(crate) body_len: u64,
}

pub(crate) enum Parse {
    Partial,
    Handover,
    Done(Box<Head>),
}

/// Parses a request head the fast path can serve, or says why not.
pub(crate) fn parse_request(buf: &[u8], max_headers: usize) -> Parse {
    if max_headers > MAX_FAST_HEADERS {
        return Parse::Handover;
    }
    // Left uninitialised: httparse writes the fields it finds (a 128-field array of empty
    // headers would be 4 KiB written per request).
    let mut storage =
        [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_FAST_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut storage[..max_headers]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(_) => return Parse::Handover,
    };
    if req.version != Some(1) {
        return Parse::Handover;
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Parse::Handover;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parse::Handover;
    };
    if method == Method::CONNECT || !path.starts_with('/') {
        return Parse::Handover;
    }
    let Ok(uri) = Uri::from_maybe_shared(Bytes::copy_from_slice(path.as_bytes())) else {
        return Parse::Handover;
    };
    // Room for what the sidecar adds (request id, X-Forwarded-For, the credential, Cache-Control),
    // so the map does not grow on the way.
    let mut headers = HeaderMap::with_capacity(req.headers.len() + 4);
    let mut close = false;
    let mut trailers = false;
    let mut lengths = 0;
    let mut body_len = 0;
    for h in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Parse::Handover;
        };
        let Ok(value) = HeaderValue::from_bytes(h.value) else {
            return Parse::Handover;
        };
        if name == http::header::CONTENT_LENGTH {
            // One value of digits: anything else is for the general path to judge.
            lengths += 1;
            match message::content_length([h.value]) {
                Ok(Some(n)) if lengths == 1 => body_len = n,
                _ => return Parse::Handover,
            }
        } else if name == http::header::TRANSFER_ENCODING
            || name == http::header::EXPECT
            || name == http::header::UPGRADE
        {
            return Parse::Handover;
        } else if name == http::header::CONNECTION {
            let o = message::connection_options([h.value]);
            // Options other than close / keep-alive name hop-by-hop fields: the general path
            // serves them.
            if !o.listed.is_empty() {
                return Parse::Handover;
            }
            close |= o.close;
        } else if name == http::header::TE {
            trailers |= message::accepts_trailers([h.value]);
        }
        headers.append(name, value);
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Parse::Done(Box::new(Head {
        parts,
        len,
        close,
        trailers,
        body_len,
    }))
}

enum Wait {
    Ready,
    Closed,
}

/// A connection's one timer (see [`wait_readable`]), shared by the waits of its requests: the wait
/// for the next request and the wait for the upstream's answer. It is set once and reset only when
/// it fires or when a wait's deadline is earlier than it, so a request usually registers no timer.
pub(crate) struct ConnTimer {
    /// Locked only while polled or reset (never across an await).
    sleep: std::sync::Mutex<Pin<Box<tokio::time::Sleep>>>,
    /// How far ahead it is set when it fires early: the shortest deadline a wait usually has, so
    /// a later wait seldom finds the timer due after its own deadline.
    period: Duration,
}

impl ConnTimer {
    fn new(period: Duration) -> Self {
        ConnTimer {
            sleep: std::sync::Mutex::new(Box::pin(tokio::time::sleep(period))),
            period,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pin<Box<tokio::time::Sleep>>> {
        // Nothing the lock guards can be left half-changed by a panic.
        self.sleep.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Readies the timer for a wait until `deadline`.
    fn arm(&self, deadline: Instant) {
        let mut sleep = self.lock();
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
    }

    /// Whether `deadline` has passed; polled from a wait until `deadline` (after [`Self::arm`]).
    /// When the timer fires early it is set again, no later than `period` ahead.
    fn poll_passed(&self, cx: &mut std::task::Context<'_>, deadline: Instant, exact: bool) -> bool {
        let mut sleep = self.lock();
        while std::future::Future::poll(sleep.as_mut(), cx).is_ready() {
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            let next = if exact {
                deadline
            } else {
                deadline.min(now + self.period)
            };
            sleep.as_mut().reset(next);
        }
        false
    }

    /// `fut`'s output, or `None` when `deadline` passes first.
    async fn within<F: std::future::Future>(&self, deadline: Instant, fut: F) -> Option<F::Output> {
        self.arm(deadline);
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(out) = fut.as_mut().poll(cx) {
                return std::task::Poll::Ready(Some(out));
            }
            if self.poll_passed(cx, deadline, false) {
                return std::task::Poll::Ready(None);
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// Waits until the caller sends something (no buffer is held meanwhile), until `deadline`, or
/// until `shutdown` (the connection's one registration with the shutdown signal) fires.
///
/// `timer` is the connection's one timer, set once and reset only when it fires: it must never be
/// due later than `deadline` (deadlines only move later over a connection's life). When it fires
/// before `deadline` (the connection was busy since it was set), it is set to `deadline` and the
/// wait goes on, so a request costs no timer registration.
async fn wait_readable<S>(
    stream: &TcpStream,
    deadline: Instant,
    timer: &ConnTimer,
    mut shutdown: Pin<&mut S>,
) -> Wait
where
    S: std::future::Future,
{
    timer.arm(deadline);
    let passed = std::future::poll_fn(|cx| {
        if timer.poll_passed(cx, deadline, true) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    });
    tokio::select! {
        // In this order, with no random start (which costs a random number per wait): the
        // caller's bytes first; the timer and shutdown are still seen while it sends nothing.
        biased;
        r = stream.readable() => if r.is_ok() { Wait::Ready } else { Wait::Closed },
        () = passed => Wait::Closed,
        _ = shutdown.as_mut() => Wait::Closed,
    }
}

/// Serves one plain-TCP proxy connection until it ends or needs the general path.
pub async fn serve(
    proxy: Arc<Proxy>,
    conn: Arc<ConnCtx>,
    mut stream: TcpStream,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) -> Ended {
    if *shutdown.borrow() {
        return Ended::Closed;
    }
    let stop = shutdown.changed();
    tokio::pin!(stop);
    // Due no later than the first wait's deadline; see `wait_readable`.
    let timer = ConnTimer::new(limits.header_read_timeout.min(limits.idle_timeout));
    let mut buf: Vec<u8> = Vec::new();
    let mut first = true;
    loop {
        // The next head: from accept (first request) or from its first byte, within the
        // header-read timeout; between requests, within the idle timeout.
        if buf.is_empty() {
            give_buf(std::mem::take(&mut buf));
            let within = if first {
                limits.header_read_timeout.min(limits.idle_timeout)
            } else {
                limits.idle_timeout
            };
            let deadline = Instant::now() + within;
            if let Wait::Closed = wait_readable(&stream, deadline, &timer, stop.as_mut()).await {
                return Ended::Closed;
            }
            buf = take_buf();
        }
        // Usually the whole head is there at once: the timer starts only when it is not.
        let mut deadline = None;
        let head = loop {
            match parse_request(&buf, limits.max_headers) {
                // Over the head limit: hyper answers 431.
                Parse::Done(h) if h.len > limits.max_head_bytes => {
                    return Ended::Handover(stream, Bytes::from(buf))
                }
                Parse::Done(h) => break h,
                Parse::Handover => return Ended::Handover(stream, Bytes::from(buf)),
                Parse::Partial if buf.len() > limits.max_head_bytes => {
                    return Ended::Handover(stream, Bytes::from(buf))
                }
                Parse::Partial => {}
            }
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            // Nothing of this request has come yet: a shutdown closes the connection (no request
            // is in flight), as it does in `wait_readable`.
            let idle = buf.is_empty();
            let d = match deadline {
                None => match stream.read_buf(&mut buf).now_or_never() {
                    Some(Ok(0)) | Some(Err(_)) => return Ended::Closed,
                    Some(Ok(_)) => continue,
                    None => *deadline.insert(Instant::now() + limits.header_read_timeout),
                },
                Some(d) => d,
            };
            let read = tokio::select! {
                biased;
                r = tokio::time::timeout_at(d, stream.read_buf(&mut buf)) => r,
                _ = stop.as_mut(), if idle => return Ended::Closed,
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return Ended::Closed,
                Ok(Ok(_)) => {}
                Err(_) => {
                    tracing::debug!("closing connection: request head not received in time");
                    return Ended::Closed;
                }
            }
        };
        first = false;
        // The head and the body it declared (read whole by `fast_one` when it keeps the
        // connection).
        let len = head.len + head.body_len as usize;
        // Boxed: the request's state lives only while it is served, so an idle connection's
        // task holds none of it.
        match in_box(|| {
            proxy.fast_one(
                &conn,
                head,
                &mut stream,
                &mut buf,
                limits.idle_timeout,
                &timer,
            )
        })
        .await
        {
            Step::KeepAlive => {}
            Step::Close => return Ended::Closed,
            Step::Handover => return Ended::Handover(stream, Bytes::from(buf)),
        }
        // Idle connections keep no buffer (it goes back to the worker's free list above).
        buf.drain(..len);
    }
}

/// `make()`'s future in a box, built where it will live: `Box::pin(make())` builds it on the
/// stack and copies all of it (about 4 KB for a request) into the box.
fn in_box<F: std::future::Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

/// What the connection does after one request.
enum Step {
    KeepAlive,
    Close,
    Handover,
}

/// An upstream answer's head, ready for the caller.
pub(crate) struct RespHead {
    pub(crate) status: u16,
    /// The head as the caller gets it (status line and headers, without the final blank line).
    pub(crate) bytes: Vec<u8>,
    pub(crate) framing: Framing,
    /// The upstream connection can carry another request after this answer.
    pub(crate) reusable: bool,
    /// The trailer fields the answer declared in its `Trailer` field (chunked answers only): the
    /// only ones a caller that takes trailers gets.
    pub(crate) trailer_names: Vec<HeaderName>,
}

pub(crate) enum RespParse {
    Partial,
    /// A 1xx answer of this many bytes: skipped, the final answer follows.
    Interim(usize),
    Done(RespHead, usize),
}

/// Parses an upstream answer's head for a request with `method`.
pub(crate) fn parse_response(
    buf: &[u8],
    method: &Method,
    close_caller: bool,
) -> Result<RespParse, ProxyError> {
    // Uninitialised, as for a request head.
    let mut storage =
        [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_ANSWER_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut storage,
    ) {
        Ok(httparse::Status::Complete(n)) if n > MAX_ANSWER_HEAD => {
            return Err(invalid_answer("the answer's head is too large"))
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_ANSWER_HEAD => {
            return Err(invalid_answer("the answer's head is too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(RespParse::Partial),
        Err(e) => return Err(invalid_answer(&format!("invalid answer head: {e}"))),
    };
    let status = resp.code.unwrap_or(0);
    if message::answer_status(status)? == StatusKind::Interim {
        return Ok(RespParse::Interim(len));
    }
    let http11 = resp.version == Some(1);
    // One pass marks the framing fields (at most 128 fields: one bit each).
    let (mut conn_at, mut length_at, mut coding_at) = (0u128, 0u128, 0u128);
    for (i, h) in resp.headers.iter().enumerate() {
        let n = h.name.as_bytes();
        let bit = 1u128 << i;
        match n.len() {
            10 if n.eq_ignore_ascii_case(b"connection") => conn_at |= bit,
            14 if n.eq_ignore_ascii_case(b"content-length") => length_at |= bit,
            17 if n.eq_ignore_ascii_case(b"transfer-encoding") => coding_at |= bit,
            _ => {}
        }
    }
    let headers = &*resp.headers;
    let values = |mut at: u128| {
        std::iter::from_fn(move || {
            (at != 0).then(|| {
                let i = at.trailing_zeros() as usize;
                at &= at - 1;
                headers[i].value
            })
        })
    };
    let conn = message::connection_options(values(conn_at));
    let length = message::content_length(values(length_at)).map_err(invalid_answer)?;
    let chunked = message::answer_chunked(values(coding_at));
    let framing = message::answer_framing(method, status, chunked, length);
    // Content-Length beside Transfer-Encoding: the length is dropped, and the connection is not
    // trusted with another message.
    let conflict = chunked.is_some() && length.is_some();
    let closing = close_caller || framing == Framing::Close;
    let mut out = take_buf();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(&mut out, u64::from(status));
    out.push(b' ');
    match resp.reason.filter(|r| !r.is_empty()) {
        Some(r) => out.extend_from_slice(r.as_bytes()),
        None => out.extend_from_slice(
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("")
                .as_bytes(),
        ),
    }
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    let mut has_length = false;
    let mut trailer_names = Vec::new();
    let mut trailer_values: Vec<&[u8]> = Vec::new();
    for (i, h) in resp.headers.iter().enumerate() {
        let name = h.name;
        if !message::answer_field_kept(name, method, status, framing, &conn.listed) {
            continue;
        }
        if length_at & (1u128 << i) != 0 {
            // Equal lengths (checked above): the first field is written, once (as hyper does).
            if has_length {
                continue;
            }
            has_length = true;
        } else if name.eq_ignore_ascii_case("trailer") {
            // Written below as one field, its values joined (as hyper writes it).
            trailer_names.extend(message::trailer_names(h.value));
            trailer_values.push(h.value);
            continue;
        }
        has_date |= name.eq_ignore_ascii_case("date");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some((first, more)) = trailer_values.split_first() {
        out.extend_from_slice(b"trailer: ");
        out.extend_from_slice(first);
        for v in more {
            out.extend_from_slice(b", ");
            out.extend_from_slice(v);
        }
        out.extend_from_slice(b"\r\n");
    }
    if framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !has_date {
        date_header(&mut out);
    }
    if closing {
        out.extend_from_slice(b"connection: close\r\n");
    }
    Ok(RespParse::Done(
        RespHead {
            status,
            bytes: out,
            framing,
            reusable: http11 && !conn.close && !conflict && framing != Framing::Close,
            trailer_names,
        },
        len,
    ))
}

/// A worker's idle upstream connections by `host:port`, each with the time it was put back.
type Pool = HashMap<PoolKey, Vec<(Conn, Instant)>, foldhash::fast::RandomState>;

/// A pool: the upstream authority (`host:port` as the route has it), and the id of the TLS
/// settings (`PLAIN` for plain TCP).
type PoolKey = (Arc<str>, u64);
const PLAIN: u64 = u64::MAX;

thread_local! {
    /// The `Date` value of the current second, formatted once.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    /// This worker's idle upstream connections, by `host:port`, newest last.
    /// (Keys come from the config, so a fast hasher will do.)
    static POOL: RefCell<Pool> = RefCell::new(HashMap::with_hasher(foldhash::fast::RandomState::default()));
}

/// Buffers kept for reuse by this worker, so a request does not allocate its read and write
/// buffers (and an idle connection holds none).
const POOLED_BUFS: usize = 256;

thread_local! {
    static BUFS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take_buf() -> Vec<u8> {
    BUFS.with(|b| b.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(READ_CHUNK))
}

fn give_buf(mut b: Vec<u8>) {
    // Only ordinary sizes come back: a buffer grown for a large head or body is freed.
    if b.capacity() < READ_CHUNK || b.capacity() > 4 * READ_CHUNK {
        return;
    }
    b.clear();
    BUFS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOLED_BUFS {
            p.push(b);
        }
    });
}

/// Appends `n` in decimal (a status code or a port: no formatter or allocation on the hot path).
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn date_header(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_empty() {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(d.1.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// How often a worker looks over its idle upstream connections and closes those the upstream has
/// closed or that idled out, so none waits in CLOSE_WAIT for the next request to its host.
const POOL_SWEEP_EVERY: Duration = Duration::from_secs(2);

thread_local! {
    /// This worker runs its pool sweep.
    static SWEEPING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Readable while idle means closed (or stray bytes): not reusable. No syscall when the socket
/// has had no event.
fn still_open(s: &mut Conn) -> bool {
    let mut probe = [0u8; 1];
    match s {
        Conn::Plain(s) => {
            matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
        // Through TLS: what arrived may be a session ticket or a key update, which rustls takes
        // without any plaintext for us (the read stays pending); a close or stray bytes end it.
        Conn::Tls(s) => s.read(&mut probe).now_or_never().is_none(),
    }
}

/// Closes this worker's idle connections that are closed or too old; returns how many.
fn sweep() -> usize {
    POOL.with(|p| {
        let mut closed = 0;
        p.borrow_mut().retain(|_, list| {
            let before = list.len();
            list.retain_mut(|(s, since)| since.elapsed() < POOL_IDLE_TIMEOUT && still_open(s));
            closed += before - list.len();
            !list.is_empty()
        });
        closed
    })
}

/// Starts this worker's sweep once it pools a connection; the sweep ends when the pool is empty.
/// Only on a worker's own single-threaded loop, where the task runs on this thread and so sees
/// this thread's pool.
fn start_sweep() {
    if SWEEPING.with(|s| s.get()) {
        return;
    }
    let own_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
    if !own_thread {
        return;
    }
    SWEEPING.with(|s| s.set(true));
    tokio::spawn(async {
        loop {
            tokio::time::sleep(POOL_SWEEP_EVERY).await;
            sweep();
            if POOL.with(|p| p.borrow().is_empty()) {
                SWEEPING.with(|s| s.set(false));
                return;
            }
        }
    });
}

/// An idle pooled connection to `key` that still looks open at `now`, if any.
fn checkout(key: &PoolKey, now: Instant) -> Option<Conn> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.get_mut(key)?;
        while let Some((mut s, since)) = list.pop() {
            if now.saturating_duration_since(since) < POOL_IDLE_TIMEOUT && still_open(&mut s) {
                return Some(s);
            }
        }
        None
    })
}

fn checkin(key: PoolKey, s: Conn) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = match p.get_mut(&key) {
            Some(l) => l,
            None => p.entry(key).or_default(),
        };
        // Oldest first: drop the expired ones.
        let now = Instant::now();
        let expired = list
            .iter()
            .take_while(|(_, t)| now.duration_since(*t) >= POOL_IDLE_TIMEOUT)
            .count();
        list.drain(..expired);
        if list.len() < POOL_MAX_IDLE_PER_HOST {
            list.push((s, now));
        }
    });
    start_sweep();
}

async fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, ProxyError> {
    let fail = |e: &dyn std::fmt::Display| {
        ProxyError::new(
            ErrorCode::UpstreamUnavailable,
            format!("cannot connect to the upstream: {e}"),
        )
    };
    let attempt = async {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<std::net::SocketAddr> = match bare.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![(ip, port).into()],
            Err(_) => tokio::net::lookup_host((bare, port)).await?.collect(),
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for the host");
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(fail(&e)),
        Err(_) => Err(fail(&"connection timed out")),
    }
}

/// An upstream connection of the fast transport: plain TCP, or TLS over it.
pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Opens a connection to the upstream: TCP within `connect_timeout`, then, for an `https`
/// upstream, the TLS handshake with the route's settings (HTTP/1.1 by ALPN).
async fn open(
    authority: &http::uri::Authority,
    tls: Option<&super::upstream::FastTls>,
    connect_timeout: Duration,
) -> Result<Conn, ProxyError> {
    let default = if tls.is_some() { 443 } else { 80 };
    let port = authority.port_u16().unwrap_or(default);
    let tcp = connect(authority.host(), port, connect_timeout).await?;
    let Some(tls) = tls else {
        return Ok(Conn::Plain(tcp));
    };
    let name = match &tls.server_name {
        Some(n) => n.clone(),
        None => rustls::pki_types::ServerName::try_from(
            authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
        .map_err(|e| {
            ProxyError::new(
                ErrorCode::UpstreamTlsError,
                format!("the upstream host is not a TLS server name: {e}"),
            )
        })?,
    };
    tokio_rustls::TlsConnector::from(tls.config.clone())
        .connect(name, tcp)
        .await
        .map(|s| Conn::Tls(Box::new(s)))
        .map_err(|e| {
            let reason = crate::tls::tls_reason(&e).unwrap_or_else(|| e.to_string());
            ProxyError::new(
                ErrorCode::UpstreamTlsError,
                format!("TLS handshake with the upstream failed: {reason}"),
            )
        })
}

/// Finds the end of a chunked body as its bytes pass (RFC 9112 §7.1), with hyper's limits: chunk
/// extensions up to `MAX_CHUNK_EXTENSION_BYTES` per body, a trailer section of at most
/// `MAX_TRAILER_FIELDS` fields and under `MAX_TRAILER_BYTES`. The last chunk and the trailer
/// section are not passed on: they are kept here (the section as it came) until the body ends,
/// and `BodyLeft` writes the end of the body itself.
#[derive(Debug, Default)]
pub(crate) struct Chunks {
    state: ChunkState,
    size: u64,
    /// Bytes of the current chunk-size line other than its extensions.
    line: usize,
    /// Chunk-extension bytes of this body so far.
    extensions: u64,
    /// The trailer section as it came, once its first byte has (up to its final CRLF).
    trailers: Vec<u8>,
    /// Trailer fields so far.
    fields: usize,
    /// Of the bytes the last `feed` consumed, how many come before the last chunk and the trailer
    /// section, and before a chunk-size line that may be the last chunk's and is not complete
    /// (all of them when there is neither): what is passed to the caller. Also set when `feed`
    /// fails in the trailer section.
    before_trailers: usize,
    /// The bytes of a chunk-size line that is not complete and whose size is 0 so far (it may be
    /// the last chunk's), held back until the line ends.
    pending: Vec<u8>,
    /// Held-back bytes of a line that turned out to be a data chunk's: they go to the caller
    /// before this piece's bytes.
    lead: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// The first hex digit of a chunk size.
    #[default]
    Start,
    Size,
    /// Spaces after the size.
    SizeLws,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// Longest chunk-size line, its extensions not counted (they have their own limit per body).
const MAX_CHUNK_LINE: usize = 4096;

impl Chunks {
    /// Consumes bytes of the body; returns how many belong to it (fewer than `data.len()` only
    /// once the body is complete).
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<usize, ()> {
        use ChunkState::*;
        let mut i = 0;
        // Where the current chunk-size line began in `data`, when it began there.
        // The line of the held-back bytes goes on in this piece.
        let mut held_line = !self.pending.is_empty();
        let mut line_at = (self.state == Start || held_line).then_some(0);
        self.before_trailers = if self.in_trailers() { 0 } else { usize::MAX };
        while i < data.len() && self.state != Done {
            if self.state == Data {
                let take = (data.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            if matches!(self.state, Start | Size | SizeLws) {
                self.line += 1;
                if self.line > MAX_CHUNK_LINE {
                    return Err(());
                }
            }
            self.state = match (self.state, b) {
                (Start | Size, b) if b.is_ascii_hexdigit() => {
                    let d = u64::from((b as char).to_digit(16).ok_or(())?);
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(d))
                        .ok_or(())?;
                    if held_line && self.size != 0 {
                        // Not the last chunk after all: the held-back bytes go out first.
                        self.lead = std::mem::take(&mut self.pending);
                        held_line = false;
                    }
                    Size
                }
                (Size | SizeLws, b' ' | b'\t') => SizeLws,
                (Size | SizeLws, b';') => Ext,
                (Size | SizeLws | Ext, b'\r') => SizeLf,
                (Ext, b'\n') => return Err(()),
                (Ext, _) => {
                    self.extensions += 1;
                    if self.extensions >= message::MAX_CHUNK_EXTENSION_BYTES {
                        return Err(());
                    }
                    Ext
                }
                (SizeLf, b'\n') => {
                    self.line = 0;
                    if self.size == 0 {
                        // The last chunk: not passed on (`end` writes it).
                        self.pending.clear();
                        self.before_trailers = line_at.unwrap_or(i);
                        TrailerStart
                    } else {
                        Data
                    }
                }
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => {
                    line_at = Some(i);
                    Start
                }
                (TrailerStart, b'\r') => {
                    if !self.trailers.is_empty() {
                        self.keep(b)?;
                    }
                    EndLf
                }
                (TrailerStart | Trailer, b'\n') => return Err(()),
                (Trailer, b'\r') => {
                    self.keep(b)?;
                    TrailerLf
                }
                (TrailerStart | Trailer, b) => {
                    self.keep(b)?;
                    Trailer
                }
                (TrailerLf, b'\n') => {
                    if self.fields >= message::MAX_TRAILER_FIELDS {
                        return Err(());
                    }
                    self.fields += 1;
                    self.keep(b)?;
                    TrailerStart
                }
                (EndLf, b'\n') => {
                    if !self.trailers.is_empty() {
                        self.keep(b)?;
                    }
                    Done
                }
                _ => return Err(()),
            };
        }
        if self.before_trailers == usize::MAX {
            self.before_trailers = i;
            // A size line of 0 so far at the end of the piece: held back until it ends.
            if let (Some(at), Start | Size | SizeLws | Ext | SizeLf, 0) =
                (line_at, self.state, self.size)
            {
                self.pending.extend_from_slice(&data[at..i]);
                self.before_trailers = at;
            }
        }
        Ok(i)
    }

    /// One more byte of the trailer section.
    fn keep(&mut self, b: u8) -> Result<(), ()> {
        self.trailers.push(b);
        if self.trailers.len() >= message::MAX_TRAILER_BYTES {
            return Err(());
        }
        Ok(())
    }

    pub(crate) fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// The last chunk has been read: what follows is the trailer section.
    fn in_trailers(&self) -> bool {
        use ChunkState::*;
        matches!(
            self.state,
            TrailerStart | Trailer | TrailerLf | EndLf | Done
        )
    }

    /// The end of a complete body as the caller gets it: the last chunk, the trailer fields of `keep` (the names the answer declared, for a caller
    /// that takes trailers) that may be trailers, grouped by name in the order they came, and the
    /// final CRLF. Trailer fields that do not parse fail the body, wanted or not (as in hyper).
    fn end(&self, keep: Option<&[HeaderName]>) -> Result<Cow<'static, [u8]>, ()> {
        if self.trailers.is_empty() {
            return Ok(Cow::Borrowed(b"0\r\n\r\n"));
        }
        let mut storage = [httparse::EMPTY_HEADER; message::MAX_TRAILER_FIELDS];
        let fields = match httparse::parse_headers(&self.trailers, &mut storage[..self.fields]) {
            Ok(httparse::Status::Complete((_, fields))) => fields,
            _ => return Err(()),
        };
        let mut named = Vec::with_capacity(fields.len());
        for f in fields.iter() {
            let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| ())?;
            HeaderValue::from_bytes(f.value).map_err(|_| ())?;
            named.push((name, f.value));
        }
        let keep = keep.unwrap_or_default();
        let wanted =
            |n: &HeaderName| keep.iter().any(|k| k == n) && message::trailer_field_allowed(n);
        let mut out = b"0\r\n".to_vec();
        let mut written = 0u128;
        for (i, (name, _)) in named.iter().enumerate() {
            if written & (1 << i) != 0 || !wanted(name) {
                continue;
            }
            for (j, (other, value)) in named.iter().enumerate().skip(i) {
                if other == name {
                    written |= 1 << j;
                    out.extend_from_slice(name.as_str().as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(value);
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        out.extend_from_slice(b"\r\n");
        Ok(Cow::Owned(out))
    }
}

/// Bytes of an answer's body still to come, as the fast path tracks them.
enum BodyLeft {
    Length(u64),
    /// With the trailer fields a caller that takes trailers (`TE: trailers`) gets: the names the
    /// answer declared; `None` for a caller that does not take trailers.
    Chunked(Chunks, Option<Vec<HeaderName>>),
    Close,
}

/// How a body broke, found by `BodyLeft::take`.
enum Broken {
    /// Its framing: nothing of the piece goes to the caller.
    Framing,
    /// Its trailer section (over the limits, or fields that do not parse): these bytes came before
    /// the last chunk, and go to the caller before its connection is cut (as hyper passes the
    /// chunks it read before it fails the body).
    Trailers(Vec<u8>),
}

/// What `BodyLeft::take` found in a piece of the body.
struct Pass<'d> {
    /// Bytes of the piece that belong to the body.
    consumed: usize,
    /// Bytes of earlier pieces, held back, that go to the caller first.
    lead: Vec<u8>,
    /// What goes to the caller for them.
    bytes: &'d [u8],
    /// What follows them: the end of a chunked body (last chunk, trailer fields, final CRLF).
    tail: Cow<'static, [u8]>,
}

impl<'d> Pass<'d> {
    fn all(data: &'d [u8], n: usize) -> Pass<'d> {
        Pass {
            consumed: n,
            lead: Vec::new(),
            bytes: &data[..n],
            tail: Cow::Borrowed(&[]),
        }
    }

    fn append_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.lead);
        out.extend_from_slice(self.bytes);
        out.extend_from_slice(&self.tail);
    }
}

impl BodyLeft {
    /// `keep`: the trailer fields a caller that takes trailers gets (`None` when it does not).
    fn new(f: Framing, keep: Option<Vec<HeaderName>>) -> BodyLeft {
        match f {
            Framing::Empty => BodyLeft::Length(0),
            Framing::Length(n) => BodyLeft::Length(n),
            Framing::Chunked => BodyLeft::Chunked(Chunks::default(), keep),
            Framing::Close => BodyLeft::Close,
        }
    }

    /// How many of `data` belong to the body, and the bytes to pass on for them: a chunked
    /// body's last chunk and trailer section are held back, and its end written by `Chunks::end`
    /// once it is complete.
    fn take<'d>(&mut self, data: &'d [u8]) -> Result<Pass<'d>, Broken> {
        match self {
            BodyLeft::Length(n) => {
                let k = (data.len() as u64).min(*n);
                *n -= k;
                Ok(Pass::all(data, k as usize))
            }
            BodyLeft::Chunked(c, keep) => {
                let trailers_broken = |c: &mut Chunks| {
                    if c.in_trailers() {
                        let mut out = std::mem::take(&mut c.lead);
                        out.extend_from_slice(&data[..c.before_trailers.min(data.len())]);
                        Broken::Trailers(out)
                    } else {
                        Broken::Framing
                    }
                };
                let k = c.feed(data).map_err(|()| trailers_broken(c))?;
                let tail = if c.done() {
                    c.end(keep.as_deref()).map_err(|()| trailers_broken(c))?
                } else {
                    Cow::Borrowed(&[][..])
                };
                Ok(Pass {
                    consumed: k,
                    lead: std::mem::take(&mut c.lead),
                    bytes: &data[..c.before_trailers],
                    tail,
                })
            }
            BodyLeft::Close => Ok(Pass::all(data, data.len())),
        }
    }

    fn done(&self) -> bool {
        match self {
            BodyLeft::Length(n) => *n == 0,
            BodyLeft::Chunked(c, _) => c.done(),
            BodyLeft::Close => false,
        }
    }
}

/// Where the upstream request goes, and its head as bytes.
struct Outgoing {
    authority: http::uri::Authority,
    head: Vec<u8>,
}

/// `host: <host>[:<port>]` (no CRLF) for an upstream authority; the port is left out when it is the
/// scheme's default (`default_port`: 80 or 443).
pub(crate) fn host_line(authority: &http::uri::Authority, default_port: u16) -> Vec<u8> {
    let mut line = b"host: ".to_vec();
    line.extend_from_slice(authority.host().as_bytes());
    let port = authority.port_u16().unwrap_or(default_port);
    if port != default_port {
        line.push(b':');
        push_decimal(&mut line, u64::from(port));
    }
    line
}

/// The upstream request head. `fixed_host`: the route's own `host:` line, when its authority is fixed (made
/// once per config load); otherwise it is made from `uri`. `own_host`: `headers` hold the `host`
/// (a signed request, signed with the same value), written with them.
fn outgoing(
    uri: &Uri,
    method: &Method,
    headers: &HeaderMap,
    fixed_host: Option<&[u8]>,
    own_host: bool,
    body: &[u8],
) -> Result<Outgoing, ProxyError> {
    let (Some(authority), Some(pq)) = (uri.authority(), uri.path_and_query()) else {
        return Err(ProxyError::new(
            ErrorCode::Internal,
            "the upstream URI has no host",
        ));
    };
    let mut head = take_buf();
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(pq.as_str().as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    match fixed_host {
        _ if own_host => {}
        Some(line) => head.extend_from_slice(line),
        None => {
            let default = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
                443
            } else {
                80
            };
            head.extend_from_slice(&host_line(authority, default));
        }
    }
    if !own_host {
        head.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let wants_length =
        !body.is_empty() || matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if wants_length && !headers.contains_key(http::header::CONTENT_LENGTH) {
        head.extend_from_slice(b"content-length: ");
        push_decimal(&mut head, body.len() as u64);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head.extend_from_slice(body);
    Ok(Outgoing {
        authority: authority.clone(),
        head,
    })
}

/// An upstream connection with its answer's head read.
pub(crate) struct Answer {
    stream: Conn,
    head: RespHead,
    /// Bytes read past the head (the start of the body).
    rest: Vec<u8>,
    /// The pool the connection goes back to.
    key: PoolKey,
}

/// Sends `out` and reads the answer's head. A pooled connection that turns out closed before any
/// answer byte is replaced once by a new one, for idempotent methods (RFC 9110 §9.2.2). A signed
/// request's bytes are never sent twice (they may have reached the upstream, and a signature's
/// nonce is used once): it fails with `stale` set, and the pipeline signs it again and sends it
/// with `fresh` (a new connection).
#[allow(clippy::too_many_arguments)]
async fn exchange(
    out: Outgoing,
    method: &Method,
    stale: Option<&std::sync::atomic::AtomicBool>,
    fresh: bool,
    t: &FastTransport<'_>,
    pool_name: Option<&Arc<str>>,
    now: Instant,
) -> Result<Answer, ProxyError> {
    // Plain connections are pooled by authority; TLS ones by authority and TLS settings.
    let name = match pool_name {
        Some(n) => n.clone(),
        None => Arc::from(out.authority.as_str()),
    };
    let key: PoolKey = (name, t.tls.map_or(PLAIN, |tls| tls.id));
    let mut pooled = if fresh { None } else { checkout(&key, now) };
    let signed = stale.is_some();
    loop {
        let reused = pooled.is_some();
        let mut stream = match pooled.take() {
            Some(s) => s,
            // Boxed: a new connection (and its TLS handshake) is rare, and its state would
            // otherwise sit in every connection's task.
            None => Box::pin(open(&out.authority, t.tls, t.connect_timeout)).await?,
        };
        match read_answer(&mut stream, &out.head, method, t.close_caller).await {
            Ok((head, rest)) => {
                give_buf(out.head);
                return Ok(Answer {
                    stream,
                    head,
                    rest,
                    key,
                });
            }
            Err(AnswerError::Closed) if reused && !signed && method.is_idempotent() => continue,
            Err(AnswerError::Closed | AnswerError::Io(_))
                if reused && signed && method.is_idempotent() =>
            {
                if let Some(flag) = stale {
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                return Err(invalid_answer("pooled connection closed before an answer"));
            }
            Err(AnswerError::Closed) => {
                return Err(invalid_answer("connection closed before an answer"))
            }
            Err(AnswerError::Io(e)) if reused && !signed && method.is_idempotent() => {
                tracing::debug!(error = %e, "pooled upstream connection failed; retrying");
                continue;
            }
            Err(AnswerError::Io(e)) => return Err(io_failure(&e)),
            Err(AnswerError::Invalid(e)) => return Err(e),
        }
    }
}

/// An I/O error on an upstream connection: a TLS alert (TLS 1.3 servers refuse a client
/// certificate only after the client's side of the handshake is done) is `upstream_tls_error`, as
/// on hyper's transport; anything else a broken connection.
fn io_failure(e: &io::Error) -> ProxyError {
    match crate::tls::tls_reason(e) {
        Some(reason) => ProxyError::new(
            ErrorCode::UpstreamTlsError,
            format!("TLS handshake with the upstream failed: {reason}"),
        ),
        None => invalid_answer(&e.to_string()),
    }
}

enum AnswerError {
    /// The connection ended before any byte of an answer.
    Closed,
    Io(io::Error),
    Invalid(ProxyError),
}

async fn read_answer(
    stream: &mut Conn,
    head: &[u8],
    method: &Method,
    close_caller: bool,
) -> Result<(RespHead, Vec<u8>), AnswerError> {
    stream.write_all(head).await.map_err(AnswerError::Io)?;
    let mut buf = take_buf();
    let mut interim = 0;
    loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) if buf.is_empty() => return Err(AnswerError::Closed),
            Ok(0) => {
                return Err(AnswerError::Invalid(invalid_answer(
                    "connection closed inside the answer's head",
                )))
            }
            Ok(_) => {}
            Err(e) if buf.is_empty() => return Err(AnswerError::Io(e)),
            Err(e) => return Err(AnswerError::Invalid(io_failure(&e))),
        }
        loop {
            match parse_response(&buf, method, close_caller).map_err(AnswerError::Invalid)? {
                RespParse::Partial => break,
                RespParse::Interim(n) => {
                    // Interim heads are dropped as they come, and bounded in number.
                    interim += 1;
                    if interim > MAX_INTERIM_ANSWERS {
                        return Err(AnswerError::Invalid(invalid_answer(
                            "more than 16 interim (1xx) answers",
                        )));
                    }
                    buf.drain(..n);
                }
                RespParse::Done(h, n) => {
                    buf.drain(..n);
                    return Ok((h, buf));
                }
            }
        }
    }
}

/// An answer ready to be relayed: its head and the body bytes that came with it, checked.
struct Ready {
    ans: Answer,
    left: BodyLeft,
    /// The head and the first body bytes, as the caller gets them.
    out: Vec<u8>,
    /// The upstream sent more than the body: its connection cannot be reused.
    spill: bool,
}

/// Checks the body bytes that came with the answer's head, before anything goes to the caller:
/// a chunked body already broken there (its framing, or its trailer section) is a 502, not a 200
/// cut short, as on the general path (`body::AnswerBody`).
fn ready(mut ans: Answer, trailers: bool) -> Result<Ready, ProxyError> {
    let keep = trailers.then(|| std::mem::take(&mut ans.head.trailer_names));
    let mut left = BodyLeft::new(ans.head.framing, keep);
    let mut out = std::mem::take(&mut ans.head.bytes);
    out.extend_from_slice(b"\r\n");
    let pass = left
        .take(&ans.rest)
        .map_err(|_| invalid_answer("the answer's chunked body is malformed"))?;
    let spill = pass.consumed < ans.rest.len();
    pass.append_to(&mut out);
    Ok(Ready {
        ans,
        left,
        out,
        spill,
    })
}

/// Streams the rest of an answer's body to the caller. Returns whether the caller's connection
/// can stay open, and the upstream connection when it can carry another request. Each wait, for
/// body bytes from the upstream or for the caller to take them, is bounded by `stall` (the idle
/// timeout): past it both connections are closed.
async fn relay(
    r: Ready,
    caller: &mut TcpStream,
    stall: Duration,
) -> (bool, Option<(Conn, PoolKey)>) {
    let Ready {
        mut ans,
        mut left,
        out,
        mut spill,
    } = r;
    if !write_within(caller, &out, stall).await {
        return (false, None);
    }
    give_buf(out);
    let mut buf = ans.rest;
    while !left.done() {
        buf.clear();
        if buf.capacity() < READ_CHUNK {
            buf.reserve(READ_CHUNK);
        }
        match tokio::time::timeout(stall, ans.stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                // The body ended early (or runs to close): nothing more for this caller either.
                return (false, None);
            }
            Err(_) => {
                tracing::debug!("closing connection: the upstream's body stalled");
                return (false, None);
            }
            Ok(Ok(_)) => {}
        }
        let pass = match left.take(&buf) {
            Ok(pass) => pass,
            Err(Broken::Trailers(before)) => {
                tracing::debug!("closing connection: the answer's trailer section failed");
                let _ = write_within(caller, &before, stall).await;
                return (false, None);
            }
            Err(Broken::Framing) => {
                tracing::debug!("closing connection: the answer's chunked body is malformed");
                return (false, None);
            }
        };
        spill |= pass.consumed < buf.len();
        let sent = (pass.lead.is_empty() || write_within(caller, &pass.lead, stall).await)
            && write_within(caller, pass.bytes, stall).await
            && (pass.tail.is_empty() || write_within(caller, &pass.tail, stall).await);
        if !sent {
            return (false, None);
        }
    }
    give_buf(buf);
    let keep = ans.head.reusable && !spill;
    (true, keep.then_some((ans.stream, ans.key)))
}

/// Writes all of `buf` to the caller, each wait for the caller to take bytes bounded by `stall`.
/// Usually the socket takes it all at once, and then no timer is set.
async fn write_within(caller: &mut TcpStream, buf: &[u8], stall: Duration) -> bool {
    let n = match caller.try_write(buf) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(_) => return false,
    };
    n == buf.len()
        || matches!(
            tokio::time::timeout(stall, caller.write_all(&buf[n..])).await,
            Ok(Ok(()))
        )
}

/// The fast path's transport: this worker's pooled plain HTTP/1 connections, the request head
/// written by hand, the answer's head parsed by the rules of `message.rs`.
pub(crate) struct FastTransport<'a> {
    /// The caller's connection's timer: the upstream's answer is awaited on it.
    timer: &'a ConnTimer,
    connect_timeout: Duration,
    /// The caller's connection closes after this request.
    close_caller: bool,
    /// TLS settings of an `https` upstream.
    tls: Option<&'a super::upstream::FastTls>,
}

impl super::pipeline::Transport for FastTransport<'_> {
    type Answer = Answer;

    fn status(answer: &Answer) -> u16 {
        answer.head.status
    }

    async fn send(&self, out: Outbound<'_>) -> Result<Answer, ProxyError> {
        let body = match out.body {
            AttemptBody::Buffered(b) => b,
            AttemptBody::Stream(_) => {
                return Err(ProxyError::new(
                    ErrorCode::Internal,
                    "the fast path carries no streamed body",
                ))
            }
        };
        let req = outgoing(
            &out.uri,
            out.method,
            out.headers,
            out.route.host_line.as_deref(),
            out.signed,
            &body,
        )?;
        // `at`: when the request is sent (read once for the deadline and the pool's idle check).
        let at = Instant::now();
        let timeout = out.route.timeout;
        match self
            .timer
            .within(
                at + timeout,
                exchange(
                    req,
                    out.method,
                    out.signed.then_some(out.stale),
                    out.fresh,
                    self,
                    out.route.pool_name.as_ref(),
                    at,
                ),
            )
            .await
        {
            None => Err(ProxyError::new(
                ErrorCode::UpstreamTimeout,
                format!("the upstream did not answer within {timeout:?}"),
            )),
            Some(r) => r,
        }
    }
}

impl Proxy {
    /// The fast front end for one request: the pipeline's phases with the fast transport, then
    /// the answer relayed as bytes.
    async fn fast_one(
        &self,
        conn: &ConnCtx,
        head: Box<Head>,
        caller: &mut TcpStream,
        buf: &mut Vec<u8>,
        stall: Duration,
        timer: &ConnTimer,
    ) -> Step {
        let snap = &self.snapshot.load_full();
        // A body the fast path does not read whole: hyper streams it (or refuses it as too large).
        if head.body_len > FAST_BODY_MAX.min(snap.config.proxy.max_body_bytes) {
            return Step::Handover;
        }
        let Head {
            mut parts,
            close,
            trailers,
            len: head_len,
            body_len,
        } = *head;
        // The body is not read yet / could not be read.
        let mut body_pending = body_len > 0;
        let mut body_broken = false;
        let head_request = parts.method == Method::HEAD;
        let begun = self.begin(snap, &mut parts);
        let mut metrics = None;
        let mut profile = None;
        let result = match resolve(snap, &mut parts, &mut metrics) {
            Ok(r) if !fast_route(&r) => return Step::Handover,
            Ok(r) => {
                let p: &Arc<super::ProfileRt> = r.profile;
                profile = Some(p.plan.profile());
                let transport = FastTransport {
                    timer,
                    connect_timeout: r.client.connect_timeout,
                    close_caller: close,
                    tls: r
                        .client
                        .fast_tls
                        .as_deref()
                        .filter(|_| r.route.upstream.scheme == http::uri::Scheme::HTTPS),
                };
                let body = if body_len == 0 {
                    Ok(CallerBody::None)
                } else {
                    read_body(caller, buf, head_len, body_len, &snap.config.proxy)
                        .await
                        .map(CallerBody::Read)
                        .map_err(|e| e.into_proxy_error().with_profile(p.plan.profile()))
                };
                body_pending = false;
                body_broken = body.is_err();
                match body {
                    Ok(body) => {
                        self.journey(snap, conn, r, &mut parts, body, &transport)
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        // Metrics and the access log are written when the answer's head is known, before it
        // goes out (as on the general path), so a caller that has its answer sees them counted.
        // An answer that fails `ready` is an upstream error of the journey: it names the profile.
        let checked = |ans| {
            ready(ans, trailers).map_err(|e| match profile {
                Some(p) => e.with_profile(p),
                None => e,
            })
        };
        match result.and_then(checked) {
            Ok(r) => {
                self.done(snap, metrics, r.ans.head.status, begun);
                let closing = close || r.ans.head.framing == Framing::Close;
                let (caller_ok, back) = relay(r, caller, stall).await;
                if let Some((s, key)) = back {
                    checkin(key, s);
                }
                if caller_ok && !closing {
                    Step::KeepAlive
                } else {
                    Step::Close
                }
            }
            Err(e) => {
                // A body refused before it was read is skipped when it is all there (as hyper
                // does); otherwise the connection closes after the answer.
                let skipped =
                    !body_pending || body_arrived(caller, buf, head_len + body_len as usize);
                let close = close || body_broken || !skipped || e.closes();
                let resp = self.fail(snap, e, begun, metrics);
                if write_response(caller, resp, head_request, close).await && !close {
                    Step::KeepAlive
                } else {
                    Step::Close
                }
            }
        }
    }
}

/// Reads the rest of a body of `n` bytes that starts at `start` in `buf` (part of it may have come
/// with the head), each wait within `body_read_timeout` and all of it within `body_total_timeout`,
/// as the general path's body phase does. Bytes past it (a pipelined request) stay in `buf`.
async fn read_body(
    caller: &mut TcpStream,
    buf: &mut Vec<u8>,
    start: usize,
    n: u64,
    p: &crate::config::ProxySettings,
) -> Result<Bytes, BodyError> {
    let end = start + n as usize;
    if buf.len() < end {
        buf.reserve(end - buf.len());
        let deadline = Instant::now() + p.body_total_timeout;
        while buf.len() < end {
            let wait = (Instant::now() + p.body_read_timeout).min(deadline);
            match tokio::time::timeout_at(wait, caller.read_buf(buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return Err(BodyError::Incomplete {
                        declared: n,
                        received: (buf.len() - start) as u64,
                    })
                }
                Ok(Ok(_)) => {}
                Err(_) if Instant::now() >= deadline => {
                    return Err(BodyError::TotalTimeout(p.body_total_timeout))
                }
                Err(_) => return Err(BodyError::Timeout(p.body_read_timeout)),
            }
        }
    }
    Ok(Bytes::copy_from_slice(&buf[start..end]))
}

/// Whether the request's bytes up to `end` are in `buf`, after reading what the caller has already
/// sent without waiting.
fn body_arrived(caller: &TcpStream, buf: &mut Vec<u8>, end: usize) -> bool {
    while buf.len() < end {
        buf.reserve(end - buf.len());
        match caller.try_read_buf(buf) {
            Ok(n) if n > 0 => {}
            _ => return false,
        }
    }
    true
}

/// Whether a resolved request can stay on the fast path: a plain-HTTP upstream reached directly,
/// and a profile that does not rewrite the payload.
fn fast_route(r: &Resolved<'_>) -> bool {
    // An origin from the grant is known only once the credential is: hyper's client, pooled by
    // the actual scheme and authority, carries it.
    r.route.upstream.grant_origin.is_none()
        && (r.route.upstream.scheme == http::uri::Scheme::HTTP || r.client.fast_tls.is_some())
        && r.client.connector.is_none()
        && !r.profile.plan.has_payload()
        // OAuth 1.0a in the form body rewrites the body.
        && !r.profile.sign.as_ref().is_some_and(|s| {
            matches!(
                s.method,
                crate::config::SignMethod::OAuth1 {
                    placement: crate::config::OAuth1Placement::Form,
                    ..
                }
            )
        })
}

/// Writes a response the sidecar made itself. An answer to HEAD (`head_request`) has the
/// `content-length` of its body and no body, as hyper writes it. Returns false when the caller is
/// gone.
async fn write_response(
    caller: &mut TcpStream,
    resp: http::Response<http_body_util::Full<Bytes>>,
    head_request: bool,
    close: bool,
) -> bool {
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == http::header::CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    date_header(&mut out);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_request {
        out.extend_from_slice(&body);
    }
    caller.write_all(&out).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked_end(input: &[u8]) -> Result<Option<usize>, ()> {
        let mut c = Chunks::default();
        let n = c.feed(input)?;
        Ok(c.done().then_some(n))
    }

    #[test]
    fn host_lines_leave_out_the_default_port_only() {
        let a: http::uri::Authority = "example.com:443".parse().unwrap();
        assert_eq!(host_line(&a, 443), b"host: example.com");
        assert_eq!(host_line(&a, 80), b"host: example.com:443");
        let a: http::uri::Authority = "example.com:80".parse().unwrap();
        assert_eq!(host_line(&a, 443), b"host: example.com:80");
        for (authority, line) in [
            ("example.com", "host: example.com"),
            ("example.com:80", "host: example.com"),
            ("127.0.0.1:8080", "host: 127.0.0.1:8080"),
            ("[::1]:9000", "host: [::1]:9000"),
            ("[::1]", "host: [::1]"),
        ] {
            let a: http::uri::Authority = authority.parse().unwrap();
            assert_eq!(host_line(&a, 80), line.as_bytes(), "{authority}");
        }
    }

    #[test]
    fn decimals_are_written_as_the_formatter_would() {
        for n in [0u64, 7, 10, 99, 100, 200, 404, 999, 8080, 65535, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn chunked_bodies_end_where_the_last_chunk_and_trailers_end() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n";
        assert_eq!(chunked_end(body), Ok(Some(body.len())));
        let mut more = body.to_vec();
        more.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(chunked_end(&more), Ok(Some(body.len())));
        let trailers = b"1\r\na\r\n0\r\nx-sum: 1\r\n\r\n";
        assert_eq!(chunked_end(trailers), Ok(Some(trailers.len())));
        // Split anywhere: the same end.
        for cut in 0..body.len() {
            let mut c = Chunks::default();
            let a = c.feed(&body[..cut]).unwrap();
            assert_eq!(a, cut);
            let b = c.feed(&body[cut..]).unwrap();
            assert!(c.done());
            assert_eq!(a + b, body.len());
        }
        assert_eq!(chunked_end(b"4\r\nWi"), Ok(None));
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"4\nWiki\r\n",
            b"4\r\nWikiXX",
            b"ffffffffffffffff0\r\n",
            b"0\r\nx\n",
            b"0\r\n\n",
        ] {
            assert_eq!(
                chunked_end(bad),
                Err(()),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// What the caller gets for `body` fed in pieces of `cut` bytes, or how it broke.
    fn relayed(body: &[u8], cut: usize, keep: Option<&[&str]>) -> Result<Vec<u8>, Vec<u8>> {
        let keep = keep.map(|k| {
            k.iter()
                .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
                .collect()
        });
        let mut left = BodyLeft::new(Framing::Chunked, keep);
        let mut out = Vec::new();
        for piece in body.chunks(cut.max(1)) {
            match left.take(piece) {
                Ok(pass) => pass.append_to(&mut out),
                Err(Broken::Trailers(before)) => {
                    out.extend_from_slice(&before);
                    return Err(out);
                }
                Err(Broken::Framing) => return Err(b"framing".to_vec()),
            }
            if left.done() {
                break;
            }
        }
        Ok(out)
    }

    #[test]
    fn the_last_chunk_and_trailers_are_written_by_the_sidecar() {
        let body = b"5;a=1\r\nhello\r\n0;last\r\nX-A: 1\r\nx-b:2\r\nx-a: 3\r\nhost: h\r\n\r\n";
        for cut in 1..=body.len() {
            let takes = relayed(body, cut, Some(&["x-a", "host"])).unwrap();
            let none = relayed(body, cut, None).unwrap();
            // However it is cut, the last chunk is the sidecar's own.
            assert_eq!(
                takes, b"5;a=1\r\nhello\r\n0\r\nx-a: 1\r\nx-a: 3\r\n\r\n",
                "{cut}"
            );
            assert_eq!(none, b"5;a=1\r\nhello\r\n0\r\n\r\n", "{cut}");
        }
        // Size lines with leading zeros are held back only until they end: the same bytes.
        let zeros = b"00005\r\nhello\r\n000;x\r\n\r\n";
        for cut in 1..=zeros.len() {
            assert_eq!(
                relayed(zeros, cut, None).unwrap(),
                b"00005\r\nhello\r\n0\r\n\r\n",
                "{cut}"
            );
        }
        // Whole in one piece: no trailer declared, none passes.
        assert_eq!(
            relayed(b"0\r\nx-a: 1\r\n\r\n", 100, Some(&[])).unwrap(),
            b"0\r\n\r\n"
        );
        // A trailer field that does not parse fails the body, taken or not.
        for bad in [&b"0\r\nx a: 1\r\n\r\n"[..], b"0\r\n: 1\r\n\r\n"] {
            assert_eq!(relayed(bad, 100, None), Err(Vec::new()));
            assert_eq!(relayed(bad, 100, Some(&["x-a"])), Err(Vec::new()));
        }
    }

    #[test]
    fn chunk_extensions_and_trailers_are_bounded_as_in_hyper() {
        let ext = |total: usize| {
            let mut b = b"1;".to_vec();
            b.resize(b.len() + total / 2, b'e');
            b.extend_from_slice(b"\r\na\r\n1;");
            b.resize(b.len() + total - total / 2, b'e');
            b.extend_from_slice(b"\r\nb\r\n0\r\n\r\n");
            b
        };
        assert!(relayed(&ext(16_383), 1000, None).is_ok());
        assert_eq!(relayed(&ext(16_384), 1000, None), Err(b"framing".to_vec()));
        // A size line is bounded apart from its extensions.
        let mut zeros = vec![b'0'; 4096];
        zeros.extend_from_slice(b"1\r\na\r\n0\r\n\r\n");
        assert_eq!(relayed(&zeros, 1000, None), Err(b"framing".to_vec()));

        let fields = |n: usize| {
            let mut b = b"1\r\na\r\n0\r\n".to_vec();
            for i in 0..n {
                b.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
            }
            b.extend_from_slice(b"\r\n");
            b
        };
        assert!(relayed(&fields(128), 7, None).is_ok());
        assert_eq!(relayed(&fields(129), 7, None), Err(b"1\r\na\r\n".to_vec()));
        let bytes = |n: usize| {
            let mut b = b"1\r\na\r\n0\r\nx: ".to_vec();
            b.resize(b.len() + n - 3 - 4, b'v');
            b.extend_from_slice(b"\r\n\r\n");
            b
        };
        assert!(relayed(&bytes(16_383), 4096, None).is_ok());
        assert_eq!(
            relayed(&bytes(16_384), 4096, None),
            Err(b"1\r\na\r\n".to_vec())
        );
    }

    fn parsed(raw: &str) -> Parse {
        parse_request(raw.as_bytes(), 100)
    }

    #[test]
    fn bodiless_http11_requests_stay_on_the_fast_path() {
        let Parse::Done(h) = parsed("GET /a?b=1 HTTP/1.1\r\nhost: x\r\nx-y: z\r\n\r\n") else {
            panic!("not parsed");
        };
        assert_eq!(h.parts.uri, "/a?b=1");
        assert_eq!(h.parts.headers["x-y"], "z");
        assert!(!h.close);
        let Parse::Done(h) = parsed(
            "DELETE / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        ) else {
            panic!("not parsed");
        };
        assert!(h.close);
        assert_eq!(h.body_len, 0);
        // A body of declared length is read by the fast path (its size is judged per request).
        let Parse::Done(h) = parsed("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
        else {
            panic!("not parsed");
        };
        assert_eq!((h.body_len, h.len), (5, 47));
        assert!(matches!(
            parsed("GET / HTTP/1.1\r\nhost: x\r\n"),
            Parse::Partial
        ));
    }

    #[test]
    fn anything_else_goes_to_the_general_path() {
        for raw in [
            "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\ncontent-length: 0\r\n\r\n",
            "PUT / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: x\r\nconnection: x-secret\r\n\r\n",
            "GET / HTTP/1.0\r\nhost: x\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\nhost: x\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nhost: x\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\nhost: x\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.1\r\nho st: x\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: x\r\nx: a\x01b\r\n\r\n",
        ] {
            assert!(matches!(parsed(raw), Parse::Handover), "{raw:?}");
        }
        let many: String = (0..101).map(|i| format!("x-{i}: v\r\n")).collect();
        assert!(matches!(
            parsed(&format!("GET / HTTP/1.1\r\nhost: x\r\n{many}\r\n")),
            Parse::Handover
        ));
    }

    #[test]
    fn answers_are_framed_and_cleaned() {
        let get = Method::GET;
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive, x-hop\r\nx-hop: 1\r\nkeep-alive: timeout=5\r\nx-keep: 2\r\n\r\nok";
        let Ok(RespParse::Done(h, n)) = parse_response(raw, &get, false) else {
            panic!("not parsed");
        };
        assert_eq!(&raw[n..], b"ok");
        assert_eq!(h.framing, Framing::Length(2));
        assert!(h.reusable);
        let text = String::from_utf8(h.bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("x-keep: 2\r\n") && text.contains("date: "));
        assert!(
            !text.contains("x-hop") && !text.contains("keep-alive") && !text.contains("connection")
        );

        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\n\r\n";
        let Ok(RespParse::Done(h, _)) = parse_response(raw, &get, false) else {
            panic!("not parsed");
        };
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.reusable, "CL beside TE: not reused");
        let text = String::from_utf8(h.bytes).unwrap();
        assert!(!text.contains("content-length"));
        assert!(text.contains("transfer-encoding: chunked\r\n"));

        let raw = b"HTTP/1.1 200 OK\r\nx: y\r\n\r\nrest";
        let Ok(RespParse::Done(h, _)) = parse_response(raw, &get, false) else {
            panic!("not parsed");
        };
        assert_eq!(h.framing, Framing::Close);
        assert!(String::from_utf8(h.bytes)
            .unwrap()
            .contains("connection: close\r\n"));

        let raw = b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n";
        let Ok(RespParse::Done(h, _)) = parse_response(raw, &get, false) else {
            panic!("not parsed");
        };
        assert_eq!(h.framing, Framing::Empty);
        let Ok(RespParse::Done(h, _)) = parse_response(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            &Method::HEAD,
            false,
        ) else {
            panic!("not parsed");
        };
        assert_eq!(h.framing, Framing::Empty);

        // A 304's length goes; a HEAD answer's stays; equal lengths are written once.
        let text = |raw: &[u8], m: &Method| {
            let Ok(RespParse::Done(h, _)) = parse_response(raw, m, false) else {
                panic!("not parsed");
            };
            (String::from_utf8(h.bytes).unwrap(), h.trailer_names)
        };
        let raw = b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n";
        assert!(!text(raw, &get).0.contains("content-length"));
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        assert!(text(raw, &Method::HEAD).0.contains("Content-Length: 5\r\n"));
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx: y\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(
            text(raw, &get)
                .0
                .to_ascii_lowercase()
                .matches("content-length")
                .count(),
            1
        );
        // `Trailer` only with a chunked body, its fields joined, its names kept for the end.
        let raw = b"HTTP/1.1 200 OK\r\ntrailer: x-a\r\ntransfer-encoding: chunked\r\nTrailer: X-B\r\n\r\n";
        let (t, names) = text(raw, &get);
        assert!(t.contains("trailer: x-a, X-B\r\n"), "{t}");
        assert_eq!(names, vec!["x-a", "x-b"]);
        let (t, names) = text(raw, &Method::HEAD);
        assert!(
            !t.to_ascii_lowercase().contains("trailer") && names.is_empty(),
            "{t}"
        );

        assert!(matches!(
            parse_response(
                b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n",
                &get,
                false
            ),
            Ok(RespParse::Interim(_))
        ));
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            // A list of equal values is one length (RFC 9110 §8.6, as hyper reads it); unequal ones are not.
            b"HTTP/1.1 200 OK\r\ncontent-length: 1,2\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            assert!(
                parse_response(bad, &get, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest::proptest! {
        /// Any chunk sizes, extensions and trailers, cut into any pieces: the scanner ends exactly
        /// at the end of the body and never takes a byte of what follows.
        #[test]
        fn the_chunked_scanner_finds_the_exact_end(
            sizes in proptest::collection::vec(0usize..300, 0..6),
            ext in proptest::bool::ANY,
            trailer in proptest::bool::ANY,
            cuts in proptest::collection::vec(1usize..64, 1..20),
        ) {
            let mut body = Vec::new();
            for (i, n) in sizes.iter().filter(|n| **n > 0).enumerate() {
                body.extend_from_slice(format!("{n:x}").as_bytes());
                if ext {
                    body.extend_from_slice(b";x=1");
                }
                body.extend_from_slice(b"\r\n");
                body.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, *n));
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n");
            if trailer {
                body.extend_from_slice(b"x-t: 1\r\n");
            }
            body.extend_from_slice(b"\r\n");
            let end = body.len();
            body.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            let mut c = Chunks::default();
            let (mut pos, mut k) = (0, 0);
            while pos < body.len() && !c.done() {
                let step = cuts[k % cuts.len()].min(body.len() - pos);
                k += 1;
                let n = c.feed(&body[pos..pos + step]).unwrap();
                proptest::prop_assert!(n == step || c.done());
                pos += n;
            }
            proptest::prop_assert!(c.done());
            proptest::prop_assert_eq!(pos, end);
            // What the caller gets does not depend on how the body was cut either.
            let whole = relayed(&body[..end], end, Some(&["x-t"]));
            proptest::prop_assert!(whole.is_ok());
            proptest::prop_assert_eq!(&whole, &relayed(&body[..end], cuts[0], Some(&["x-t"])));
            proptest::prop_assert_eq!(&whole, &relayed(&body[..end], 1, Some(&["x-t"])));
        }

        /// Arbitrary bytes never panic the parsers.
        #[test]
        fn the_parsers_take_any_bytes(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Chunks::default().feed(&data);
            let _ = parse_request(&data, 100);
            let _ = parse_response(&data, &Method::GET, false);
        }
    }

    /// The connection's one timer ends every wait at its own deadline, whether that is before the
    /// timer's due time (it is moved earlier) or long after it (it fires early and is set again).
    #[tokio::test(start_paused = true)]
    async fn the_connection_timer_ends_each_wait_at_its_deadline() {
        let timer = ConnTimer::new(Duration::from_secs(10));
        let pending = std::future::pending::<()>;
        // Longer than the period: fires at 10 s and 20 s, times out at 25 s.
        let t0 = Instant::now();
        assert_eq!(
            timer.within(t0 + Duration::from_secs(25), pending()).await,
            None
        );
        assert_eq!(t0.elapsed(), Duration::from_secs(25));
        // Shorter than what is left of the timer's due time: moved earlier.
        let t1 = Instant::now();
        assert_eq!(
            timer.within(t1 + Duration::from_secs(3), pending()).await,
            None
        );
        assert_eq!(t1.elapsed(), Duration::from_secs(3));
        // What finishes first is answered at once, and the timer is still right afterwards.
        assert_eq!(
            timer
                .within(t1 + Duration::from_secs(60), async { 7 })
                .await,
            Some(7)
        );
        let t2 = Instant::now();
        let late = async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            8
        };
        assert_eq!(
            timer.within(t2 + Duration::from_secs(5), late).await,
            Some(8)
        );
        assert_eq!(
            timer.within(t2 + Duration::from_secs(5), pending()).await,
            None
        );
        assert_eq!(t2.elapsed(), Duration::from_secs(5));
    }
}
