//! Request and response bodies: the caller's body streamed with a size cap, a per-read timeout and a
//! deadline for the whole body (so a body that trickles a byte per read timeout still ends).

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::error::{ErrorCode, ProxyError};

/// Body of a response the proxy returns: the upstream's, streamed, or one the sidecar made.
pub type RespBody = Either<AnswerBody, Full<Bytes>>;
/// Body of a request sent upstream: the caller's, streamed, or a rewritten one.
pub type OutBody = Either<GuardedBody, Full<Bytes>>;

/// Why reading the caller's body stopped.
#[derive(Debug)]
pub enum BodyError {
    TooLarge(u64),
    Timeout(Duration),
    /// The whole body did not arrive within `body_total_timeout`.
    TotalTimeout(Duration),
    Read(hyper::Error),
    /// The caller's connection ended before the body's declared length.
    Incomplete {
        declared: u64,
        received: u64,
    },
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooLarge(max) => write!(f, "request body over max_body_bytes ({max})"),
            BodyError::Timeout(d) => write!(f, "no request body data for {d:?}"),
            BodyError::TotalTimeout(d) => {
                write!(
                    f,
                    "request body not complete within {d:?} (body_total_timeout)"
                )
            }
            BodyError::Read(e) => write!(f, "reading the request body: {e}"),
            BodyError::Incomplete { declared, received } => write!(
                f,
                "the request body ended after {received} of its {declared} declared bytes"
            ),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Read(e) => Some(e),
            _ => None,
        }
    }
}

impl BodyError {
    /// The caller's fault in every case: a body that ends before its declared length (or its last
    /// chunk) is `body_incomplete`, one whose framing cannot be read `bad_request`.
    pub fn code(&self) -> ErrorCode {
        match self {
            BodyError::TooLarge(_) => ErrorCode::PayloadTooLarge,
            BodyError::Timeout(_) | BodyError::TotalTimeout(_) => ErrorCode::RequestTimeout,
            BodyError::Incomplete { .. } => ErrorCode::BodyIncomplete,
            BodyError::Read(e) if crate::error::ended_early(e) => ErrorCode::BodyIncomplete,
            BodyError::Read(_) => ErrorCode::BadRequest,
        }
    }

    pub fn to_proxy_error(&self) -> ProxyError {
        let code = self.code();
        let message = if code == ErrorCode::BodyIncomplete {
            "the caller's request body ended before its declared length".to_string()
        } else {
            self.to_string()
        };
        ProxyError::new(code, message)
    }

    pub fn into_proxy_error(self) -> ProxyError {
        self.to_proxy_error()
    }
}

/// The caller's body with a byte cap, a timeout on each wait for data and a deadline for all of it.
pub struct GuardedBody {
    inner: Incoming,
    remaining: u64,
    max: u64,
    timeout: Duration,
    /// `body_total_timeout`, and the moment it runs out (counted from `new`, the request head).
    total: Duration,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl GuardedBody {
    pub fn new(inner: Incoming, max: u64, timeout: Duration, total: Duration) -> Self {
        GuardedBody {
            inner,
            remaining: max,
            max,
            timeout,
            total,
            deadline: Instant::now() + total,
            sleep: None,
        }
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep = None;
                if frame.is_some() && Instant::now() >= this.deadline {
                    return Poll::Ready(Some(Err(BodyError::TotalTimeout(this.total))));
                }
                let frame = match frame {
                    None => return Poll::Ready(None),
                    Some(Err(e)) => return Poll::Ready(Some(Err(BodyError::Read(e)))),
                    // The caller's trailer fields are not forwarded (they could carry control or
                    // credential names past every header check): the body ends here.
                    Some(Ok(f)) if !f.is_data() => return Poll::Ready(None),
                    Some(Ok(f)) => f,
                };
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.remaining {
                        return Poll::Ready(Some(Err(BodyError::TooLarge(this.max))));
                    }
                    this.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                let (timeout, deadline) = (this.timeout, this.deadline);
                let sleep = this.sleep.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(
                        (Instant::now() + timeout).min(deadline),
                    ))
                });
                ready!(sleep.as_mut().poll(cx));
                if Instant::now() >= deadline {
                    return Poll::Ready(Some(Err(BodyError::TotalTimeout(this.total))));
                }
                Poll::Ready(Some(Err(BodyError::Timeout(timeout))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reads the whole body (for payload rewriting), stopping at `max` bytes.
pub async fn read_all(body: GuardedBody) -> Result<Bytes, BodyError> {
    Ok(body.collect().await?.to_bytes())
}

/// Finds a [`BodyError`] in an error's source chain (the upstream client wraps it).
pub fn find_body_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(b) = err.downcast_ref::<BodyError>() {
            return Some(b);
        }
        cur = err.source();
    }
    None
}

