//! The signing types (`aws_sigv4`, `hmac`, `oauth1`): their keys → a built signer. Keys and
//! secrets are checked here, once: a key file is read and parsed and must fit its method; errors
//! name the key path, never key material.

use super::*;
use crate::config::{OAuth1Placement, SignMethod, Signing};
use crate::sign::{hmac, oauth1, sigv4, PrivateKey, SecretBytes};

/// Default `max_signed_body_bytes`: 1 MiB.
pub const DEFAULT_MAX_SIGNED_BODY_BYTES: u64 = 1 << 20;

fn required<T>(value: Option<T>, path: &str, key: &str, ty: &str, v: &mut V) -> Option<T> {
    if value.is_none() {
        v.err(
            &format!("{path}.{key}"),
            format!("required for type \"{ty}\""),
        );
    }
    value
}

fn one_of<T: Copy>(
    value: Option<&str>,
    default: T,
    choices: &[(&str, T)],
    key_path: &str,
    v: &mut V,
) -> Option<T> {
    let Some(s) = value else {
        return Some(default);
    };
    match choices.iter().find(|(n, _)| *n == s) {
        Some((_, t)) => Some(*t),
        None => {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            v.err(
                key_path,
                format!("unknown value \"{s}\"; expected {}", names.join(", ")),
            );
            None
        }
    }
}

/// The signer of a signing type, or `None` (with errors) when its keys do not make one.
/// `per_user`: the profile's `per_user = true` (three-legged OAuth 1.0a).
pub(super) fn signing(kind: RawKind, path: &str, per_user: bool, v: &mut V) -> Option<ProfileKind> {
    let secrets = secrets(&kind);
    let (method, body) = match kind {
        RawKind::AwsSigV4 { keys, body } => (sigv4_method(*keys, path, v), body),
        RawKind::Hmac { keys, body } => (hmac_method(*keys, path, v), body),
        RawKind::OAuth1 { keys, body, .. } => (oauth1_method(*keys, path, per_user, v), body),
        _ => return None,
    };
    let max = body
        .max_signed_body_bytes
        .unwrap_or(DEFAULT_MAX_SIGNED_BODY_BYTES);
    if max == 0 {
        v.err(
            &format!("{path}.max_signed_body_bytes"),
            "must be at least 1",
        );
        return None;
    }
    Some(ProfileKind::Sign(Arc::new(Signing {
        method: method?,
        max_signed_body_bytes: max,
        secrets,
    })))
}

/// The secret values of a signing type's keys (what the Test's report masks).
fn secrets(kind: &RawKind) -> Vec<SecretBytes> {
    let text = |s: Option<&str>| s.map(|s| SecretBytes::new(s.as_bytes()));
    match kind {
        RawKind::AwsSigV4 { keys, .. } => [
            text(keys.secret_access_key.as_ref().map(|s| s.expose())),
            text(keys.session_token.as_ref().map(|s| s.expose())),
        ]
        .into_iter()
        .flatten()
        .collect(),
        RawKind::Hmac { keys, .. } => text(keys.secret.as_ref().map(|s| s.expose()))
            .into_iter()
            .collect(),
        RawKind::OAuth1 { keys, .. } => [
            text(keys.consumer_secret.as_ref().map(|s| s.expose())),
            text(keys.token.as_ref().map(|s| s.expose())),
            text(keys.token_secret.as_ref().map(|s| s.expose())),
        ]
        .into_iter()
        .flatten()
        .collect(),
        _ => Vec::new(),
    }
}

