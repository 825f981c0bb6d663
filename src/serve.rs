//! Accept loop and per-connection lifecycle shared by every listener: HTTP/1.1 and HTTP/2 (h2c) on
//! one port, header-read and idle timeouts, graceful shutdown.
//!
//! Timeouts (hyper enforces none of these by itself without a timer, and its own header timer also
//! counts keep-alive idle time, so the sidecar keeps its own per-connection clock):
//! - **header read**: from the first byte of a request head (or from accept, for the first request)
//!   until the head is complete; past it the connection is closed at once. HTTP/1 only: HTTP/2 frames
//!   are bounded by h2's own limits.
//! - **idle**: no request in flight and no bytes received for this long → graceful close.
//! - **body read**: the proxy bounds each wait for body data and the whole body (`proxy::body`); the
//!   auth and admin listeners read their small form bodies with [`read_small_body`], whole within
//!   `body_read_timeout`. A handler that answers without reading the body leaves hyper to close the
//!   connection.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{ErrorCode, ProxyError};

/// Connection limits of one listener.
#[derive(Clone, Debug)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// HTTP/1: most header fields in one request head (more → 431).
    pub max_headers: usize,
    /// HTTP/1: largest request head in bytes, request line included (more → 431); HTTP/2: largest
    /// header list.
    pub max_head_bytes: usize,
    /// Open connections allowed across every worker of the listener; `None`: no cap.
    pub gate: Option<Arc<ConnGate>>,
    /// HTTP/1: a caller that shuts down its sending side after a request still gets the answer
    /// (the proxy listener). Elsewhere an end of input cancels the request in flight.
    pub half_close: bool,
}

impl Limits {
    /// Timeouts only, hyper's default header limits, no connection cap (internal listeners).
    pub fn timeouts(header_read_timeout: Duration, idle_timeout: Duration) -> Limits {
        Limits {
            header_read_timeout,
            idle_timeout,
            max_headers: 100,
            max_head_bytes: 64 * 1024,
            gate: None,
            half_close: false,
        }
    }
}

/// The connection cap shared by the workers of one listener: a connection past `max` is answered
/// with 503 `overloaded` (plain listeners, if the socket takes it at once) and closed before any
/// request is read.
#[derive(Debug)]
pub struct ConnGate {
    max: usize,
    open: AtomicUsize,
    refused: AtomicU64,
}

impl ConnGate {
    pub fn new(max: usize) -> Arc<ConnGate> {
        Arc::new(ConnGate {
            max,
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        })
    }

    fn enter(self: &Arc<Self>) -> Option<GatePass> {
        let prev = self.open.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(GatePass(self.clone()))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections refused so far because the cap was reached.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// One admitted connection; leaving frees its slot.
struct GatePass(Arc<ConnGate>);

impl Drop for GatePass {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The answer to a connection past the cap, written before any request is read: 503 `overloaded`
/// from the one error table (JSON, `Retry-After: 1`, then closed).
fn over_cap(request_id: &str) -> Vec<u8> {
    ProxyError::new(
        ErrorCode::Overloaded,
        "the listener has as many connections open as it allows; try again",
    )
    .with_retry_after(1)
    .to_http1(request_id)
}

/// Milliseconds on tokio's clock (so tests can pause time), never 0.
fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(|| Instant::now() - Duration::from_secs(1));
    Instant::now().saturating_duration_since(base).as_millis() as u64
}

/// What the connection's clock knows; shared by the IO wrapper, the service and the watchdog.
#[derive(Debug)]
pub struct ConnState {
    in_flight: AtomicU32,
    last_active: AtomicU64,
    /// When the current request head started arriving; 0 when none is pending.
    head_started: AtomicU64,
    /// HTTP/2 (or anything multiplexed): no head timer between requests.
    multiplexed: AtomicBool,
}

impl ConnState {
    fn new() -> Self {
        let now = now_ms();
        ConnState {
            in_flight: AtomicU32::new(0),
            last_active: AtomicU64::new(now),
            head_started: AtomicU64::new(now),
            multiplexed: AtomicBool::new(false),
        }
    }

    /// Starts both clocks afresh (hyper takes a connection served elsewhere until now).
    fn restart(&self) {
        let now = now_ms();
        self.last_active.store(now, Ordering::Relaxed);
        self.head_started.store(now, Ordering::Relaxed);
    }

    /// Marks a request as in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>, http2: bool) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
        if http2 {
            self.multiplexed.store(true, Ordering::Relaxed);
        }
        InFlight(self.clone())
    }

    fn on_read(&self) {
        let now = now_ms();
        self.last_active.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0
            && !self.multiplexed.load(Ordering::Relaxed)
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(now, Ordering::Relaxed);
        }
    }

