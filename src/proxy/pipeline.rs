//! The journey of every proxied request, written once, in named phases. Both protocol front ends
//! (the HTTP/1 fast front end in `h1.rs`, and hyper for everything else) only turn bytes into a
//! request head and the answer back into bytes; both call these phases, and both send through a
//! [`Transport`]:
//!
//! 1. [`Proxy::begin`]: request id (the caller's `X-Request-Id` when usable) and the access-log
//!    fields, before anything can fail;
//! 2. `resolve` (in `mod.rs`): head checks, route, control headers, profile, caller values;
//! 3. [`Proxy::journey`]:
//!    - **body**: a declared length over the cap is refused; the body is buffered when the payload
//!      is rewritten, the profile signs it (within `max_signed_body_bytes`, else 413) or a replay
//!      may need it, streamed otherwise;
//!    - **credential**: static ones are in the plan; OAuth tokens come from the token cache;
//!    - **place**: path parameters and query, headers, then the payload ([`place`]);
//!    - **sign** (`sign.rs`; `aws_sigv4`, `hmac`, `oauth1` profiles): on the request exactly as it
//!      will be sent (the upstream URI, the `host` and `content-length` the transport writes, the
//!      final header fields, the body), then the fields that use `{{signature}}`; every attempt is
//!      signed afresh, and a transport never resends a signed request's bytes;
//!    - **send**: through the route's transport;
//!    - **replay** ([`Proxy::reauth`]): on a `reauth_on` status to a token at least
//!      `reauth_min_token_age` old, the token is dropped, a new one obtained once, and a buffered
//!      request is sent once more; a user's grant refused on the way answers
//!      `authorization_required` with a login link;
//! 4. [`Proxy::finish`] (metrics and the access log) on success, [`Proxy::fail`] on an error
//!    (error log, the `authorization_required` metric, the JSON error answer).
//!
//! A request the sidecar makes itself (a signing profile's Test) enters at `Proxy::probe`
//! (`probe.rs`), which builds the resolved request and calls [`Proxy::journey`]: there is no
//! second way through.
//!
//! Transports: [`HyperTransport`] (pooled hyper client: TLS, HTTP/2, connectors, streamed bodies)
//! and the fast path's own pooled plain HTTP/1 connections (`h1::FastTransport`). Each applies the
//! HTTP/1 message rules of `message.rs` to the answer it reads, so an answer is cleaned the same way
//! whichever carried it.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use super::body::{self, GuardedBody, OutBody};
use super::route::RouteRt;
use super::upstream::Upstream;
use super::{
    build_head, content_length, forwarding, ConnCtx, ProfileRt, Proxy, Resolved, Snapshot,
    X_REQUEST_ID,
};
use crate::config::{SignMethod, Signing};
use crate::error::{ErrorCode, ProxyError};
use crate::inject::{Inputs, Plan};
use crate::metrics::RequestMetrics;
use crate::token::{TokenErrorKind, TokenKey};

/// The caller's body as a front end hands it to the pipeline.
pub(crate) enum CallerBody {
    /// The front end knows the request to be bodiless.
    None,
    /// hyper's body, read (or streamed) by the body phase.
    Incoming(Incoming),
    /// A body the front end has read whole (a declared length within its limit and
    /// `max_body_bytes`).
    Read(Bytes),
}

/// The request body as the attempts see it.
pub(crate) enum AttemptBody {
    Stream(GuardedBody),
    Buffered(Bytes),
}

/// One upstream request, placed and ready for a transport.
pub(crate) struct Outbound<'a> {
    pub route: &'a RouteRt,
    pub method: &'a Method,
    pub uri: Uri,
    /// The placed header fields. A transport that needs them owned takes them only when `last`.
    pub headers: &'a mut HeaderMap,
    pub body: AttemptBody,
    /// No other attempt follows this one.
    pub last: bool,
    /// The sign phase signed it: a transport never sends these bytes twice. One that could have
    /// resent them (a pooled connection that turned out closed before any answer) sets `stale`
    /// instead and fails; the pipeline signs the request again and sends it with `fresh`. Such a
    /// transport must not take `headers`.
    pub signed: bool,
    pub stale: &'a std::sync::atomic::AtomicBool,
    /// Open a new connection (no pooled one).
    pub fresh: bool,
}

