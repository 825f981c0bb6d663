//! The OAuth keys of a profile: token endpoint, client, token requests, and the
//! authorization-code keys; the endpoint URL rules they share.

use super::tls::client_tls;
use super::*;
use crate::template::{Template, Var};

/// Token-request parameters the sidecar sets itself.
const RESERVED_PARAMS: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "username",
    "password",
    "refresh_token",
    "code",
    "code_verifier",
    "redirect_uri",
];

/// What an endpoint URL of a profile is checked against.
pub(super) struct UrlContext<'a> {
    pub(super) path: &'a str,
    pub(super) tenancy: bool,
    pub(super) allow_insecure_http: Option<bool>,
}

/// Checks an endpoint URL: absolute, https (http only to loopback or with allow_insecure_http),
/// `{tenant}` only with `tenancy = true`.
pub(super) fn endpoint_url(url: &str, key: &str, ctx: &UrlContext, v: &mut V) {
    let path = ctx.path;
    let sample = url.replace("{tenant}", "tenant");
    let scheme_ok = sample.starts_with("https://") || sample.starts_with("http://");
    if !scheme_ok || sample.contains(['{', '}']) || sample.parse::<http::Uri>().is_err() {
        v.err(
            &format!("{path}.{key}"),
            "expected an absolute https:// URL; {tenant} is the only placeholder allowed",
        );
        return;
    }
    if url.contains("{tenant}") && !ctx.tenancy {
        v.err(
            &format!("{path}.{key}"),
            "uses {tenant} but the profile has tenancy = false; set tenancy = true",
        );
    }
    if sample.starts_with("http://")
        && !is_loopback_url(&sample)
        && ctx.allow_insecure_http != Some(true)
    {
        v.err(
            &format!("{path}.{key}"),
            "plain http:// is only allowed to loopback hosts; use https:// (or set allow_insecure_http = true for a test setup)",
        );
    }
}

