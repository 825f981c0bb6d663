//! The OAuth keys of a profile: token endpoint, client, token requests, and the
//! authorization-code keys; the endpoint URL rules they share.

use super::tls::client_tls;
use super::*;
use crate::config::dynamic::{self, DynUse, DynVar};
use crate::secret::{BearerAssertionKey, ClientAssertionKey};
use crate::sign::jwt::{self, Algorithm, ServiceAccount, Signer};
use crate::sign::PrivateKey;
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
    "client_assertion",
    "client_assertion_type",
    "assertion",
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

/// An endpoint URL that may use `{tenant}`, `{{context.NAME}}` and `{{user_field.NAME}}`
/// ([`dynamic`]): the variables and their positions are added to `uses`; the URL is checked with
/// sample values.
fn dyn_endpoint(url: &str, key: &str, ctx: &UrlContext, uses: &mut Vec<DynUse>, v: &mut V) {
    match dynamic::parse(url, true) {
        Ok(found) => {
            uses.extend(found.into_iter().map(|(var, pos)| DynUse {
                key: key.to_string(),
                var,
                pos,
            }));
            // `{tenant}` stays for `endpoint_url`'s tenancy check.
            let sample = dynamic::sample(url, |var| match var {
                DynVar::Tenant => "{tenant}",
                _ => "x",
            });
            endpoint_url(&sample, key, ctx, v);
        }
        Err(e) => v.err(&format!("{}.{key}", ctx.path), e),
    }
}

pub(super) fn auth_code_settings(
    rp: AuthCodeKeys,
    ctx: &UrlContext,
    discover: bool,
    dynamic: &mut Vec<DynUse>,
    v: &mut V,
) -> Option<AuthCodeSettings> {
    let before = v.errors.len();
    let path = ctx.path;
    let authorization_url = rp.authorization_url.unwrap_or_default();
    if authorization_url.is_empty() && discover {
        // From the discovery document.
    } else if authorization_url.is_empty() {
        v.err(
            &format!("{path}.authorization_url"),
            "required for type \"oauth2_authorization_code\" (or set issuer to read it from the provider's discovery document)",
        );
    } else {
        dyn_endpoint(&authorization_url, "authorization_url", ctx, dynamic, v);
    }
    let refresh_url = rp.refresh_url;
    if let Some(u) = &refresh_url {
        dyn_endpoint(u, "refresh_url", ctx, dynamic, v);
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
        pkce: rp.pkce.unwrap_or(true),
        // Filled in with the names every request of the profile uses (`profiles.rs`).
        authorization_context: Vec::new(),
    })
}

/// `issuer`: an absolute URL without query or fragment (RFC 8414 §2), https unless loopback (or
/// `allow_insecure_http`), no placeholders (discovery reads it as written).
fn issuer_url(issuer: &str, ctx: &UrlContext, v: &mut V) {
    if issuer.contains(['?', '#']) || issuer.contains('{') {
        v.err(
            &format!("{}.issuer", ctx.path),
            "expected the provider's issuer identifier: an https:// URL without query, fragment or placeholders",
        );
        return;
    }
    endpoint_url(issuer, "issuer", ctx, v);
}

/// What an OAuth profile's keys are checked against.
pub(super) struct OAuthContext<'a> {
    pub(super) ty: ProfileType,
    pub(super) tenancy: bool,
    pub(super) path: &'a str,
    /// The type needs the issuer's discovery document for more than the token URL (an
    /// authorization code's left-out `authorization_url`, or an `openid` scope's JWKS).
    pub(super) needs_document: bool,
}

