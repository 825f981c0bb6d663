//! The pooled keep-alive client to upstreams (hyper + rustls), and what its errors mean to a caller.
//!
//! Redirects are never followed: hyper's client does not follow them, and the proxy passes any 3xx
//! back to the caller untouched.

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::{find_body_error, OutBody};
use std::sync::Arc;

use crate::config::{ClientTls, Connector};
use crate::egress::Egress;
use crate::error::{ErrorCode, ProxyError};

/// Idle pooled connections per upstream host.
pub const POOL_MAX_IDLE_PER_HOST: usize = 256;
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// What the fast transport needs to speak TLS to an `https` upstream with a route's settings.
pub struct FastTls {
    pub config: Arc<rustls::ClientConfig>,
    /// `tls.server_name`, checked and sent as SNI instead of the URL's host.
    pub server_name: Option<rustls::pki_types::ServerName<'static>>,
    /// Unique per client: connections made with other settings never share a pool.
    pub id: u64,
}

/// A client for one TLS setting; cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Upstream {
    /// The fast transport's TLS settings (none through a connector: that is hyper's).
    pub fast_tls: Option<Arc<FastTls>>,
    client: Client<HttpsConnector<Egress>, OutBody>,
    /// The connector, for `Proxy-Authorization` on plain-HTTP requests through it.
    pub connector: Option<Arc<Connector>>,
    /// For connections the HTTP/1 fast path opens itself.
    pub connect_timeout: Duration,
}

impl Upstream {
    pub fn new(
        tls: &ClientTls,
        connector: Option<Arc<Connector>>,
        connect_timeout: Duration,
    ) -> Result<Upstream, String> {
        let https = crate::tls::https_connector(tls, connector.clone(), connect_timeout)?;
        let fast_tls = if connector.is_none() {
            static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let mut config = crate::tls::client_config(tls)?;
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let server_name = match &tls.server_name {
                Some(n) => Some(
                    rustls::pki_types::ServerName::try_from(n.clone())
                        .map_err(|e| format!("server_name {n:?}: {e}"))?,
                ),
                None => None,
            };
            Some(Arc::new(FastTls {
                config: Arc::new(config),
                server_name,
                id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            }))
        } else {
            None
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            // The same answer-head limits as the fast path (`message.rs`).
            .http1_max_headers(super::message::MAX_ANSWER_HEADERS)
            .http1_max_buf_size(super::message::MAX_ANSWER_HEAD)
            .build(https);
        Ok(Upstream {
            fast_tls,
            client,
            connector,
            connect_timeout,
        })
    }

    /// Sends one request; the upstream must start answering within `timeout`.
    pub async fn send(
        &self,
        mut req: Request<OutBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, ProxyError> {
        // Plain HTTP through a connector: its credentials go on the request (absolute form).
        let via = crate::egress::absolute_form_via(self.connector.as_deref(), req.uri())
            .map(|c| c.name.clone());
        if let Some(v) = crate::egress::proxy_authorization(self.connector.as_deref(), req.uri()) {
            req.headers_mut()
                .insert(http::header::PROXY_AUTHORIZATION, v);
        }
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => Err(ProxyError::new(
                ErrorCode::UpstreamTimeout,
                format!("the upstream did not answer within {timeout:?}"),
            )),
            // A 407 on an absolute-form request is the connector's own answer, not the origin's.
            Ok(Ok(resp))
                if via.is_some()
                    && resp.status() == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED =>
            {
                let e = crate::egress::EgressError::AuthRequired {
                    connector: via.unwrap_or_default(),
                    status: 407,
                };
                Err(ProxyError::new(e.code(), e.to_string()))
            }
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(&e)),
        }
    }
}

/// Maps a client error to the caller-facing error: the caller's own body problems first, then TLS,
/// then connection failures.
fn classify(e: &hyper_util::client::legacy::Error) -> ProxyError {
    if let Some(b) = find_body_error(e) {
        return b.to_proxy_error();
    }
    if let Some(g) = crate::egress::find(e) {
        return ProxyError::new(g.code(), g.to_string());
    }
    if let Some(reason) = crate::tls::tls_reason(e) {
        return ProxyError::new(
            ErrorCode::UpstreamTlsError,
            format!("TLS handshake with the upstream failed: {reason}"),
        );
    }
    let what = if e.is_connect() {
        "cannot connect to the upstream"
    } else {
        "the upstream connection failed"
    };
    ProxyError::new(
        ErrorCode::UpstreamUnavailable,
        format!("{what}: {}", crate::tls::root_cause(e)),
    )
}