fn name_ok(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn sigv4_method(k: raw::SigV4Keys, path: &str, v: &mut V) -> Option<SignMethod> {
    const TY: &str = "aws_sigv4";
    let id = required(k.access_key_id, path, "access_key_id", TY, v);
    let secret = required(k.secret_access_key, path, "secret_access_key", TY, v);
    let region = required(k.region, path, "region", TY, v);
    let service = required(k.service, path, "service", TY, v);
    for (key, value) in [("region", &region), ("service", &service)] {
        if value.as_deref().is_some_and(|s| !name_ok(s)) {
            v.err(
                &format!("{path}.{key}"),
                "expected a name of letters, digits, '-' or '_' (e.g. us-east-1, execute-api)",
            );
        }
    }
    if let Some(id) = &id {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            v.err(
                &format!("{path}.access_key_id"),
                "expected letters and digits (e.g. AKIA…)",
            );
        }
    }
    if secret.as_ref().is_some_and(|s| s.is_empty()) {
        v.err(&format!("{path}.secret_access_key"), "empty");
    }
    let payload = one_of(
        k.payload.as_deref(),
        sigv4::Payload::Signed,
        &[
            ("signed", sigv4::Payload::Signed),
            ("unsigned", sigv4::Payload::Unsigned),
        ],
        &format!("{path}.payload"),
        v,
    );
    let (id, secret, region, service, payload) = (id?, secret?, region?, service?, payload?);
    let mut creds = sigv4::Credentials::new(id.clone(), secret.expose());
    if let Some(t) = &k.session_token {
        creds = creds.with_session_token(t.expose());
    }
    Some(SignMethod::SigV4 {
        signer: sigv4::Signer::new(creds, region.clone(), service.clone()),
        payload,
        access_key_id: id,
        region,
        service,
    })
}

fn hmac_method(k: raw::HmacKeys, path: &str, v: &mut V) -> Option<SignMethod> {
    const TY: &str = "hmac";
    let secret = required(k.secret, path, "secret", TY, v);
    let template = required(k.string_to_sign, path, "string_to_sign", TY, v);
    let secret_encoding = one_of(
        k.secret_encoding.as_deref(),
        hmac::SecretEncoding::Utf8,
        &[
            ("utf8", hmac::SecretEncoding::Utf8),
            ("base64", hmac::SecretEncoding::Base64),
            ("hex", hmac::SecretEncoding::Hex),
        ],
        &format!("{path}.secret_encoding"),
        v,
    );
    let algorithm = one_of(
        k.algorithm.as_deref(),
        hmac::Algorithm::Sha256,
        &[
            ("sha1", hmac::Algorithm::Sha1),
            ("sha256", hmac::Algorithm::Sha256),
            ("sha512", hmac::Algorithm::Sha512),
        ],
        &format!("{path}.algorithm"),
        v,
    );
    let encoding = one_of(
        k.encoding.as_deref(),
        hmac::Encoding::Hex,
        &[
            ("hex", hmac::Encoding::Hex),
            ("base64", hmac::Encoding::Base64),
        ],
        &format!("{path}.encoding"),
        v,
    );
    if secret.as_ref().is_some_and(|s| s.is_empty()) {
        v.err(&format!("{path}.secret"), "empty");
        return None;
    }
    // The secret is checked on its own, so that its error shows beside a template's.
    if let (Some(s), Some(enc)) = (&secret, secret_encoding) {
        use base64::Engine as _;
        let ok = match enc {
            hmac::SecretEncoding::Utf8 => true,
            hmac::SecretEncoding::Hex => crate::sign::unhex(s.expose().trim()).is_some(),
            hmac::SecretEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(s.expose().trim())
                .is_ok(),
        };
        if !ok {
            let name = match enc {
                hmac::SecretEncoding::Hex => "hex",
                _ => "base64",
            };
            v.err(
                &format!("{path}.secret"),
                format!("is not valid {name} (secret_encoding = \"{name}\")"),
            );
            if let Some(t) = &template {
                if let Err(hmac::HmacError::Template(e)) = hmac::Signer::new(
                    t,
                    "",
                    hmac::SecretEncoding::Utf8,
                    hmac::Algorithm::Sha256,
                    hmac::Encoding::Hex,
                ) {
                    v.err(&format!("{path}.string_to_sign"), e.to_string());
                }
            }
            return None;
        }
    }
    let (secret, template) = (secret?, template?);
    match hmac::Signer::new(
        &template,
        secret.expose(),
        secret_encoding?,
        algorithm?,
        encoding?,
    ) {
        Ok(signer) => Some(SignMethod::Hmac { signer }),
        Err(hmac::HmacError::Template(e)) => {
            v.err(&format!("{path}.string_to_sign"), e.to_string());
            None
        }
        Err(hmac::HmacError::Secret(enc)) => {
            v.err(
                &format!("{path}.secret"),
                format!("is not valid {enc} (secret_encoding = \"{enc}\")"),
            );
            None
        }
    }
}

