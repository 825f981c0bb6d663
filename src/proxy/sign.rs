//! The pipeline's sign phase: a placed request, exactly as the transport will write it, signed by
//! its profile's signer (`sign::sigv4`, `sign::hmac`, `sign::oauth1`).
//!
//! Both transports write `host` and (for a buffered body) `content-length` themselves when the
//! request has none; a signed request gets both here, with the values the transport would write,
//! so what is signed is what is sent.

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, Method, Uri};

use super::pipeline::AttemptBody;
use crate::config::{OAuth1Placement, SignMethod, Signing};
use crate::error::{ErrorCode, ProxyError};
use crate::inject::{Inputs, Plan};
use crate::sign::{oauth1, sigv4, Request};

const FORM: &str = "application/x-www-form-urlencoded";

fn internal(what: &str, e: impl std::fmt::Display) -> ProxyError {
    ProxyError::new(ErrorCode::Internal, format!("{what}: {e}"))
}

/// `uri` with a new query (without `?`).
fn with_query(uri: &Uri, query: &str) -> Result<Uri, ProxyError> {
    let mut parts = uri.clone().into_parts();
    let pq = if query.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{query}", uri.path())
    };
    parts.path_and_query = Some(pq.parse().map_err(|e| internal("the signed URI", e))?);
    Uri::from_parts(parts).map_err(|e| internal("the signed URI", e))
}