/// How the pipeline reaches an upstream. An answer comes back with its status checked and its
/// header fields cleaned by the rules of `message.rs`.
pub(crate) trait Transport {
    type Answer;
    fn status(answer: &Self::Answer) -> u16;
    fn send(&self, out: Outbound<'_>) -> impl Future<Output = Result<Self::Answer, ProxyError>>;
}

/// The hyper client of a route (TLS, connectors, HTTP/2 upstreams, streamed bodies), and the
/// proxy's `idle_timeout`, which bounds each wait for the answer's body.
pub(crate) struct HyperTransport<'a>(pub &'a Upstream, pub std::time::Duration);

impl Transport for HyperTransport<'_> {
    type Answer = Response<body::AnswerBody>;

    fn status(answer: &Self::Answer) -> u16 {
        answer.status().as_u16()
    }

    async fn send(&self, out: Outbound<'_>) -> Result<Response<body::AnswerBody>, ProxyError> {
        let headers = if out.last {
            std::mem::take(out.headers)
        } else {
            out.headers.clone()
        };
        let chunked_stream = matches!(out.body, AttemptBody::Stream(_))
            && !headers.contains_key(http::header::CONTENT_LENGTH);
        let body: OutBody = match out.body {
            AttemptBody::Stream(g) => Either::Left(g),
            AttemptBody::Buffered(b) => Either::Right(Full::new(b)),
        };
        let mut req = Request::new(body);
        *req.method_mut() = out.method.clone();
        *req.uri_mut() = out.uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers;
        // A streamed body of unknown length goes out chunked, whatever the method: hyper would
        // otherwise send a GET or HEAD without its body.
        if chunked_stream && body_may_follow(&req) {
            req.headers_mut().insert(
                http::header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        // A method that defines a meaning for content says how long it is, even when empty (as
        // the fast transport does; some servers answer 411 otherwise).
        if matches!(*out.method, Method::POST | Method::PUT | Method::PATCH)
            && !req.headers().contains_key(http::header::CONTENT_LENGTH)
            && !req.headers().contains_key(http::header::TRANSFER_ENCODING)
            && req.body().is_end_stream()
        {
            req.headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        // Interim answers are counted: more than the fast path allows is the same 502.
        let interim = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = interim.clone();
        hyper::ext::on_informational(&mut req, move |_| {
            seen.fetch_add(1, Ordering::Relaxed);
        });
        let mut resp = self.0.send(req, out.route.timeout).await?;
        if interim.load(Ordering::Relaxed) > super::message::MAX_INTERIM_ANSWERS {
            return Err(super::message::invalid_answer(
                "more than 16 interim (1xx) answers",
            ));
        }
        let status = resp.status().as_u16();
        let reason_len = match resp.extensions().get::<hyper::ext::ReasonPhrase>() {
            Some(r) => r.as_bytes().len(),
            None => resp.status().canonical_reason().map_or(0, str::len),
        };
        super::message::clean_answer(out.method, status, reason_len, resp.headers_mut())?;
        let (parts, body) = resp.into_parts();
        let body = body::AnswerBody::new(body, self.1).await.map_err(|e| {
            super::message::invalid_answer(&format!("the answer's body is malformed: {e}"))
        })?;
        Ok(Response::from_parts(parts, body))
    }
}

/// Whether a request's streamed body has anything left (a body that is already at its end needs
/// no framing).
fn body_may_follow(req: &Request<OutBody>) -> bool {
    !req.body().is_end_stream()
}

/// What [`Proxy::begin`] records for the end of a request.
pub(crate) struct Begun {
    pub started: tokio::time::Instant,
    pub rid: String,
    pub logged: Option<(Method, Uri)>,
}

impl Proxy {
    /// Phase 1: the request id, set on the request (it goes upstream, into the access log and
    /// into every error body), and the access log's method and target.
    pub(crate) fn begin(&self, snap: &Snapshot, parts: &mut http::request::Parts) -> Begun {
        let started = tokio::time::Instant::now();
        let rid = self.request_id(parts.headers.get(X_REQUEST_ID).cloned());
        if let Ok(v) = HeaderValue::from_str(&rid) {
            parts.headers.insert(X_REQUEST_ID, v);
        }
        let logged = snap
            .access_log
            .then(|| (parts.method.clone(), parts.uri.clone()));
        Begun {
            started,
            rid,
            logged,
        }
    }

    /// Phase 4 for an error: the error log line, the `authorization_required` metric, the error
    /// answer, and then metrics and the access log.
    pub(crate) fn fail(
        &self,
        snap: &Snapshot,
        e: ProxyError,
        begun: Begun,
        metrics: Option<&RequestMetrics>,
    ) -> Response<Full<Bytes>> {
        if e.code == ErrorCode::Internal {
            tracing::warn!(code = %e.code, request_id = %begun.rid, "{}", e.message);
        } else {
            tracing::debug!(code = %e.code, request_id = %begun.rid, "{}", e.message);
        }
        if e.code == ErrorCode::AuthorizationRequired {
            if let Some(m) = metrics {
                m.authorization_required();
            }
        }
        let resp = e.into_response(&begun.rid);
        self.done(snap, metrics, resp.status().as_u16(), begun);
        resp
    }

    /// Phase 4: metrics and the access log line, once the answer's status is known.
    pub(crate) fn done(
        &self,
        snap: &Snapshot,
        metrics: Option<&RequestMetrics>,
        status: u16,
        begun: Begun,
    ) {
        self.finish(
            snap,
            metrics,
            status,
            begun.started,
            begun.logged,
            &begun.rid,
        );
    }

    /// Phase 3: body, credential, place, send, replay.
    pub(crate) async fn journey<T: Transport>(
        &self,
        snap: &Snapshot,
        conn: &ConnCtx,
        r: Resolved<'_>,
        parts: &mut http::request::Parts,
        body: CallerBody,
        transport: &T,
    ) -> Result<T::Answer, ProxyError> {
        let Resolved {
            route,
            rest_start,
            profile,
            metrics: m,
            mut inputs,
            ..
        } = r;
        let plan = &profile.plan;
        let with_profile = |e: ProxyError| e.with_profile(plan.profile());
        let oauth = profile.oauth.as_ref();

        // body (a signing profile reads the body it signs whole, within max_signed_body_bytes)
        let signing = profile.sign.as_deref();
        let sign_cap = signing
            .filter(|s| {
                s.method.needs_body(
                    parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .map(HeaderValue::as_bytes),
                )
            })
            .map(|s| s.max_signed_body_bytes);
        let too_big_to_sign = |len: u64, cap: u64| {
            with_profile(ProxyError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "request body of {len} bytes is over max_signed_body_bytes ({cap}); a signed body is read whole"
                ),
            ))
        };
        let replay_cap = oauth
            .filter(|o| !o.reauth_on.is_empty())
            .map_or(0, |o| o.replay_max);
        let body = match body {
            CallerBody::None => AttemptBody::Buffered(Bytes::new()),
            CallerBody::Read(b) => match sign_cap {
                Some(cap) if b.len() as u64 > cap => {
                    return Err(too_big_to_sign(b.len() as u64, cap))
                }
                _ => AttemptBody::Buffered(b),
            },
            CallerBody::Incoming(body) => {
                // Request trailers are not forwarded (`GuardedBody` ends at them): nor is the
                // field announcing them.
                parts.headers.remove(http::header::TRAILER);
                let max = snap.config.proxy.max_body_bytes;
                if let Some(len) = content_length(&parts.headers) {
                    if len > max {
                        return Err(with_profile(ProxyError::new(
                            ErrorCode::PayloadTooLarge,
                            format!("request body of {len} bytes is over max_body_bytes ({max})"),
                        )));
                    }
                }
                if let (Some(len), Some(cap)) = (content_length(&parts.headers), sign_cap) {
                    if len > cap {
                        return Err(too_big_to_sign(len, cap));
                    }
                }
                let known_len = body.size_hint().exact();
                let read_max = sign_cap.map_or(max, |c| c.min(max));
                let guarded = GuardedBody::new(
                    body,
                    read_max,
                    snap.config.proxy.body_read_timeout,
                    snap.config.proxy.body_total_timeout,
                );
                if plan.has_payload()
                    || sign_cap.is_some()
                    || known_len.is_some_and(|n| replay_cap > 0 && n <= replay_cap)
                {
                    AttemptBody::Buffered(body::read_all(guarded).await.map_err(|e| {
                        match (e, sign_cap) {
                            (body::BodyError::TooLarge(_), Some(cap)) if cap < max => {
                                too_big_to_sign(cap + 1, cap)
                            }
                            (e, _) => with_profile(e.into_proxy_error()),
                        }
                    })?)
                } else {
                    AttemptBody::Stream(guarded)
                }
            }
        };

        // credential
        let token_key = self.credential(snap, profile, &mut inputs).await?;

        // place and send
        forwarding(&mut parts.headers, conn);
        let again = match &body {
            AttemptBody::Buffered(b) if replay_cap > 0 && b.len() as u64 <= replay_cap => {
                Some(b.clone())
            }
            _ => None,
        };
        let mut headers = std::mem::take(&mut parts.headers);
        let parts = &*parts;
        // A signed request may have to be signed again before it is sent (see `Outbound::stale`).
        let unsigned_body = match (&body, signing) {
            (AttemptBody::Buffered(b), Some(_)) => Some(b.clone()),
            _ => None,
        };
        let attempts = Attempts {
            route,
            plan,
            signing,
            parts,
            rest_start,
            stale: std::sync::atomic::AtomicBool::new(false),
        };
        let sent = tokio::time::Instant::now();
        let last = again.is_none();
        let ans = match attempts
            .send(transport, &mut inputs, &mut headers, body, last, false)
            .await
        {
            // Signed again (a new nonce and timestamp), on a new connection.
            Err(e) if attempts.stale.load(Ordering::Relaxed) => match unsigned_body {
                Some(b) => {
                    let b = AttemptBody::Buffered(b);
                    Box::pin(attempts.send(transport, &mut inputs, &mut headers, b, last, true))
                        .await
                }
                None => Err(e),
            },
            r => r,
        }
        .map_err(with_profile)?;
        m.upstream(sent.elapsed());

        // replay: the upstream refused the token; refresh once, send once more
        let status = T::status(&ans);
        if oauth.is_none_or(|o| !o.reauth_on.contains(&status)) {
            return Ok(ans);
        }
        // Boxed: rare, and its state would otherwise sit in every connection's task.
        let Reauth::Replay(new_token) = Box::pin(self.reauth(
            snap,
            profile,
            token_key.as_ref(),
            &inputs,
            status,
            again.is_some(),
        ))
        .await?
        else {
            return Ok(ans);
        };
        let Some(bytes) = again else {
            return Ok(ans);
        };
        // The first answer is not read: its connection is closed.
        drop(ans);
        inputs.token = Some(new_token);
        // Placed and signed again: a new nonce and timestamp.
        let body = AttemptBody::Buffered(bytes);
        attempts
            .send(transport, &mut inputs, &mut headers, body, true, false)
            .await
            .map_err(with_profile)
    }

    /// Phase "replay", decided here for every front end and transport: what to do with an
    /// upstream answer of `status` to a request that carried `inputs.token` (cached under `key`).
    ///
    /// - Not a `reauth_on` status, or no cached token: pass the answer through.
    /// - The token is younger than `reauth_min_token_age`: pass the answer through and keep the
    ///   token, so an upstream that refuses every token cannot make one token request per call.
    /// - Otherwise the token is dropped (only if it is still the cached one). A request that cannot
    ///   be replayed passes the answer through; one that can gets a new token through the single
    ///   flight and is replayed with it.
    /// - No new token: the upstream's own answer is returned, except when the end user's grant is
    ///   gone (the refresh was refused): then `authorization_required` with a new login link, built
    ///   as on the expiry path.
    async fn reauth(
        &self,
        snap: &Snapshot,
        profile: &ProfileRt,
        key: Option<&TokenKey>,
        inputs: &Inputs,
        status: u16,
        replayable: bool,
    ) -> Result<Reauth, ProxyError> {
        let (Some(o), Some(key), Some(token)) = (profile.oauth.as_ref(), key, &inputs.token) else {
            return Ok(Reauth::PassThrough);
        };
        if !o.reauth_on.contains(&status) {
            return Ok(Reauth::PassThrough);
        }
        if token.received_at.elapsed() < o.min_token_age {
            self.stats.reauth_too_young.fetch_add(1, Ordering::Relaxed);
            return Ok(Reauth::PassThrough);
        }
        self.cache.invalidate_if_current(key, token);
        if !replayable {
            self.stats.replays_skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(Reauth::PassThrough);
        }
        match self.cache.get(key, &o.dyn_source, &o.policy).await {
            Ok(new_token) => {
                self.stats.replays.fetch_add(1, Ordering::Relaxed);
                Ok(Reauth::Replay(new_token))
            }
            Err(e) if e.kind == TokenErrorKind::AuthorizationRequired && o.per_user => Err(self
                .login_required(snap, profile.plan.profile(), inputs)
                .await),
            // No new token: the upstream's own answer is the most honest reply.
            Err(_) => Ok(Reauth::PassThrough),
        }
    }
}

