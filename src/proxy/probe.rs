//! The pipeline's entry point for a request the sidecar builds itself, not one read from a
//! caller: the Test of a signing profile (`authsidecar test-auth`, `POST /admin/profiles/{name}/test`
//! and the console's Test button).
//!
//! [`Proxy::probe`] makes one `GET` to the profile's first route's upstream (or to a URL the
//! operator gives) and runs it through [`Proxy::journey`], the same phases a proxied request takes:
//! body, credential, place, sign, send. Only the transport is wrapped, to record the request it is
//! handed (the signed head, exactly as it is written upstream), so the report shows what was sent.
//! Nothing here places or signs.

use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use http::header::HeaderValue;
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::BodyExt;

use super::pipeline::{CallerBody, HyperTransport, Outbound, Transport};
use super::route::RouteRt;
use super::upstream::Upstream;
use super::{ConnCtx, Proxy, Resolved};
use crate::error::{ErrorCode, ProxyError};
use crate::inject::Inputs;
use crate::oauth::test_auth::{
    mask_body, redacted, shown_headers, ReportError, SentRequest, TestReport, MAX_REPORT_BODY,
};
use crate::redact::Redactor;

/// Template variables whose values are not secrets: a header placed from only these is shown.
const PUBLIC_VARS: [&str; 7] = [
    "timestamp",
    "timestamp_ms",
    "date",
    "nonce",
    "tenant",
    "user",
    "client_id",
];

/// Signed header fields that carry no secret (SigV4's time and body hash).
const PUBLIC_SIGNED: [&str; 2] = ["x-amz-date", "x-amz-content-sha256"];

/// OAuth 1.0a parameters whose values are masked (in the header, the query or an echo).
const OAUTH1_SECRET_PARAMS: [&str; 2] = ["oauth_signature", "oauth_token"];

/// A transport that records the request it is handed, then sends it with the inner one.
struct Recording<T> {
    inner: T,
    sent: Mutex<Option<(Uri, HeaderMap)>>,
}

impl<T: Transport> Transport for Recording<T> {
    type Answer = T::Answer;

    fn status(answer: &Self::Answer) -> u16 {
        T::status(answer)
    }

    async fn send(&self, out: Outbound<'_>) -> Result<Self::Answer, ProxyError> {
        *self.sent.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((out.uri.clone(), out.headers.clone()));
        self.inner.send(out).await
    }
}

