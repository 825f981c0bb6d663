//! Outgoing TCP connections for upstream and IdP traffic: direct, or through a connector (an HTTP
//! egress proxy, `[connectors.NAME]`).
//!
//! Through a connector, `https://` destinations get a `CONNECT host:port` tunnel and TLS runs end to
//! end inside it: the connector sees the host name, never the request or its credential. `http://`
//! destinations are sent to the connector in absolute form (it sees everything, as with any plain-HTTP
//! proxy). `Proxy-Authorization` goes to the connector only: on the CONNECT request, or on each
//! absolute-form request (added by the proxy and the IdP client, see [`proxy_authorization`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Connector;

/// Longest CONNECT answer head accepted from a connector.
const MAX_CONNECT_HEAD: usize = 8 * 1024;

/// Why a connection through a connector failed.
#[derive(Debug)]
pub enum EgressError {
    /// The connector could not be reached, or broke the tunnel.
    Unavailable { connector: String, reason: String },
    /// The connector answered 407 (or 401): its credentials are missing or wrong.
    AuthRequired { connector: String, status: u16 },
    /// The connector answered the CONNECT with another non-2xx status.
    Refused { connector: String, status: u16 },
}

impl std::fmt::Display for EgressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EgressError::Unavailable { connector, reason } => {
                write!(f, "connector {connector} is unavailable: {reason}")
            }
            EgressError::AuthRequired { connector, status } => write!(
                f,
                "connector {connector} refused its credentials ({status} {}): check its username and password",
                if *status == 407 {
                    "Proxy Authentication Required"
                } else {
                    "Unauthorized"
                }
            ),
            EgressError::Refused { connector, status } => {
                write!(f, "connector {connector} refused the tunnel with status {status}")
            }
        }
    }
}

impl std::error::Error for EgressError {}

impl EgressError {
    pub fn code(&self) -> crate::error::ErrorCode {
        match self {
            EgressError::AuthRequired { .. } => crate::error::ErrorCode::EgressProxyAuthFailed,
            _ => crate::error::ErrorCode::EgressProxyUnavailable,
        }
    }
}

/// The `EgressError` in an error's source chain, if any.
pub fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a EgressError> {
    crate::tls::find_in_chain::<EgressError>(e)
}

/// `Proxy-Authorization` for requests sent in absolute form to `connector` (plain `http://`
/// destinations), when it has credentials and `uri`'s host does not bypass it.
pub fn proxy_authorization(connector: Option<&Connector>, uri: &Uri) -> Option<HeaderValue> {
    basic(absolute_form_via(connector, uri)?)
}

/// The connector a plain `http://` request to `uri` goes through in absolute form (`None` for
/// https, which tunnels, and for hosts that bypass it).
pub fn absolute_form_via<'c>(connector: Option<&'c Connector>, uri: &Uri) -> Option<&'c Connector> {
    let c = connector?;
    if uri.scheme() != Some(&http::uri::Scheme::HTTP) || uri.host().is_some_and(|h| c.bypasses(h)) {
        return None;
    }
    Some(c)
}

fn basic(c: &Connector) -> Option<HeaderValue> {
    use crate::http_util::{basic_credentials, BasicEncoding};
    let (u, p) = c.credentials.as_ref()?;
    let b = basic_credentials(u.expose(), p.expose(), BasicEncoding::Plain);
    let mut v = HeaderValue::from_str(&format!("Basic {b}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// A TCP connection, direct or through a connector.
pub struct EgressStream {
    inner: TokioIo<TcpStream>,
    /// Plain HTTP through a connector: requests must use the absolute form.
    via_proxy: bool,
}

impl Connection for EgressStream {
    fn connected(&self) -> Connected {
        let c = self.inner.connected();
        if self.via_proxy {
            c.proxy(true)
        } else {
            c
        }
    }
}

impl hyper::rt::Read for EgressStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for EgressStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The TCP connector used under TLS: direct, or through `connector`.
#[derive(Clone)]
pub struct Egress {
    http: HttpConnector,
    connector: Option<Arc<Connector>>,
    connect_timeout: Duration,
}

impl Egress {
    pub fn new(connector: Option<Arc<Connector>>, connect_timeout: Duration) -> Egress {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        Egress {
            http,
            connector,
            connect_timeout,
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Egress {
    type Response = EgressStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<EgressStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connector = self
            .connector
            .clone()
            .filter(|c| !dst.host().is_some_and(|h| c.bypasses(h)));
        let Some(c) = connector else {
            let connecting = self.http.call(dst);
            return Box::pin(async move {
                Ok(EgressStream {
                    inner: connecting.await?,
                    via_proxy: false,
                })
            });
        };
        let connecting = self.http.call(c.url.clone());
        let timeout = self.connect_timeout;
        let tunnel = dst.scheme() == Some(&http::uri::Scheme::HTTPS);
        Box::pin(async move {
            let unavailable = |reason: String| EgressError::Unavailable {
                connector: c.name.clone(),
                reason,
            };
            let stream = connecting
                .await
                .map_err(|e| unavailable(crate::tls::root_cause(&e)))?;
            if !tunnel {
                return Ok(EgressStream {
                    inner: stream,
                    via_proxy: true,
                });
            }
            let mut tcp = stream.into_inner();
            tokio::time::timeout(timeout, connect_tunnel(&mut tcp, &dst, &c))
                .await
                .map_err(|_| unavailable(format!("no answer to CONNECT within {timeout:?}")))??;
            Ok(EgressStream {
                inner: TokioIo::new(tcp),
                via_proxy: false,
            })
        })
    }
}

/// Sends `CONNECT host:port` and reads the answer head; nothing after it is consumed (the server
/// speaks first only after the TLS client hello, so there is nothing to lose).
async fn connect_tunnel(tcp: &mut TcpStream, dst: &Uri, c: &Connector) -> Result<(), BoxError> {
    let unavailable = |reason: String| EgressError::Unavailable {
        connector: c.name.clone(),
        reason,
    };
    let host = dst.host().ok_or_else(|| unavailable("no host".into()))?;
    let port = dst.port_u16().unwrap_or(443);
    let authority = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(v) = basic(c) {
        head.push_str("Proxy-Authorization: ");
        head.push_str(v.to_str().unwrap_or_default());
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes())
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    // Read byte by byte up to the end of the head, so no tunnelled byte is taken.
    let mut buf = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() >= MAX_CONNECT_HEAD {
            return Err(unavailable("CONNECT answer head too long".into()).into());
        }
        let n = tcp
            .read(&mut byte)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if n == 0 {
            return Err(unavailable("closed the connection during CONNECT".into()).into());
        }
        buf.push(byte[0]);
    }
    let status = std::str::from_utf8(&buf)
        .ok()
        .and_then(|s| s.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| unavailable("not an HTTP answer to CONNECT".into()))?;
    match status {
        200..=299 => Ok(()),
        401 | 407 => Err(EgressError::AuthRequired {
            connector: c.name.clone(),
            status,
        }
        .into()),
        status => Err(EgressError::Refused {
            connector: c.name.clone(),
            status,
        }
        .into()),
    }
}