/// The replay phase's decision about an upstream answer (see [`Proxy::reauth`]).
pub(crate) enum Reauth {
    /// Return the upstream's answer as it is.
    PassThrough,
    /// Send the request once more, with this new token.
    Replay(Arc<crate::token::Token>),
}

/// What every attempt of one request shares.
struct Attempts<'a> {
    route: &'a RouteRt,
    plan: &'a Plan,
    signing: Option<&'a Signing>,
    parts: &'a http::request::Parts,
    rest_start: usize,
    /// Set by a transport that would have resent a signed request's bytes (see `Outbound`).
    stale: std::sync::atomic::AtomicBool,
}

impl Attempts<'_> {
    /// One attempt: place, sign, send.
    async fn send<T: Transport>(
        &self,
        transport: &T,
        inputs: &mut Inputs,
        headers: &mut HeaderMap,
        body: AttemptBody,
        last: bool,
        fresh: bool,
    ) -> Result<T::Answer, ProxyError> {
        let (uri, body) = place_and_sign(
            self.route,
            self.plan,
            self.signing,
            inputs,
            self.parts,
            self.rest_start,
            headers,
            body,
        )?;
        transport
            .send(Outbound {
                route: self.route,
                method: &self.parts.method,
                uri,
                headers,
                body,
                last,
                signed: self.signing.is_some(),
                stale: &self.stale,
                fresh,
            })
            .await
    }
}

