//! The HTTP client the `oauth2` crate drives: the project's own hyper + rustls stack, redirects never
//! followed, a total timeout, the response size capped. It turns transport problems and non-OAuth
//! answers into [`IdpHttpError`]s that say what happened, so the caller can tell "unreachable" from
//! "slow" from "refused".

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;

use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use oauth2::{AsyncHttpClient, HttpRequest, HttpResponse};
use thiserror::Error;

use crate::config::{ClientTls, Connector};
use crate::egress::Egress;

/// Largest token-endpoint response read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
pub const IDP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum IdpHttpError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the identity provider: {0}")]
    Connect(String),
    #[error("the identity provider's host name did not resolve: {0}")]
    Dns(String),
    #[error("TLS with the identity provider failed: {0}")]
    Tls(String),
    #[error("{0}")]
    Egress(String),
    #[error("{0}")]
    EgressAuth(String),
    #[error("the identity provider answered {0} (a redirect); redirects are never followed")]
    Redirect(u16),
    #[error("the identity provider answered {status}")]
    Server {
        status: u16,
        retry_after: Option<u64>,
    },
    #[error("the identity provider answered {0} without an OAuth error")]
    Client(u16),
    #[error("the response is over {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("bad request: {0}")]
    Request(String),
}

/// Whether a connect failure came from name resolution (hyper-util's connector reports it as
/// "dns error" somewhere in the source chain).
fn is_dns_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.to_string().starts_with("dns error") {
            return true;
        }
        cur = err.source();
    }
    false
}

/// What the test command shows: the raw exchange. It holds the IdP's answer (tokens): `Debug`
/// shows the status, header names and body length only.
#[derive(Clone)]
pub struct Exchange {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("status", &self.status)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// One client per TLS setting; cheap to clone.
#[derive(Clone)]
pub struct IdpHttp {
    client: Client<HttpsConnector<Egress>, Full<Bytes>>,
    timeout: Duration,
    connector: Option<Arc<Connector>>,
    /// When set, the last exchange is kept for the test report.
    capture: Option<Arc<Mutex<Option<Exchange>>>>,
}

impl IdpHttp {
    pub fn new(
        tls: &ClientTls,
        connector: Option<Arc<Connector>>,
        timeout: Duration,
    ) -> Result<IdpHttp, String> {
        let https =
            crate::tls::https_connector(tls, connector.clone(), IDP_CONNECT_TIMEOUT.min(timeout))?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build(https);
        Ok(IdpHttp {
            client,
            timeout,
            connector,
            capture: None,
        })
    }

    /// A copy that records its exchanges.
    pub fn capturing(&self) -> (IdpHttp, Arc<Mutex<Option<Exchange>>>) {
        let slot = Arc::new(Mutex::new(None));
        (
            IdpHttp {
                capture: Some(slot.clone()),
                ..self.clone()
            },
            slot,
        )
    }

    async fn exchange(&self, req: HttpRequest) -> Result<HttpResponse, IdpHttpError> {
        let (mut parts, body) = req.into_parts();
        if let Some(v) = crate::egress::proxy_authorization(self.connector.as_deref(), &parts.uri) {
            parts.headers.insert(http::header::PROXY_AUTHORIZATION, v);
        }
        let req = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let resp = match tokio::time::timeout_at(deadline, self.client.request(req)).await {
            Err(_) => return Err(IdpHttpError::Timeout(self.timeout)),
            Ok(Err(e)) => {
                return Err(if let Some(g) = crate::egress::find(&e) {
                    match g {
                        crate::egress::EgressError::AuthRequired { .. } => {
                            IdpHttpError::EgressAuth(g.to_string())
                        }
                        _ => IdpHttpError::Egress(g.to_string()),
                    }
                } else if let Some(r) = crate::tls::tls_reason(&e) {
                    IdpHttpError::Tls(r)
                } else if is_dns_error(&e) {
                    IdpHttpError::Dns(crate::tls::root_cause(&e))
                } else {
                    IdpHttpError::Connect(crate::tls::root_cause(&e))
                })
            }
            Ok(Ok(r)) => r,
        };
        let (parts, body) = resp.into_parts();
        let body = match tokio::time::timeout_at(
            deadline,
            Limited::new(body, MAX_RESPONSE_BYTES).collect(),
        )
        .await
        {
            Err(_) => return Err(IdpHttpError::Timeout(self.timeout)),
            Ok(Err(e)) => {
                return Err(
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        IdpHttpError::TooLarge
                    } else {
                        IdpHttpError::Connect(e.to_string())
                    },
                )
            }
            Ok(Ok(b)) => b.to_bytes(),
        };
        tracing::debug!(
            status = parts.status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "token endpoint answered"
        );
        if let Some(c) = &self.capture {
            *c.lock().unwrap_or_else(|p| p.into_inner()) = Some(Exchange {
                status: parts.status.as_u16(),
                headers: parts.headers.clone(),
                body: body.clone(),
            });
        }
        let status = parts.status;
        if status.is_redirection() {
            return Err(IdpHttpError::Redirect(status.as_u16()));
        }
        if status.is_server_error() {
            let retry_after = parts
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse().ok());
            return Err(IdpHttpError::Server {
                status: status.as_u16(),
                retry_after,
            });
        }
        if status.is_client_error() && !has_oauth_error(&body) {
            return Err(IdpHttpError::Client(status.as_u16()));
        }
        let mut out = http::Response::new(body.to_vec());
        *out.status_mut() = if status == StatusCode::OK || status.is_client_error() {
            status
        } else {
            // 201/204 and friends are not token responses; let the parser say so.
            StatusCode::OK
        };
        *out.headers_mut() = parts.headers;
        Ok(out)
    }
}

fn has_oauth_error(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").map(|e| e.is_string()))
        .unwrap_or(false)
}

impl<'c> AsyncHttpClient<'c> for IdpHttp {
    type Error = IdpHttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, IdpHttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.exchange(request))
    }
}