    fn check(&self, limits: &Limits) -> Verdict {
        let now = now_ms();
        let head = self.head_started.load(Ordering::Relaxed);
        let hdr = limits.header_read_timeout.as_millis() as u64;
        let idle = limits.idle_timeout.as_millis() as u64;
        if head != 0 && !self.multiplexed.load(Ordering::Relaxed) && now >= head + hdr {
            return Verdict::HeaderTimeout;
        }
        let last = self.last_active.load(Ordering::Relaxed);
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        if in_flight == 0 && now >= last + idle {
            return Verdict::Idle;
        }
        let mut next = last + idle;
        if head != 0 {
            next = next.min(head + hdr);
        }
        Verdict::Wait(Duration::from_millis(next.saturating_sub(now).max(10)))
    }
}

enum Verdict {
    HeaderTimeout,
    Idle,
    Wait(Duration),
}

/// Guard for one in-flight request.
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_active.store(now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// TCP stream that tells the connection's clock when bytes arrive; bytes read before hyper took
/// the connection come first.
struct Tracked {
    pre: Bytes,
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            let head = self.pre.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Per-connection facts handed to the service factory.
#[derive(Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub state: Arc<ConnState>,
}

/// Sender side of a shutdown signal; `drain` waits until every connection has finished.
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown {
            tx: watch::channel(false).0,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// Stops every accept loop, asks connections to finish, and waits up to `timeout` for them.
    /// Returns false if some were still open at the deadline.
    pub async fn drain(self, timeout: Duration) -> bool {
        let _ = self.tx.send(true);
        tokio::time::timeout(timeout, self.tx.closed())
            .await
            .is_ok()
    }
}

/// A service handed to hyper: request in, response out, never an error (errors are responses).
pub trait Handler: Clone + Send + Sync + 'static {
    type Body: http_body::Body<Data = Bytes, Error = Box<dyn std::error::Error + Send + Sync>>
        + Send
        + 'static;
    fn call(
        &self,
        req: Request<Incoming>,
    ) -> impl std::future::Future<Output = Response<Self::Body>> + Send + 'static;

    /// Serves a plain-TCP connection before hyper sees it. Returns the stream and the bytes already
    /// read from it when hyper should serve the rest, `None` when the connection is done. By
    /// default hyper serves everything.
    fn take(
        &self,
        stream: TcpStream,
        _limits: Limits,
        _shutdown: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = Option<(TcpStream, Bytes)>> + Send {
        async move { Some((stream, Bytes::new())) }
    }
}

/// Where a serve loop's connections come from.
pub enum Accepted {
    /// Its own listening socket.
    Listener(TcpListener),
    /// Connections another task accepted and handed to this loop ([`hand_out`]).
    Handed(tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>),
}

impl From<TcpListener> for Accepted {
    fn from(l: TcpListener) -> Accepted {
        Accepted::Listener(l)
    }
}

impl Accepted {
    /// The next connection. A failed accept (EMFILE and friends) is logged and followed by a
    /// brief back-off instead of a spin. Cancel-safe, so it can be one arm of a `select!`: a
    /// shutdown during the back-off is seen at once.
    async fn next(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.accept().await {
                Ok(x) => return x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        match self {
            Accepted::Listener(l) => l.accept().await,
            Accepted::Handed(rx) => match rx.recv().await {
                // Registered with this loop's own runtime.
                Some((s, peer)) => Ok((TcpStream::from_std(s)?, peer)),
                // The acceptor has stopped (shutdown): nothing more comes.
                None => std::future::pending().await,
            },
        }
    }
}

/// Accepts on `listener` and hands the connections to `to` in turn (round-robin), so each proxy
/// worker gets the same number whatever the kernel would have chosen: with one socket per worker
/// (SO_REUSEPORT) the kernel spreads connections by a hash of their addresses, and 64 keep-alive
/// connections could land 40 on one worker and 24 on the other for their whole life.
pub async fn hand_out(
    listener: TcpListener,
    to: Vec<tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut listener = Accepted::Listener(listener);
    let mut next = 0usize;
    loop {
        let (stream, peer) = tokio::select! {
            x = listener.next() => x,
            _ = shutdown.changed() => break,
        };
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        // A worker that has stopped passes its turn to the next.
        let mut item = (stream, peer);
        for _ in 0..to.len() {
            let tx = &to[next % to.len()];
            next = next.wrapping_add(1);
            match tx.send(item) {
                Ok(()) => break,
                Err(back) => item = back.0,
            }
        }
    }
}

/// Accepts connections until `shutdown` fires. `make` builds one handler per connection. With `tls`,
/// every connection starts with a TLS handshake (bounded by the header-read timeout; a failed one,
/// e.g. no client certificate where one is required, closes the connection before any HTTP).
pub async fn serve<H, F>(
    listener: impl Into<Accepted>,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut shutdown: watch::Receiver<bool>,
    make: F,
) where
    H: Handler,
    F: Fn(ConnInfo) -> H + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_head_bytes.max(8192))
        .half_close(limits.half_close)
        .keep_alive(true);
    // HTTP/2 floods: streams the client resets before they are served (Rapid Reset) and streams
    // the server has to reset for protocol errors are capped, past which the connection ends with
    // GOAWAY; CONTINUATION frames count against the header list size.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(256)
        .max_header_list_size(u32::try_from(limits.max_head_bytes).unwrap_or(u32::MAX));
    let mut listener = listener.into();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    // Connection tasks, so the accept loop can wait for them after a shutdown signal.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            x = listener.next() => x,
            _ = shutdown.changed() => break,
        };
        let pass = match &limits.gate {
            None => None,
            Some(g) => match g.enter() {
                Some(p) => Some(p),
                None => {
                    let request_id = crate::error::request_id(None);
                    if acceptor.is_none() {
                        // One best-effort write straight to the socket: a connection handed over
                        // from another worker's accept has no readiness known to this runtime yet,
                        // so `try_write` would not even try.
                        if let Ok(mut s) = stream.into_std() {
                            let _ = std::io::Write::write(&mut s, &over_cap(&request_id));
                        }
                    }
                    tracing::debug!(%peer, %request_id, "connection refused: the connection cap is reached");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::new(ConnState::new());
        let handler = make(ConnInfo {
            peer,
            state: state.clone(),
        });
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let acceptor = acceptor.clone();
        let limits = limits.clone();
        conns.spawn(async move {
            let _pass = pass;
            let (stream, pre) = if acceptor.is_none() {
                match handler.take(stream, limits.clone(), shutdown.clone()).await {
                    Some(x) => x,
                    None => return,
                }
            } else {
                (stream, Bytes::new())
            };
            // The clocks start now: the connection may have been served before it got here.
            state.restart();
            let tracked = Tracked {
                pre,
                inner: stream,
                state: state.clone(),
            };
            let handshake_within = limits.header_read_timeout.min(limits.idle_timeout);
            let conn = Conn {
                builder,
                handler,
                state,
                limits,
                peer,
                shutdown,
            };
            // Both arms on the heap: a connection the fast front end keeps (its task waiting in
            // `take` above) does not carry hyper's or TLS's state in its own.
            match acceptor {
                None => Box::pin(conn.drive(TokioIo::new(tracked))).await,
                Some(acceptor) => {
                    Box::pin(async move {
                        let handshake =
                            tokio::time::timeout(handshake_within, acceptor.accept(tracked)).await;
                        match handshake {
                            Ok(Ok(tls)) => conn.drive(TokioIo::new(tls)).await,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake not completed in time")
                            }
                        }
                    })
                    .await
                }
            }
        });
    }
    // Let in-flight connections finish (they got the signal); the owner bounds this with its drain
    // timeout.
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// One accepted connection and what serving it needs.
struct Conn<H> {
    builder: auto::Builder<TokioExecutor>,
    handler: H,
    state: Arc<ConnState>,
    limits: Limits,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
}

impl<H: Handler> Conn<H> {
    /// Serves the connection (plain or TLS) until it ends, with the header-read and idle clocks.
    async fn drive<I>(self, io: TokioIo<I>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            builder,
            handler,
            state,
            limits,
            peer,
            mut shutdown,
        } = self;
        let req_state = state.clone();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            // Every listener's requests count as in flight, so the idle and header clocks never cut a
            // connection that is waiting for its own answer.
            let in_flight = req_state.start_request(req.version() == http::Version::HTTP_2);
            let h = handler.clone();
            async move {
                let resp = h.call(req).await;
                drop(in_flight);
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = builder.serve_connection(io, svc);
        tokio::pin!(conn);
        let first = limits.header_read_timeout.min(limits.idle_timeout);
        let sleep = tokio::time::sleep(first);
        tokio::pin!(sleep);
        let mut closing = false;
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                _ = shutdown.changed(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = &mut sleep, if !closing => match state.check(&limits) {
                    Verdict::HeaderTimeout => {
                        tracing::debug!(%peer, "closing connection: request head not received in time");
                        break;
                    }
                    Verdict::Idle => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    Verdict::Wait(d) => sleep.as_mut().reset(Instant::now() + d),
                },
            }
        }
    }
}