/// Whether an `http://` URL points at this machine (allowed without TLS: the built-in mock).
fn is_loopback_url(url: &str) -> bool {
    let rest = url.strip_prefix("http://").unwrap_or("");
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub(super) fn auth_code_settings(
    rp: AuthCodeKeys,
    ctx: &UrlContext,
    v: &mut V,
) -> Option<AuthCodeSettings> {
    let before = v.errors.len();
    let path = ctx.path;
    let authorization_url = rp.authorization_url.unwrap_or_default();
    let mut authorization_context: Vec<String> = Vec::new();
    if authorization_url.is_empty() {
        v.err(
            &format!("{path}.authorization_url"),
            "required for type \"oauth2_authorization_code\"",
        );
    } else {
        // `{{context.<name>}}` may appear in the authorization URL; check the rest as a URL.
        let (checked, context) = match Template::parse(&authorization_url) {
            Ok(t) if t.vars().all(|x| matches!(x, Var::Context(_))) => (
                t.render(|_| Some("x")).unwrap_or_default(),
                t.vars()
                    .filter_map(|x| match x {
                        Var::Context(n) => Some(n.clone()),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => {
                v.err(
                    &format!("{path}.authorization_url"),
                    "only {tenant} and {{context.<name>}} may be used in the authorization URL",
                );
                (String::new(), Vec::new())
            }
        };
        if !checked.is_empty() {
            endpoint_url(&checked, "authorization_url", ctx, v);
        }
        authorization_context = context;
    }
    let refresh_url = rp.refresh_url;
    if let Some(u) = &refresh_url {
        endpoint_url(u, "refresh_url", ctx, v);
    }
    let revocation_url = rp.revocation_url;
    if let Some(u) = &revocation_url {
        endpoint_url(u, "revocation_url", ctx, v);
    }
    if rp.pkce == Some(false) {
        v.warn(format!(
            "{path}.pkce = false: PKCE is recommended for every client (RFC 9700 §2.1.1)"
        ));
    }
    if v.errors.len() > before {
        return None;
    }
    Some(AuthCodeSettings {
        authorization_url,
        refresh_url,
        revocation_url,
        issuer: rp.issuer,
        pkce: rp.pkce.unwrap_or(true),
        authorization_context,
    })
}

/// What an OAuth profile's keys are checked against.
pub(super) struct OAuthContext<'a> {
    pub(super) ty: ProfileType,
    pub(super) tenancy: bool,
    pub(super) path: &'a str,
}

pub(super) fn oauth_settings(
    rp: OAuthKeys,
    grant: Grant,
    ctx: &OAuthContext,
    v: &mut V,
) -> Option<OAuthSettings> {
    let before = v.errors.len();
    let (path, kind) = (ctx.path, ctx.ty.name());
    let token_url = rp.token_url.unwrap_or_default();
    let token_url_has_tenant = token_url.contains("{tenant}");
    if token_url.is_empty() {
        v.err(
            &format!("{path}.token_url"),
            format!("required for type \"{kind}\""),
        );
    } else {
        let sample = token_url.replace("{tenant}", "tenant");
        let scheme_ok = sample.starts_with("https://") || sample.starts_with("http://");
        if !scheme_ok || sample.contains(['{', '}']) || sample.parse::<http::Uri>().is_err() {
            v.err(
                &format!("{path}.token_url"),
                "expected an absolute https:// URL; {tenant} is the only placeholder allowed",
            );
        } else if sample.starts_with("http://") && !is_loopback_url(&sample) {
            if rp.allow_insecure_http == Some(true) {
                v.warn(format!(
                    "{path}.token_url: plain http to a non-loopback host (allow_insecure_http = true): secrets and tokens cross the network unencrypted"
                ));
            } else {
                v.err(
                    &format!("{path}.token_url"),
                    "plain http:// is only allowed to loopback hosts; use https:// (or set allow_insecure_http = true for a test setup)",
                );
            }
        }
        if token_url_has_tenant && !ctx.tenancy {
            v.err(
                &format!("{path}.token_url"),
                "uses {tenant} but the profile has tenancy = false; set tenancy = true",
            );
        }
    }
    let client_id = rp.client_id.unwrap_or_default();
    if client_id.is_empty() {
        v.err(
            &format!("{path}.client_id"),
            format!("required for type \"{kind}\""),
        );
    }
    let client_auth = match rp.client_auth.as_deref() {
        None | Some("basic") => ClientAuth::Basic,
        Some("post") => ClientAuth::Post,
        Some("none") => ClientAuth::None,
        Some(other) => {
            v.err(
                &format!("{path}.client_auth"),
                format!("unknown client_auth \"{other}\"; expected basic, post or none"),
            );
            ClientAuth::Basic
        }
    };
    let client_secret = rp.client_secret;
    match (client_auth, &client_secret) {
        (ClientAuth::None, Some(_)) => v.err(
            &format!("{path}.client_secret"),
            "set, but client_auth = \"none\" never sends it; remove one",
        ),
        (ClientAuth::Basic | ClientAuth::Post, None) => v.err(
            &format!("{path}.client_secret"),
            "required unless client_auth = \"none\"",
        ),
        (ClientAuth::Basic | ClientAuth::Post, Some(s)) if s.is_empty() => v.err(
            &format!("{path}.client_secret"),
            "empty; a client secret is required unless client_auth = \"none\"",
        ),
        _ => {}
    }
    let pairs =
        |key: &str, m: Option<IndexMap<String, String>>, v: &mut V| -> Vec<(String, String)> {
            let m = m.unwrap_or_default();
            for k in m.keys() {
                if RESERVED_PARAMS.contains(&k.as_str()) {
                    v.err(
                        &format!("{path}.{key}.{k}"),
                        "set by the sidecar itself; remove it",
                    );
                } else if k.is_empty() {
                    v.err(&format!("{path}.{key}"), "empty parameter name");
                }
            }
            m.into_iter().collect()
        };
    let scope = pairs("scope", rp.scope, v);
    let token_params = pairs("token_params", rp.token_params, v);
    for (k, _) in &token_params {
        if scope.iter().any(|(s, _)| s == k) {
            v.err(
                &format!("{path}.token_params.{k}"),
                "also set in scope; set it once",
            );
        }
    }
    let reauth_on = rp.reauth_on.unwrap_or_else(|| vec![401]);
    for (i, s) in reauth_on.iter().enumerate() {
        if !(400..=599).contains(s) {
            v.err(
                &format!("{path}.reauth_on[{i}]"),
                format!("{s} is not an error status; expected 400-599, e.g. 401"),
            );
        }
    }
    let tls = client_tls(rp.tls, path, v);
    let dur = |d: Option<super::raw::Dur>, def: Duration| d.map(|d| d.0).unwrap_or(def);
    let idp_timeout = dur(rp.idp_timeout, DEFAULT_IDP_TIMEOUT);
    let default_token_lifetime = dur(
        rp.default_token_lifetime,
        crate::token::DEFAULT_TOKEN_LIFETIME,
    );
    let refresh_before = dur(rp.refresh_before, crate::token::DEFAULT_REFRESH_BEFORE);
    for (key, d) in [
        ("idp_timeout", idp_timeout),
        ("default_token_lifetime", default_token_lifetime),
    ] {
        if d.is_zero() {
            v.err(
                &format!("{path}.{key}"),
                "must be greater than zero; expected a duration like \"10s\"",
            );
        }
    }
    if v.errors.len() > before {
        return None;
    }
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        kind.hash(&mut h);
        token_url.hash(&mut h);
        client_id.hash(&mut h);
        client_secret.as_ref().map(|s| s.expose()).hash(&mut h);
        client_auth.hash(&mut h);
        scope.hash(&mut h);
        token_params.hash(&mut h);
        tls.hash(&mut h);
        if let Grant::Password { username, password } = &grant {
            username.expose().hash(&mut h);
            password.expose().hash(&mut h);
        }
        h.finish()
    };
    Some(OAuthSettings {
        grant,
        token_url,
        token_url_has_tenant,
        client_id,
        client_secret,
        client_auth,
        scope,
        token_params,
        tls,
        connector: None,
        idp_timeout,
        default_token_lifetime,
        refresh_before,
        reauth_on,
        reauth_min_token_age: dur(
            rp.reauth_min_token_age,
            crate::token::DEFAULT_REAUTH_MIN_TOKEN_AGE,
        ),
        replay_max_body_bytes: rp
            .replay_max_body_bytes
            .unwrap_or(DEFAULT_REPLAY_MAX_BODY_BYTES),
        fingerprint,
    })
}