impl Proxy {
    /// The Test of a signing profile: one signed `GET` to `url`, or to the upstream of the first
    /// route (in config order) that lists the profile, through the pipeline. The report's `ok` is
    /// whether the upstream answered 2xx.
    ///
    /// Errors (nothing was sent): `profile_not_found`; `not_testable` for a profile that does not
    /// sign, or one on no route tested without a URL; `bad_request` for a URL that is not an
    /// absolute `http` or `https` URL; `tenant_invalid` for a bad tenant.
    pub async fn probe(
        &self,
        name: &str,
        url: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<TestReport, ProxyError> {
        let snap = self.snapshot.load_full();
        let Some(profile) = snap.profiles.get(name) else {
            return Err(ProxyError::new(
                ErrorCode::ProfileNotFound,
                "no profile with that name",
            ));
        };
        let Some(signing) = profile.sign.as_deref() else {
            return Err(ProxyError::new(
                ErrorCode::NotTestable,
                "this profile does not sign requests",
            ));
        };
        let Some(config_profile) = snap.config.profile(name) else {
            return Err(ProxyError::new(
                ErrorCode::ProfileNotFound,
                "no profile with that name",
            ));
        };
        if config_profile.per_user {
            return Err(ProxyError::new(
                ErrorCode::NotTestable,
                "this profile's tokens belong to end users: nothing to sign with without a user",
            ));
        }
        let mut inputs = Inputs::default();
        if let Some(t) = tenant.filter(|t| !t.is_empty()) {
            inputs.tenant = Some(super::tenant_for(
                t.as_bytes(),
                config_profile.tenant_pattern.as_ref(),
            )?);
        }
        let first = snap
            .config
            .routes
            .iter()
            .find(|r| r.profiles.iter().any(|n| **n == *name));

        // The route: the first one's (its client and metrics), or one made for `url`.
        let (own, own_metrics): (RouteRt, crate::metrics::RequestMetrics);
        let (route, client, metrics) = match (url, first) {
            (None, None) => {
                return Err(ProxyError::new(
                    ErrorCode::NotTestable,
                    "the profile is on no route: give a URL to test against",
                ))
            }
            (None, Some(first)) => {
                let rt = snap
                    .routes
                    .iter()
                    .find(|r| r.prefix == first.prefix)
                    .ok_or_else(|| ProxyError::new(ErrorCode::Internal, "route not built"))?;
                let (_, client, m) = rt
                    .profiles
                    .iter()
                    .find(|(p, _, _)| p.plan.profile().as_ref() == name)
                    .ok_or_else(|| ProxyError::new(ErrorCode::Internal, "route not built"))?;
                (rt, client.clone(), m)
            }
            (Some(url), first) => {
                let upstream = crate::config::UpstreamUrl::parse(url)
                    .map_err(|e| ProxyError::new(ErrorCode::BadRequest, format!("url: {e}")))?;
                if upstream.authority.is_none()
                    || !upstream
                        .path
                        .iter()
                        .all(|s| matches!(s, crate::config::Seg::Lit(_)))
                {
                    return Err(ProxyError::new(
                        ErrorCode::BadRequest,
                        "url: placeholders ({tenant}, {field}) are for route upstreams; give the URL to test",
                    ));
                }
                // The first route's TLS settings and connector, else the profile's connector.
                let route = crate::config::Route {
                    prefix: "/".into(),
                    upstream,
                    profiles: vec![profile.plan.profile().clone()],
                    tls: first.map(|r| r.tls.clone()).unwrap_or_default(),
                    timeout: first.map_or(crate::config::DEFAULT_UPSTREAM_TIMEOUT, |r| r.timeout),
                    connector: first
                        .and_then(|r| r.connector.clone())
                        .or_else(|| config_profile.connector.clone()),
                    upstream_hosts: Vec::new(),
                };
                let client = Upstream::new(
                    &route.tls,
                    route.connector.clone(),
                    snap.config.proxy.connect_timeout,
                )
                .map_err(|e| ProxyError::new(ErrorCode::UpstreamTlsError, e))?;
                // Its own metrics, not exported: a URL given for a test is no route.
                own_metrics = crate::metrics::Metrics::new().for_request("", name);
                own = RouteRt::new(&route, Vec::new());
                (&own, client, &own_metrics)
            }
        };

        let path = if url.is_some() {
            "/"
        } else {
            route.prefix.as_str()
        };
        let (mut parts, ()) = Request::builder()
            .method(Method::GET)
            .uri(path)
            .body(())
            .map_err(|e| ProxyError::new(ErrorCode::Internal, format!("the test request: {e}")))?
            .into_parts();
        let _begun = self.begin(&snap, &mut parts);
        let resolved = Resolved {
            route,
            rest_start: path.len(),
            profile,
            client: &client,
            metrics,
            inputs,
        };
        // The sidecar itself is the caller.
        let conn = ConnCtx {
            forwarded_for: HeaderValue::from_static("127.0.0.1"),
            trusted: true,
        };
        let transport = Recording {
            inner: HyperTransport(&client, snap.config.proxy.idle_timeout),
            sent: Mutex::new(None),
        };
        let started = tokio::time::Instant::now();
        let answer = self
            .journey(
                &snap,
                &conn,
                resolved,
                &mut parts,
                CallerBody::None,
                &transport,
            )
            .await;
        let answer = match answer {
            Ok(resp) => {
                let (head, body) = resp.into_parts();
                let read = tokio::time::timeout(route.timeout, read_some(body, MAX_REPORT_BODY))
                    .await
                    .unwrap_or_default();
                Ok((head.status.as_u16(), head.headers, read))
            }
            Err(e) => Err(e),
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let sent = transport
            .sent
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());

        // What to mask: the profile's secrets in every form, and every signature and token the
        // request carried (an echoing upstream shows them back).
        let secrets: Vec<String> = signing
            .secrets
            .iter()
            .map(|s| String::from_utf8_lossy(s.expose()).into_owned())
            .collect();
        let public_headers: Vec<&str> = config_profile
            .fields
            .iter()
            .filter(|f| f.location.as_str() == "header" && public_template(&f.value))
            .map(|f| f.key.as_str())
            .collect();
        let masked_query: Vec<&str> = config_profile
            .fields
            .iter()
            .filter(|f| f.location.as_str() == "query" && !public_template(&f.value))
            .map(|f| f.key.as_str())
            .chain(OAUTH1_SECRET_PARAMS)
            .collect();
        let mut carried: Vec<String> = Vec::new();
        let request = sent.map(|(uri, headers)| {
            let mut shown = Vec::new();
            for (n, v) in &headers {
                let raw = String::from_utf8_lossy(v.as_bytes()).into_owned();
                let value = if !v.is_sensitive()
                    || PUBLIC_SIGNED.contains(&n.as_str())
                    || public_headers.contains(&n.as_str())
                {
                    raw
                } else {
                    let (value, parts) = mask_signed_value(&raw);
                    carried.extend(parts);
                    carried.push(raw);
                    value
                };
                shown.push((n.as_str().to_string(), value));
            }
            let url = match uri.query() {
                Some(q) => {
                    let (q, parts) = mask_query(q, &masked_query);
                    carried.extend(parts);
                    format!(
                        "{}://{}{}?{q}",
                        uri.scheme_str().unwrap_or("http"),
                        uri.authority().map_or("", |a| a.as_str()),
                        uri.path()
                    )
                }
                None => uri.to_string(),
            };
            (url, shown)
        });
        let redactor = Redactor::new(
            secrets.iter().map(String::as_str),
            carried.iter().map(String::as_str),
            None,
        );
        let request = request.map(|(url, headers)| SentRequest {
            method: "GET".into(),
            url: redactor.mask(&url),
            headers: headers
                .into_iter()
                .map(|(n, v)| (n, redactor.mask(&v)))
                .collect(),
        });
        let (status, headers, body, error) = match answer {
            Ok((status, headers, body)) => (
                Some(status),
                shown_headers(&headers, &redactor),
                mask_body(&body, &redactor),
                None,
            ),
            Err(e) => (
                None,
                Vec::new(),
                String::new(),
                Some(ReportError {
                    code: e.code.as_str().to_string(),
                    message: redactor.mask(&e.message),
                }),
            ),
        };
        tracing::info!(profile = %name, status, "test: one signed request");
        Ok(TestReport {
            profile: name.to_string(),
            kind: config_profile.kind.type_name().to_string(),
            token_url: None,
            request,
            ok: status.is_some_and(|s| (200..300).contains(&s)),
            status,
            elapsed_ms,
            headers,
            body,
            error,
            token: None,
            stored: false,
        })
    }
}

/// Whether a field's value uses only variables that are not secrets (and at least one: a literal
/// may be a secret put there by a `${VAR}` reference).
fn public_template(t: &crate::template::Template) -> bool {
    let mut any = false;
    for v in t.vars() {
        let v = v.to_string();
        if !(PUBLIC_VARS.contains(&v.as_str()) || v.starts_with("context.")) {
            return false;
        }
        any = true;
    }
    any
}

/// A sensitive header value as shown: SigV4's `Authorization` with only its signature masked,
/// OAuth 1.0a's with its signature and token masked, anything else masked whole. Also returns the
/// masked parts, for the redactor.
fn mask_signed_value(raw: &str) -> (String, Vec<String>) {
    if let Some(rest) = raw.strip_prefix("AWS4-HMAC-SHA256 ") {
        if let Some((before, sig)) = rest.rsplit_once("Signature=") {
            return (
                format!("AWS4-HMAC-SHA256 {before}Signature={}", redacted(sig)),
                vec![sig.to_string()],
            );
        }
    }
    if let Some(rest) = raw.strip_prefix("OAuth ") {
        let mut parts = Vec::new();
        let shown: Vec<String> = rest
            .split(", ")
            .map(|p| match p.split_once('=') {
                Some((k, v)) if OAUTH1_SECRET_PARAMS.contains(&k) => {
                    let v = v.trim_matches('"');
                    parts.push(v.to_string());
                    parts.push(
                        String::from_utf8_lossy(&crate::sign::percent_decode(v.as_bytes(), false))
                            .into_owned(),
                    );
                    format!("{k}=\"{}\"", redacted(v))
                }
                _ => p.to_string(),
            })
            .collect();
        return (format!("OAuth {}", shown.join(", ")), parts);
    }
    (redacted(raw), Vec::new())
}

/// A query with the values of `names` masked; also returns those values (raw and decoded).
fn mask_query(query: &str, names: &[&str]) -> (String, Vec<String>) {
    let mut parts = Vec::new();
    let shown: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if names.contains(&k) => {
                parts.push(v.to_string());
                parts.push(
                    String::from_utf8_lossy(&crate::sign::percent_decode(v.as_bytes(), true))
                        .into_owned(),
                );
                format!("{k}={}", redacted(v))
            }
            _ => pair.to_string(),
        })
        .collect();
    (shown.join("&"), parts)
}