use std::future::Future;

/// An upstream's answer body on the general path: the frames that were already there when the
/// answer's head was read (checked before the head goes out, as the fast path checks the bytes
/// that came with the head), then the rest, each wait for the next frame bounded by the proxy's
/// `idle_timeout` (past it the caller's connection is cut, as on the fast path).
pub struct AnswerBody {
    inner: Incoming,
    ready: std::collections::VecDeque<Frame<Bytes>>,
    /// The body ended within the frames in `ready`.
    ended: bool,
    stall: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The upstream's own length (`Content-Length`) less what was passed on; `None` when it sent
    /// none (chunked, or until close): the caller's answer is framed the same way.
    length_left: Option<u64>,
}

/// The most bytes of already-arrived frames checked before an answer's head goes out.
const READY_BYTES: usize = 64 * 1024;

impl AnswerBody {
    /// Takes the frames hyper has already decoded (a malformed body there is an error before the
    /// head goes out).
    pub async fn new(mut inner: Incoming, stall: Duration) -> Result<AnswerBody, hyper::Error> {
        use futures_util::FutureExt;
        let mut ready = std::collections::VecDeque::new();
        let length_left = inner.size_hint().exact();
        let mut ended = inner.is_end_stream();
        let mut bytes = 0;
        if !ended {
            // The connection's own task decodes what arrived with the head, a frame at a time:
            // let it run until it has nothing more at once.
            let mut idle = false;
            while bytes < READY_BYTES {
                match inner.frame().now_or_never() {
                    None if idle => break,
                    None => {
                        idle = true;
                        tokio::task::yield_now().await;
                    }
                    Some(None) => {
                        ended = true;
                        break;
                    }
                    Some(Some(Err(e))) => return Err(e),
                    Some(Some(Ok(f))) => {
                        idle = false;
                        bytes += f.data_ref().map_or(0, Bytes::len);
                        ready.push_back(f);
                    }
                }
            }
        }
        Ok(AnswerBody {
            inner,
            ready,
            ended,
            stall,
            sleep: None,
            length_left,
        })
    }
}

/// An answer body that stopped: no frame within `idle_timeout`.
#[derive(Debug)]
pub struct Stalled(Duration);

impl fmt::Display for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the upstream's body stalled for {:?}", self.0)
    }
}

impl std::error::Error for Stalled {}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let frame = match this.ready.pop_front() {
            Some(f) => Some(Ok(f)),
            None if this.ended => None,
            None => match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(frame) => {
                    this.sleep = None;
                    frame.map(|r| r.map_err(Into::into))
                }
                Poll::Pending => {
                    let stall = this.stall;
                    let sleep = this
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                    ready!(sleep.as_mut().poll(cx));
                    tracing::debug!("closing connection: the upstream's body stalled");
                    return Poll::Ready(Some(Err(Box::new(Stalled(stall)))));
                }
            },
        };
        if let (Some(left), Some(Ok(f))) = (&mut this.length_left, &frame) {
            *left = left.saturating_sub(f.data_ref().map_or(0, |d| d.len() as u64));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_empty() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match self.length_left {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
