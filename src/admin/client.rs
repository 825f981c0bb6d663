//! A small client of a running sidecar's admin API, for the command line (`authsidecar test-auth`
//! on an `oauth2_authorization_code` profile). It reaches the admin listener of the config
//! (`[admin] listen`, `http`, or `https` when the listener has `tls`, trusting the listener's own
//! certificate file), or the URL given, with `[admin] token` as the bearer token. Redirects are
//! not followed; every call has a deadline.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::{AdminSettings, ClientTls};
use crate::egress::Egress;

/// The longest a call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read (a report's body is at most 64 KiB, masked and pretty-printed).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

pub struct AdminClient {
    base: String,
    token: String,
    client: Client<HttpsConnector<Egress>, Full<Bytes>>,
}

impl AdminClient {
    /// A client of the admin listener of `admin` (a wildcard listen address is reached on
    /// loopback), or of `url` (`http://host:port`) when given. Needs `[admin] token`.
    pub fn new(admin: &AdminSettings, url: Option<&str>) -> Result<AdminClient, String> {
        let token = admin
            .token
            .as_ref()
            .map(|t| t.expose().to_string())
            .ok_or("the admin API needs [admin] token in the config")?;
        let scheme = if admin.tls.is_some() { "https" } else { "http" };
        let base = match url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let mut addr = admin.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(if addr.is_ipv4() {
                        std::net::Ipv4Addr::LOCALHOST.into()
                    } else {
                        std::net::Ipv6Addr::LOCALHOST.into()
                    });
                }
                format!("{scheme}://{addr}")
            }
        };
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!("{base}: expected an http:// or https:// URL"));
        }
        // An admin listener with TLS usually has its own (self-signed) certificate: trusted as
        // the only root.
        let tls = ClientTls {
            ca_file: admin.tls.as_ref().map(|t| t.cert.clone()),
            ..ClientTls::default()
        };
        let https = crate::tls::https_connector(&tls, None, Duration::from_secs(5))?;
        Ok(AdminClient {
            base,
            token,
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    /// The admin API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// One call: the status and the JSON answer (`Null` when the answer is not JSON).
    pub async fn call(&self, method: Method, path: &str) -> Result<(u16, Value), String> {
        let url = format!("{}{path}", self.base);
        let req = Request::builder()
            .method(method)
            .uri(&url)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("{url}: {e}"))?;
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("{url}: {}", crate::tls::root_cause(&e)))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| format!("{url}: no answer within {CALL_TIMEOUT:?}"))?
    }
}