pub(super) fn oauth_settings(
    rp: OAuthKeys,
    grant: Grant,
    ctx: &OAuthContext,
    v: &mut V,
) -> Option<OAuthSettings> {
    let before = v.errors.len();
    let (path, kind) = (ctx.path, ctx.ty.name());
    let mut rp = rp;
    // `token_request`: the profile writes the request; the client keys are needed only where its
    // templates use them.
    let custom_given = rp.token_request.is_some();
    let token_request = rp
        .token_request
        .take()
        .and_then(|r| super::token_shape::token_request(r, path, ctx.ty, v));
    let token_response = rp
        .token_response
        .take()
        .and_then(|r| super::token_shape::token_response(r, path, v));
    let uses = |var: crate::config::token_shape::ReqVar| {
        token_request.as_ref().is_some_and(|t| t.uses(&var))
    };
    let token_url = rp.token_url.clone().unwrap_or_default();
    let mut dynamic_uses: Vec<DynUse> = Vec::new();
    let token_url_sample = match dynamic::parse(&token_url, true) {
        Ok(found) => {
            dynamic_uses.extend(found.into_iter().map(|(var, pos)| DynUse {
                key: "token_url".into(),
                var,
                pos,
            }));
            dynamic::sample(&token_url, |var| match var {
                DynVar::Tenant => "tenant",
                _ => "x",
            })
        }
        Err(e) => {
            v.err(&format!("{path}.token_url"), e);
            String::new()
        }
    };
    let token_url_has_tenant = dynamic_uses.iter().any(|u| u.var == DynVar::Tenant);
    let issuer = rp.issuer.take();
    if let Some(i) = &issuer {
        let url_ctx = UrlContext {
            path,
            tenancy: ctx.tenancy,
            allow_insecure_http: rp.allow_insecure_http,
        };
        issuer_url(i, &url_ctx, v);
    }
    let discover = issuer.is_some() && (token_url.is_empty() || ctx.needs_document);
    if token_url.is_empty() && discover {
        // From the discovery document.
    } else if token_url.is_empty() {
        v.err(
            &format!("{path}.token_url"),
            format!("required for type \"{kind}\""),
        );
    } else if !token_url_sample.is_empty() {
        let sample = token_url_sample;
        let scheme_ok = sample.starts_with("https://") || sample.starts_with("http://");
        if !scheme_ok || sample.contains(['{', '}']) || sample.parse::<http::Uri>().is_err() {
            v.err(
                &format!("{path}.token_url"),
                "expected an absolute https:// URL; {tenant}, {{context.NAME}} and {{user_field.NAME}} are the placeholders allowed",
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
    let client_id = rp.client_id.clone().unwrap_or_default();
    // The JWT bearer grant authenticates with its assertion; a client is optional (RFC 7523 §3.1).
    let client_optional = ctx.ty == ProfileType::JwtBearer
        || (custom_given && ctx.ty != ProfileType::AuthorizationCode);
    if client_id.is_empty() && uses(crate::config::token_shape::ReqVar::ClientId) {
        v.err(
            &format!("{path}.client_id"),
            "required: token_request uses {{client_id}}",
        );
    }
    if client_id.is_empty() && !client_optional {
        v.err(
            &format!("{path}.client_id"),
            format!("required for type \"{kind}\""),
        );
    }
    if custom_given && rp.client_auth.is_some() {
        v.err(
            &format!("{path}.client_auth"),
            "not used with token_request: write the client's credentials into token_request.headers or token_request.body",
        );
    }
    let client_auth = match rp.client_auth.as_deref() {
        _ if custom_given => ClientAuth::None,
        None if client_optional && rp.client_secret.is_none() => ClientAuth::None,
        None | Some("basic") => ClientAuth::Basic,
        Some("post") => ClientAuth::Post,
        Some("none") => ClientAuth::None,
        Some("private_key_jwt") => ClientAuth::PrivateKeyJwt,
        Some("client_secret_jwt") => ClientAuth::ClientSecretJwt,
        Some(other) => {
            v.err(
                &format!("{path}.client_auth"),
                format!("unknown client_auth \"{other}\"; expected basic, post, none, private_key_jwt or client_secret_jwt"),
            );
            ClientAuth::Basic
        }
    };
    if client_id.is_empty() && client_optional && client_auth != ClientAuth::None {
        v.err(
            &format!("{path}.client_id"),
            format!("required with client_auth = \"{}\"", client_auth.as_str()),
        );
    }
    let client_secret = rp.client_secret.clone();
    match (client_auth, &client_secret) {
        _ if custom_given => {
            let used = uses(crate::config::token_shape::ReqVar::ClientSecret);
            match &client_secret {
                None if used => v.err(
                    &format!("{path}.client_secret"),
                    "required: token_request uses {{client_secret}}",
                ),
                Some(_) if !used && token_request.is_some() => v.err(
                    &format!("{path}.client_secret"),
                    "set, but token_request never uses {{client_secret}}; remove one",
                ),
                _ => {}
            }
        }
        (ClientAuth::None, Some(_)) => v.err(
            &format!("{path}.client_secret"),
            "set, but client_auth = \"none\" never sends it; remove one",
        ),
        (ClientAuth::PrivateKeyJwt, Some(_)) => v.err(
            &format!("{path}.client_secret"),
            "set, but client_auth = \"private_key_jwt\" never sends it (the client signs with client_assertion_key); remove one",
        ),
        (ClientAuth::Basic | ClientAuth::Post | ClientAuth::ClientSecretJwt, None) => v.err(
            &format!("{path}.client_secret"),
            format!("required with client_auth = \"{}\"", client_auth.as_str()),
        ),
        (ClientAuth::Basic | ClientAuth::Post | ClientAuth::ClientSecretJwt, Some(s))
            if s.is_empty() =>
        {
            v.err(
                &format!("{path}.client_secret"),
                format!(
                    "empty; a client secret is required with client_auth = \"{}\"",
                    client_auth.as_str()
                ),
            )
        }
        _ => {}
    }
    let client_assertion = client_assertion(&rp, client_auth, client_secret.as_ref(), path, v);
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
    // `{tenant}`, `{{context.NAME}}`, `{{user_field.NAME}}` in scope and token_params values.
    let value_uses =
        |key: &str, m: &Option<IndexMap<String, String>>, uses: &mut Vec<DynUse>, v: &mut V| {
            for (k, x) in m.iter().flatten() {
                match dynamic::parse(x, false) {
                    Ok(found) => uses.extend(found.into_iter().map(|(var, pos)| DynUse {
                        key: format!("{key}.{k}"),
                        var,
                        pos,
                    })),
                    Err(e) => v.err(&format!("{path}.{key}.{k}"), e),
                }
            }
        };
    value_uses("scope", &rp.scope, &mut dynamic_uses, v);
    value_uses("token_params", &rp.token_params, &mut dynamic_uses, v);
    if custom_given {
        if rp.token_params.as_ref().is_some_and(|m| !m.is_empty()) {
            v.err(
                &format!("{path}.token_params"),
                "not used with token_request: write the parameters into token_request.body",
            );
        }
        if ctx.ty != ProfileType::AuthorizationCode
            && rp.scope.as_ref().is_some_and(|m| !m.is_empty())
        {
            v.err(
                &format!("{path}.scope"),
                "not used with token_request: write the scope into token_request.body",
            );
        }
    }
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
        if let Some(a) = &client_assertion {
            signer_fingerprint(a.key.expose(), &mut h);
            a.audience.hash(&mut h);
        }
        if let Grant::JwtBearer(b) = &grant {
            signer_fingerprint(b.key.expose(), &mut h);
            b.lifetime.hash(&mut h);
            for (k, c) in &b.claims {
                k.hash(&mut h);
                match c {
                    Claim::Value(x) => x.to_string().hash(&mut h),
                    Claim::Template(t) => {
                        for piece in t.pieces() {
                            match piece {
                                crate::template::Piece::Lit(l) => ("lit", l).hash(&mut h),
                                crate::template::Piece::Var(x) => {
                                    ("var", x.to_string()).hash(&mut h)
                                }
                            }
                        }
                    }
                    Claim::TokenUrl => "aud".hash(&mut h),
                }
            }
        }
        scope.hash(&mut h);
        token_params.hash(&mut h);
        if let Some(t) = &token_request {
            t.fingerprint(&mut h);
        }
        token_response.hash(&mut h);
        tls.hash(&mut h);
        if discover {
            // The issuer decides the endpoints: part of what identifies the tokens.
            issuer.hash(&mut h);
        }
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
        issuer,
        discover,
        client_id,
        client_secret,
        client_auth,
        client_assertion,
        scope,
        token_params,
        dynamic: dynamic_uses,
        token_request,
        token_response,
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

/// What identifies a signing key in the settings' fingerprint: its algorithm, `kid` and public
/// key (an HS256 key is the client secret, hashed already).
fn signer_fingerprint(s: &Signer, h: &mut impl std::hash::Hasher) {
    use std::hash::Hash;
    s.header()
        .iter()
        .for_each(|(k, x)| (k, x.to_string()).hash(h));
    s.public_thumbprint().hash(h);
}

const ASSERTION_ALGS: &str = "RS256, PS256, ES256 or EdDSA";

/// Reads a PEM private key named by `key` (a path relative to the config file's folder). Errors
/// name the key path and the file, never its contents.
fn read_private_key(file: &std::path::Path, key: &str, v: &mut V) -> Option<PrivateKey> {
    let full = v.path(file);
    let pem = match std::fs::read(&full) {
        Ok(p) => p,
        Err(e) => {
            v.err(key, format!("cannot read {}: {e}", full.display()));
            return None;
        }
    };
    match PrivateKey::from_pem(&pem) {
        Ok(k) => Some(k),
        Err(e) => {
            v.err(key, format!("{}: {e}", full.display()));
            None
        }
    }
}

/// A private key and `alg` (default: the key's) as a signer; the key must fit the algorithm.
fn private_key_signer(
    file: &std::path::Path,
    alg: Option<&str>,
    (key_path, alg_path): (&str, &str),
    v: &mut V,
) -> Option<Signer> {
    let alg = match alg {
        None => None,
        Some(a) => match Algorithm::parse(a).filter(|a| *a != Algorithm::Hs256) {
            Some(a) => Some(a),
            None => {
                v.err(
                    alg_path,
                    format!("unknown algorithm \"{a}\"; expected {ASSERTION_ALGS}"),
                );
                return None;
            }
        },
    };
    let key = read_private_key(file, key_path, v)?;
    let alg = alg.unwrap_or_else(|| Algorithm::default_for(key.kind()));
    match Signer::new(alg, &key) {
        Ok(s) => Some(s),
        Err(e) => {
            v.err(key_path, format!("{}: {e}", v.path(file).display()));
            None
        }
    }
}

/// `client_assertion_*`: only with `private_key_jwt` (`client_assertion_audience` also with
/// `client_secret_jwt`).
fn client_assertion(
    rp: &OAuthKeys,
    client_auth: ClientAuth,
    secret: Option<&crate::secret::ClientSecret>,
    path: &str,
    v: &mut V,
) -> Option<ClientAssertion> {
    let jwt = matches!(
        client_auth,
        ClientAuth::PrivateKeyJwt | ClientAuth::ClientSecretJwt
    );
    for (key, set, needs) in [
        (
            "client_assertion_key",
            rp.client_assertion_key.is_some(),
            client_auth == ClientAuth::PrivateKeyJwt,
        ),
        (
            "client_assertion_alg",
            rp.client_assertion_alg.is_some(),
            client_auth == ClientAuth::PrivateKeyJwt,
        ),
        (
            "client_assertion_kid",
            rp.client_assertion_kid.is_some(),
            client_auth == ClientAuth::PrivateKeyJwt,
        ),
        (
            "client_assertion_cert",
            rp.client_assertion_cert.is_some(),
            client_auth == ClientAuth::PrivateKeyJwt,
        ),
        (
            "client_assertion_audience",
            rp.client_assertion_audience.is_some(),
            jwt,
        ),
    ] {
        if set && !needs {
            let with = if key == "client_assertion_audience" {
                "client_auth = \"private_key_jwt\" or \"client_secret_jwt\""
            } else {
                "client_auth = \"private_key_jwt\""
            };
            v.err(&format!("{path}.{key}"), format!("only used with {with}"));
        }
    }
    if let Some(a) = &rp.client_assertion_audience {
        if a.trim().is_empty() {
            v.err(
                &format!("{path}.client_assertion_audience"),
                "empty; leave it out to use the token URL",
            );
        }
    }
    let signer = match client_auth {
        ClientAuth::PrivateKeyJwt => {
            let Some(file) = &rp.client_assertion_key else {
                v.err(
                    &format!("{path}.client_assertion_key"),
                    "required with client_auth = \"private_key_jwt\": a PEM private key (RSA, EC P-256 or Ed25519)",
                );
                return None;
            };
            let key_path = format!("{path}.client_assertion_key");
            let signer = private_key_signer(
                file,
                rp.client_assertion_alg.as_deref(),
                (&key_path, &format!("{path}.client_assertion_alg")),
                v,
            )?;
            let signer = match &rp.client_assertion_kid {
                Some(kid) if kid.is_empty() => {
                    v.err(
                        &format!("{path}.client_assertion_kid"),
                        "empty; leave it out to use the key's RFC 7638 thumbprint",
                    );
                    return None;
                }
                Some(kid) => signer.with_kid(kid.clone()),
                None => signer,
            };
            match &rp.client_assertion_cert {
                Some(cert) => {
                    let full = v.path(cert);
                    let cert_path = format!("{path}.client_assertion_cert");
                    match std::fs::read(&full) {
                        Err(e) => {
                            v.err(&cert_path, format!("cannot read {}: {e}", full.display()));
                            return None;
                        }
                        Ok(pem) => match signer.with_certificate(&pem) {
                            Ok(s) => s,
                            Err(e) => {
                                v.err(&cert_path, format!("{}: {e}", full.display()));
                                return None;
                            }
                        },
                    }
                }
                None if rp.client_assertion_kid.is_none() => signer.with_thumbprint_kid(),
                None => signer,
            }
        }
        ClientAuth::ClientSecretJwt => Signer::hs256(secret?.expose().as_bytes()),
        _ => return None,
    };
    Some(ClientAssertion {
        key: ClientAssertionKey::new(signer),
        audience: rp.client_assertion_audience.clone(),
    })
}

/// `oauth2_jwt_bearer`'s own keys. Returns the settings and, with `credentials_file`, the key
/// file's `token_uri` (the default `token_url`).
pub(super) fn jwt_bearer_settings(
    b: JwtBearerKeys,
    tenancy: bool,
    path: &str,
    v: &mut V,
) -> Option<(JwtBearerSettings, Option<String>)> {
    let before = v.errors.len();
    let lifetime = match b.assertion_lifetime {
        None => jwt::DEFAULT_ASSERTION_LIFETIME,
        Some(d) => {
            let secs = d.0.as_secs();
            if d.0.subsec_nanos() != 0
                || !(jwt::MIN_ASSERTION_LIFETIME..=jwt::MAX_ASSERTION_LIFETIME).contains(&secs)
            {
                v.err(
                    &format!("{path}.assertion_lifetime"),
                    "expected whole seconds from \"60s\" to \"1h\" (the default)",
                );
            }
            secs
        }
    };
    let mut from_file: Option<ServiceAccount> = None;
    let signer = match (&b.credentials_file, &b.assertion_key) {
        (Some(_), Some(_)) => {
            v.err(
                &format!("{path}.assertion_key"),
                "set with credentials_file, which holds the key; remove one",
            );
            None
        }
        (None, None) => {
            v.err(
                &format!("{path}.assertion_key"),
                "required for type \"oauth2_jwt_bearer\" (or credentials_file, a Google service-account key)",
            );
            None
        }
        (None, Some(file)) => {
            let key_path = format!("{path}.assertion_key");
            private_key_signer(
                file,
                b.assertion_alg.as_deref(),
                (&key_path, &format!("{path}.assertion_alg")),
                v,
            )
            .map(|s| match &b.assertion_kid {
                Some(kid) => s.with_kid(kid.clone()),
                None => s,
            })
        }
        (Some(file), None) => {
            let key = format!("{path}.credentials_file");
            for (other, set) in [
                ("assertion_alg", b.assertion_alg.is_some()),
                ("assertion_kid", b.assertion_kid.is_some()),
            ] {
                if set {
                    v.err(
                        &format!("{path}.{other}"),
                        "comes from credentials_file (RS256, kid = private_key_id); remove it",
                    );
                }
            }
            let full = v.path(file);
            match std::fs::read(&full) {
                Err(e) => {
                    v.err(&key, format!("cannot read {}: {e}", full.display()));
                    None
                }
                Ok(json) => match ServiceAccount::from_json(&json) {
                    Err(e) => {
                        v.err(&key, format!("{}: {e}", full.display()));
                        None
                    }
                    Ok(sa) => match sa.signer() {
                        Err(e) => {
                            v.err(&key, format!("{}: {e}", full.display()));
                            None
                        }
                        Ok(s) => {
                            from_file = Some(sa);
                            Some(s)
                        }
                    },
                },
            }
        }
    };
    if let Some(kid) = &b.assertion_kid {
        if kid.is_empty() {
            v.err(
                &format!("{path}.assertion_kid"),
                "empty; leave it out to send no kid",
            );
        }
    }
    let mut claims: Vec<(String, Claim)> = Vec::new();
    if let Some(sa) = &from_file {
        claims.push(("iss".into(), Claim::Value(sa.client_email.as_str().into())));
        claims.push(("aud".into(), Claim::Value(sa.token_uri.as_str().into())));
    }
    let mut per_user = false;
    for (name, value) in b.assertion_claims.unwrap_or_default() {
        let cpath = format!("{path}.assertion_claims.{name}");
        if ["iat", "exp", "jti", "nbf"].contains(&name.as_str()) {
            v.err(
                &cpath,
                "set by the sidecar for every assertion (iat, exp = iat + assertion_lifetime, a fresh jti); remove it",
            );
            continue;
        }
        if from_file.is_some() && (name == "iss" || name == "aud") {
            v.err(
                &cpath,
                "comes from credentials_file (iss = client_email, aud = token_uri); remove it",
            );
            continue;
        }
        let claim = match value {
            toml::Value::String(text) => match Template::parse(&text) {
                Err(e) => {
                    v.err(&cpath, e.to_string());
                    continue;
                }
                Ok(t) if t.vars().next().is_none() => Claim::Value(text.into()),
                Ok(t) => {
                    let mut ok = true;
                    for var in t.vars() {
                        match var {
                            Var::Tenant if tenancy => {}
                            Var::User => per_user = true,
                            Var::Tenant => {
                                v.err(&cpath, "uses {{tenant}} but the profile has tenancy = false; set tenancy = true");
                                ok = false;
                            }
                            other => {
                                v.err(
                                    &cpath,
                                    format!("{{{{{other}}}}} is not known when the token is requested; an assertion claim may use {{{{tenant}}}} and {{{{user}}}}"),
                                );
                                ok = false;
                            }
                        }
                    }
                    if !ok {
                        continue;
                    }
                    Claim::Template(t)
                }
            },
            other => match serde_json::to_value(&other) {
                Ok(x) => Claim::Value(x),
                Err(e) => {
                    v.err(&cpath, format!("not representable in JSON: {e}"));
                    continue;
                }
            },
        };
        claims.push((name, claim));
    }
    if from_file.is_none() {
        if !claims.iter().any(|(k, _)| k == "iss") {
            v.err(
                &format!("{path}.assertion_claims.iss"),
                "required: the assertion's issuer (RFC 7523 §3), e.g. the client id the identity provider gave you",
            );
        }
        if !claims.iter().any(|(k, _)| k == "sub") {
            v.err(
                &format!("{path}.assertion_claims.sub"),
                "required: the subject the token is for (RFC 7523 §3), e.g. the user or service account name",
            );
        }
        if !claims.iter().any(|(k, _)| k == "aud") {
            claims.push(("aud".into(), Claim::TokenUrl));
        }
    }
    if v.errors.len() > before {
        return None;
    }
    let token_uri = from_file.map(|sa| sa.token_uri);
    Some((
        JwtBearerSettings {
            key: BearerAssertionKey::new(signer?),
            claims,
            lifetime,
            per_user,
        },
        token_uri,
    ))
}