/// Up to `max` bytes of an answer's body (the rest is not read); what arrived before an error.
async fn read_some<B>(mut body: B, max: usize) -> Bytes
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut out = BytesMut::new();
    while out.len() < max {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    out.extend_from_slice(d);
                }
            }
            _ => break,
        }
    }
    out.truncate(max);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_and_tokens_are_masked_and_the_rest_is_shown() {
        let (shown, parts) = mask_signed_value(
            "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=abcdef0123",
        );
        assert!(shown.contains("Credential=AKID/20260101/us-east-1/s3/aws4_request"));
        assert!(shown.ends_with("Signature=[redacted len=10]"), "{shown}");
        assert_eq!(parts, ["abcdef0123"]);
        let (shown, parts) = mask_signed_value(
            r#"OAuth realm="r", oauth_consumer_key="ck", oauth_token="tok-1", oauth_signature="a%2Bb%3D""#,
        );
        assert!(shown.contains(r#"oauth_consumer_key="ck""#), "{shown}");
        assert!(
            !shown.contains("tok-1") && !shown.contains("a%2Bb"),
            "{shown}"
        );
        assert!(parts.contains(&"a+b=".to_string()));
        assert_eq!(mask_signed_value("hexsig").0, "[redacted len=6]");
        let (q, parts) = mask_query("a=1&oauth_signature=x%2By&b=2", &["oauth_signature"]);
        assert_eq!(q, "a=1&oauth_signature=[redacted len=5]&b=2");
        assert!(parts.contains(&"x+y".to_string()));
    }
}