fn sensitive(value: &str) -> Result<HeaderValue, ProxyError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| internal("a signature header", "not a valid header value"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// Signs the placed request; returns its URI and body as they go upstream (OAuth 1.0a's query and
/// form placements change them).
pub(crate) fn sign(
    signing: &Signing,
    plan: &Plan,
    inputs: &mut Inputs,
    method: &Method,
    uri: Uri,
    headers: &mut HeaderMap,
    body: AttemptBody,
) -> Result<(Uri, AttemptBody), ProxyError> {
    let Some(authority) = uri.authority() else {
        return Err(internal("the upstream URI", "has no host"));
    };
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let line = super::h1::host_line(authority, if https { 443 } else { 80 });
    let host = String::from_utf8_lossy(&line["host: ".len()..]).into_owned();
    headers.insert(
        HOST,
        HeaderValue::from_str(&host).map_err(|e| internal("the Host header", e))?,
    );
    let form_placement = matches!(
        signing.method,
        SignMethod::OAuth1 {
            placement: OAuth1Placement::Form,
            ..
        }
    );
    if form_placement {
        let is_form = headers
            .get(CONTENT_TYPE)
            .is_some_and(|ct| oauth1::is_form(ct.as_bytes()));
        let empty = matches!(&body, AttemptBody::Buffered(b) if b.is_empty());
        if matches!(*method, Method::GET | Method::HEAD) {
            return Err(ProxyError::new(
                ErrorCode::BodyNotInjectable,
                format!("placement = \"form\" puts the OAuth parameters in the body, which a {method} request has none of"),
            ));
        }
        if !is_form {
            if !empty {
                return Err(ProxyError::new(
                    ErrorCode::UnsupportedMediaType,
                    "placement = \"form\" needs an application/x-www-form-urlencoded body",
                ));
            }
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(FORM));
        }
    }
    let body_bytes: &[u8] = match &body {
        AttemptBody::Buffered(b) => b,
        AttemptBody::Stream(_) => &[],
    };
    if let AttemptBody::Buffered(b) = &body {
        if !b.is_empty() || matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(b.len()));
        } else {
            headers.remove(CONTENT_LENGTH);
        }
    }

    // What each signer needs beforehand: SigV4 replaces its own headers; HMAC's time and nonce
    // were made before placement (fields use them); OAuth 1.0a takes a fresh nonce.
    if matches!(signing.method, SignMethod::SigV4 { .. }) {
        for name in sigv4::SET_HEADERS {
            headers.remove(name);
        }
    }
    let moment = match signing.method {
        SignMethod::Hmac { .. } => Some(
            inputs
                .moment
                .get_or_insert_with(crate::sign::hmac::Moment::fresh)
                .clone(),
        ),
        _ => None,
    };
    let nonce = match signing.method {
        SignMethod::OAuth1 { .. } => oauth1::fresh_nonce(),
        _ => String::new(),
    };
    let made = {
        let list: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        let req = view(method, &uri, &host, &list, body_bytes);
        match (&signing.method, &moment) {
            (
                SignMethod::SigV4 {
                    signer, payload, ..
                },
                _,
            ) => Made::SigV4(
                signer
                    .sign(&req, *payload, crate::sign::unix_now())
                    .map_err(|e| internal("SigV4 signing", e))?,
            ),
            (SignMethod::Hmac { signer }, Some(m)) => Made::Hmac(signer.sign(&req, m)),
            (SignMethod::Hmac { .. }, None) => return Err(internal("HMAC signing", "no moment")),
            (
                SignMethod::OAuth1 {
                    client,
                    token,
                    three_legged,
                    ..
                },
                _,
            ) => {
                let mut proto = oauth1::Protocol::new(&nonce, crate::sign::unix_now());
                if let Some((t, s)) = token {
                    proto = proto.with_token(t.expose(), s.expose());
                } else if three_legged.is_some() {
                    // Three-legged: the end user's token credentials, from their grant.
                    let user = inputs.token.as_ref().and_then(|t| {
                        Some((
                            t.access_token.expose(),
                            t.entered(crate::oauth::oauth1::TOKEN_SECRET)?,
                        ))
                    });
                    let Some((t, s)) = user else {
                        return Err(internal(
                            "OAuth 1.0a signing",
                            "the end user's grant has no token secret",
                        ));
                    };
                    proto = proto.with_token(t, s);
                }
                Made::OAuth1(
                    client
                        .sign(&req, &proto)
                        .map_err(|e| internal("OAuth 1.0a signing", e))?,
                )
            }
        }
    };

    let mut uri = uri;
    let mut new_body = None;
    let mut query = None;
    match (made, &signing.method) {
        (Made::SigV4(signed), _) => {
            for (name, value) in signed.headers() {
                headers.insert(HeaderName::from_static(name), sensitive(value)?);
            }
        }
        (Made::Hmac(signature), _) => {
            inputs.signature = Some(signature);
            query = plan.apply_signature_fields(headers, uri.query(), inputs)?;
        }
        (
            Made::OAuth1(signed),
            SignMethod::OAuth1 {
                realm, placement, ..
            },
        ) => match placement {
            OAuth1Placement::Header => {
                crate::inject::remove_variants(headers, &AUTHORIZATION);
                headers.insert(
                    AUTHORIZATION,
                    sensitive(&signed.authorization(realm.as_deref()))?,
                );
            }
            OAuth1Placement::Query => {
                query = Some(match uri.query() {
                    Some(q) if !q.is_empty() => format!("{q}&{}", signed.form_encoded()),
                    _ => signed.form_encoded(),
                });
            }
            OAuth1Placement::Form => {
                let mut b = body_bytes.to_vec();
                if !b.is_empty() {
                    b.push(b'&');
                }
                b.extend_from_slice(signed.form_encoded().as_bytes());
                headers.insert(CONTENT_LENGTH, HeaderValue::from(b.len()));
                new_body = Some(AttemptBody::Buffered(Bytes::from(b)));
            }
        },
        (Made::OAuth1(_), _) => {
            return Err(internal("OAuth 1.0a signing", "not an oauth1 profile"))
        }
    }
    if let Some(q) = query {
        // A signature in the URI: caches should not keep the request (RFC 6750 §2.3's reasoning).
        uri = with_query(&uri, &q)?;
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
    }
    Ok((uri, new_body.unwrap_or(body)))
}

/// What a signer made, before it is written into the request.
enum Made {
    SigV4(sigv4::Signed),
    Hmac(String),
    OAuth1(oauth1::Signed),
}

fn view<'a>(
    method: &'a Method,
    uri: &'a Uri,
    host: &'a str,
    headers: &'a [(&'a str, &'a [u8])],
    body: &'a [u8],
) -> Request<'a> {
    Request {
        method: method.as_str(),
        scheme: uri.scheme_str().unwrap_or("http"),
        authority: host,
        path: uri.path(),
        query: uri.query(),
        headers,
        body,
    }
}