/// Phases "place" and "sign" of one attempt: an `hmac` profile's time and nonce are made first
/// (fields such as `X-Timestamp: {{timestamp}}` use them), then the request is placed, then signed
/// as it will be sent. Every attempt is signed afresh.
#[allow(clippy::too_many_arguments)]
fn place_and_sign(
    route: &RouteRt,
    plan: &Plan,
    signing: Option<&Signing>,
    inputs: &mut Inputs,
    parts: &http::request::Parts,
    rest_start: usize,
    headers: &mut HeaderMap,
    body: AttemptBody,
) -> Result<(Uri, AttemptBody), ProxyError> {
    let Some(signing) = signing else {
        return place(route, plan, inputs, parts, rest_start, headers, body);
    };
    if matches!(signing.method, SignMethod::Hmac { .. }) {
        inputs.moment = Some(crate::sign::hmac::Moment::fresh());
        inputs.signature = None;
    }
    let (uri, body) = place(route, plan, inputs, parts, rest_start, headers, body)?;
    super::sign::sign(signing, plan, inputs, &parts.method, uri, headers, body)
        .map_err(|e| e.with_profile(plan.profile()))
}

/// Phase "place": path parameters and query (they shape the upstream URI), header fields, then
/// the payload of a buffered body. Placing again on a map it was placed on gives the same head:
/// the profile's fields replace what is there, so a replay needs no copy of the caller's head.
pub(crate) fn place(
    route: &RouteRt,
    plan: &Plan,
    inputs: &Inputs,
    parts: &http::request::Parts,
    rest_start: usize,
    headers: &mut HeaderMap,
    body: AttemptBody,
) -> Result<(Uri, AttemptBody), ProxyError> {
    let uri = build_head(route, plan, inputs, &parts.uri, rest_start, headers)?;
    let body = match body {
        AttemptBody::Buffered(b) if plan.has_payload() => {
            AttemptBody::Buffered(plan.rewrite_payload(&parts.method, headers, b, inputs)?)
        }
        b => b,
    };
    Ok((uri, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every attempt is placed and signed afresh: the replay after a 401 and the resend after a
    /// stale pooled connection both go through `place_and_sign`, so they carry a new nonce,
    /// timestamp and signature.
    #[tokio::test]
    async fn each_attempt_is_signed_afresh() {
        let text = r#"
[[routes]]
prefix = "/s/"
upstream = "http://127.0.0.1:1/base/"
profiles = ["o1", "mac"]

[profiles.o1]
type = "oauth1"
consumer_key = "ck"
consumer_secret = "cs"
token = "t"
token_secret = "ts"

[profiles.mac]
type = "hmac"
secret = "k"
string_to_sign = "{{method}} {{path}} {{nonce}}"
[[profiles.mac.fields]]
in = "header"
key = "X-Signature"
value = "{{signature}}"
[[profiles.mac.fields]]
in = "query"
key = "nonce"
value = "{{nonce}}"
"#;
        let config = crate::config::Config::from_str_with_env(
            text,
            &crate::config::Env::from_pairs([("A", "b")]),
        )
        .unwrap();
        let snap = super::super::Snapshot::build(
            Arc::new(config),
            Arc::new(crate::store::Store::memory()),
            crate::metrics::Metrics::new(),
        )
        .unwrap();
        for (profile, header) in [("o1", "authorization"), ("mac", "x-signature")] {
            let (mut parts, ()) = Request::builder()
                .uri("/s/items?a=1")
                .header("host", "sidecar")
                .header("x-authsidecar-profile", profile)
                .body(())
                .unwrap()
                .into_parts();
            let mut metrics = None;
            let r = super::super::resolve(&snap, &mut parts, &mut metrics).unwrap();
            let mut inputs = r.inputs;
            let mut headers = std::mem::take(&mut parts.headers);
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (uri, _) = place_and_sign(
                    r.route,
                    &r.profile.plan,
                    r.profile.sign.as_deref(),
                    &mut inputs,
                    &parts,
                    r.rest_start,
                    &mut headers,
                    AttemptBody::Buffered(Bytes::new()),
                )
                .unwrap();
                assert_eq!(headers["host"], "127.0.0.1:1");
                assert!(headers[header].is_sensitive());
                seen.push((uri.to_string(), headers[header].clone()));
            }
            assert_ne!(seen[0].1, seen[1].1, "{profile}: the same signature twice");
            if profile == "mac" {
                // The query field is placed after signing, once (not appended again).
                assert_ne!(seen[0].0, seen[1].0);
                assert_eq!(seen[1].0.matches("nonce=").count(), 1, "{}", seen[1].0);
            }
        }
    }
}