fn oauth1_method(
    mut k: raw::OAuth1Keys,
    path: &str,
    per_user: bool,
    v: &mut V,
) -> Option<SignMethod> {
    const TY: &str = "oauth1";
    let three_legged = oauth1_endpoints(&mut k, path, per_user, v);
    let consumer_key = required(k.consumer_key, path, "consumer_key", TY, v);
    let method = one_of(
        k.signature_method.as_deref(),
        oauth1::SignatureMethod::HmacSha1,
        &[
            ("HMAC-SHA1", oauth1::SignatureMethod::HmacSha1),
            ("HMAC-SHA256", oauth1::SignatureMethod::HmacSha256),
            ("RSA-SHA1", oauth1::SignatureMethod::RsaSha1),
            ("RSA-SHA256", oauth1::SignatureMethod::RsaSha256),
            ("PLAINTEXT", oauth1::SignatureMethod::Plaintext),
        ],
        &format!("{path}.signature_method"),
        v,
    );
    let placement = one_of(
        k.placement.as_deref(),
        OAuth1Placement::Header,
        &[
            ("header", OAuth1Placement::Header),
            ("query", OAuth1Placement::Query),
            ("form", OAuth1Placement::Form),
        ],
        &format!("{path}.placement"),
        v,
    );
    let token = match (k.token, k.token_secret) {
        (t, s) if per_user => {
            for (key, set) in [("token", t.is_some()), ("token_secret", s.is_some())] {
                if set {
                    v.err(
                        &format!("{path}.{key}"),
                        "with per_user = true each end user's token comes from the three-legged flow; remove it",
                    );
                }
            }
            None
        }
        (Some(t), Some(s)) => Some((t, s)),
        (None, None) => None,
        (Some(_), None) => {
            v.err(
                &format!("{path}.token_secret"),
                "required with token (an OAuth 1.0a token comes with its secret)",
            );
            None
        }
        (None, Some(_)) => {
            v.err(
                &format!("{path}.token"),
                "required with token_secret (an OAuth 1.0a token comes with its secret)",
            );
            None
        }
    };
    let method = method?;
    let key_path = format!("{path}.private_key");
    let rsa_key = if method.is_rsa() {
        match &k.private_key {
            None => {
                v.err(
                    &key_path,
                    format!("required for signature_method = \"{}\"", method.as_str()),
                );
                None
            }
            Some(p) => {
                let file = v.path(p);
                match std::fs::read(&file) {
                    Err(e) => {
                        v.err(
                            &key_path,
                            format!("cannot read {}: {}", file.display(), e.kind()),
                        );
                        None
                    }
                    Ok(pem) => match PrivateKey::from_pem(&pem) {
                        Ok(key) => Some(key),
                        Err(e) => {
                            v.err(&key_path, format!("{}: {e}", file.display()));
                            None
                        }
                    },
                }
            }
        }
    } else {
        if k.private_key.is_some() {
            v.err(
                &key_path,
                format!(
                    "only used by the RSA methods; signature_method is \"{}\"",
                    method.as_str()
                ),
            );
        }
        if k.consumer_secret.is_none() {
            v.err(
                &format!("{path}.consumer_secret"),
                format!("required for signature_method = \"{}\"", method.as_str()),
            );
        }
        None
    };
    if method.is_rsa() && k.consumer_secret.is_some() {
        v.err(
            &format!("{path}.consumer_secret"),
            format!(
                "not used by signature_method = \"{}\" (the private key signs); remove it",
                method.as_str()
            ),
        );
    }
    let consumer_key = consumer_key?;
    let client = match oauth1::Client::new(
        method,
        consumer_key,
        k.consumer_secret.as_ref().map(|s| s.expose()),
        rsa_key.as_ref(),
    ) {
        Ok(c) => c,
        Err(e) => {
            if !v.has_error(&key_path) && !v.has_error(&format!("{path}.consumer_secret")) {
                let at = if method.is_rsa() {
                    key_path
                } else {
                    format!("{path}.consumer_secret")
                };
                v.err(&at, e.to_string());
            }
            return None;
        }
    };
    if let Some(realm) = &k.realm {
        if realm.chars().any(|c| c.is_control()) {
            v.err(
                &format!("{path}.realm"),
                "must not contain control characters",
            );
        }
    }
    Some(SignMethod::OAuth1 {
        client,
        token,
        realm: k.realm,
        placement: placement?,
        three_legged: if per_user { Some(three_legged?) } else { None },
    })
}