/// Why a small request body (a form on the auth or admin listener) could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum SmallBodyError {
    TooLarge,
    /// Not all there within the time allowed (stalled, or trickling).
    Timeout,
    /// The input ended before the declared length.
    Incomplete,
    /// The framing could not be read.
    Read,
}

impl SmallBodyError {
    /// The answer's code (each closes the connection: the body was not read to its end).
    pub fn code(&self) -> ErrorCode {
        match self {
            SmallBodyError::TooLarge => ErrorCode::PayloadTooLarge,
            SmallBodyError::Timeout => ErrorCode::RequestTimeout,
            SmallBodyError::Incomplete => ErrorCode::BodyIncomplete,
            SmallBodyError::Read => ErrorCode::BadRequest,
        }
    }
}

/// Reads a whole small body: at most `max` bytes, all of it within `within` (a deadline for the whole
/// body, so neither a stalled nor a trickling sender holds the connection longer). The caller
/// answers an error and closes the connection.
pub async fn read_small_body(
    body: Incoming,
    max: usize,
    within: Duration,
) -> Result<Bytes, SmallBodyError> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, max);
    match tokio::time::timeout(within, limited.collect()).await {
        Err(_) => Err(SmallBodyError::Timeout),
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(SmallBodyError::TooLarge),
        Ok(Err(e)) if crate::error::ended_early(&*e) => Err(SmallBodyError::Incomplete),
        Ok(Err(_)) => Err(SmallBodyError::Read),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections are handed out in turn, and a receiver that is gone passes its turn on.
    #[tokio::test]
    async fn hand_out_gives_each_receiver_its_turn() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..3)
            .map(|_| tokio::sync::mpsc::unbounded_channel())
            .unzip();
        let (stop, watch_rx) = watch::channel(false);
        let task = tokio::spawn(hand_out(listener, txs, watch_rx));
        let mut clients = Vec::new();
        for _ in 0..6 {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut got = Vec::new();
        for rx in rxs.iter_mut() {
            let mut n = 0;
            for _ in 0..2 {
                let (s, _) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                    .await
                    .unwrap()
                    .unwrap();
                // Usable in this runtime.
                TcpStream::from_std(s).unwrap();
                n += 1;
            }
            got.push(n);
        }
        assert_eq!(got, [2, 2, 2]);
        assert!(rxs.iter_mut().all(|rx| rx.try_recv().is_err()));

        // The second receiver stops: the next two go to the first and the third.
        drop(rxs.remove(1));
        for _ in 0..2 {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        for rx in rxs.iter_mut() {
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
        }
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