/// The three endpoint URLs: all required with `per_user = true`, refused without it.
fn oauth1_endpoints(
    k: &mut raw::OAuth1Keys,
    path: &str,
    per_user: bool,
    v: &mut V,
) -> Option<crate::config::OAuth1Endpoints> {
    let (tls, idp_timeout) = (k.tls.take(), k.idp_timeout.take());
    let urls = [
        ("request_token_url", k.request_token_url.is_some()),
        ("authorization_url", k.authorization_url.is_some()),
        ("access_token_url", k.access_token_url.is_some()),
        ("tls", tls.is_some()),
        ("idp_timeout", idp_timeout.is_some()),
        ("allow_insecure_http", k.allow_insecure_http.is_some()),
    ];
    if !per_user {
        for (key, given) in urls {
            if given {
                v.err(
                    &format!("{path}.{key}"),
                    "only used with per_user = true (three-legged OAuth 1.0a); a profile without it signs with its own token",
                );
            }
        }
        return None;
    }
    let ctx = super::oauth::UrlContext {
        path,
        tenancy: false,
        allow_insecure_http: k.allow_insecure_http,
    };
    let tls = super::tls::client_tls(tls, path, v);
    let idp_timeout = idp_timeout.map_or(crate::config::DEFAULT_IDP_TIMEOUT, |d| d.0);
    if idp_timeout.is_zero() {
        v.err(
            &format!("{path}.idp_timeout"),
            "must be greater than zero; expected a duration like \"10s\"",
        );
    }
    let mut ok = !idp_timeout.is_zero();
    let urls = [
        ("request_token_url", &k.request_token_url),
        ("authorization_url", &k.authorization_url),
        ("access_token_url", &k.access_token_url),
    ];
    for (key, value) in urls {
        match value {
            None => {
                v.err(
                    &format!("{path}.{key}"),
                    "required with per_user = true (three-legged OAuth 1.0a)",
                );
                ok = false;
            }
            Some(u) if u.contains(['{', '}']) => {
                v.err(
                    &format!("{path}.{key}"),
                    "expected an absolute https:// URL without placeholders",
                );
                ok = false;
            }
            Some(u) => {
                let before = v.errors.len();
                super::oauth::endpoint_url(u, key, &ctx, v);
                ok &= v.errors.len() == before;
            }
        }
    }
    ok.then(|| crate::config::OAuth1Endpoints {
        request_token_url: k.request_token_url.clone().unwrap_or_default(),
        authorization_url: k.authorization_url.clone().unwrap_or_default(),
        access_token_url: k.access_token_url.clone().unwrap_or_default(),
        tls,
        idp_timeout,
    })
}
