//! `[admin]`, `[auth]` and `[mock_provider]`: the listeners besides the proxy's.

use super::tls::server_tls;
use super::*;

pub(super) fn admin_settings(a: RawAdmin, v: &mut V) -> AdminSettings {
    let listen = listen_addr(
        a.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN),
        "admin.listen",
        v,
    )
    .unwrap_or_else(|| ([127, 0, 0, 1], 0).into());
    if let Some(t) = &a.token {
        if t.len() < 16 {
            v.err(
                "admin.token",
                format!(
                    "too short (len {}); expected at least 16 characters",
                    t.len()
                ),
            );
        }
    }
    AdminSettings {
        listen,
        token: a.token,
        tls: server_tls(a.tls, "admin", v),
        profiles_dir: a.profiles_dir.map(|d| v.path(&d)),
    }
}

/// `[auth]`: the listener end users' browsers reach.
pub(super) fn auth_settings(a: RawAuth, v: &mut V) -> Option<AuthSettings> {
    let listen = listen_addr(&a.listen, "auth.listen", v)?;
    let public_url = a.public_url.trim_end_matches('/').to_string();
    if !(public_url.starts_with("https://") || public_url.starts_with("http://"))
        || public_url.parse::<http::Uri>().is_err()
        || public_url.contains(['?', '#'])
    {
        v.err(
            "auth.public_url",
            "expected the absolute URL browsers use to reach the auth listener, e.g. https://auth.example.com",
        );
    }
    if a.ticket_ttl.is_some_and(|d| d.0.as_secs() < 60) {
        v.err(
            "auth.ticket_ttl",
            "under a minute leaves no time to sign in; expected a duration like \"10m\"",
        );
    }
    for (key, n) in [
        ("max_link_attempts", a.max_link_attempts),
        ("max_user_attempts", a.max_user_attempts),
    ] {
        if n.is_some_and(|n| n == 0 || n > 1000) {
            v.err(&format!("auth.{key}"), "expected a count from 1 to 1000");
        }
    }
    if a.user_attempt_window.is_some_and(|d| d.0.as_secs() < 1) {
        v.err(
            "auth.user_attempt_window",
            "must be at least one second; expected a duration like \"1h\"",
        );
    }
    let tls = server_tls(a.tls, "auth", v);
    Some(AuthSettings {
        listen,
        public_url,
        ticket_ttl: a.ticket_ttl.map_or(DEFAULT_TICKET_TTL, |d| d.0),
        max_link_attempts: a.max_link_attempts.unwrap_or(DEFAULT_MAX_LINK_ATTEMPTS),
        max_user_attempts: a.max_user_attempts.unwrap_or(DEFAULT_MAX_USER_ATTEMPTS),
        user_attempt_window: a
            .user_attempt_window
            .map_or(DEFAULT_USER_ATTEMPT_WINDOW, |d| d.0),
        tls,
    })
}

/// `[mock_provider]`: the built-in mock provider.
pub(super) fn mock_provider(m: RawMock, v: &mut V) -> Option<MockProviderConfig> {
    if m.token_lifetime.is_some_and(|d| d.0.is_zero()) {
        v.err(
            "mock_provider.token_lifetime",
            "must be greater than zero; expected a duration like \"1h\"",
        );
    }
    let keys = |file: &std::path::Path, key: &str, v: &mut V| {
        let full = v.path(file);
        match std::fs::read(&full) {
            Err(e) => {
                v.err(key, format!("cannot read {}: {e}", full.display()));
                None
            }
            Ok(b) => match crate::sign::verify::PublicKeys::load(&b) {
                Ok(k) => Some(k),
                Err(e) => {
                    v.err(
                        key,
                        format!(
                            "{}: {e}; expected a JWKS, a public key PEM or a private key PEM",
                            full.display()
                        ),
                    );
                    None
                }
            },
        }
    };
    let client_keys = m
        .client_keys
        .as_deref()
        .and_then(|f| keys(f, "mock_provider.client_keys", v));
    let bearer_issuer = match (&m.bearer_issuer, &m.bearer_keys) {
        (Some(iss), Some(f)) => keys(f, "mock_provider.bearer_keys", v).map(|k| (iss.clone(), k)),
        (None, None) => None,
        (Some(_), None) => {
            v.err(
                "mock_provider.bearer_keys",
                "required with bearer_issuer: the issuer's public keys",
            );
            None
        }
        (None, Some(_)) => {
            v.err(
                "mock_provider.bearer_issuer",
                "required with bearer_keys: the iss its assertions carry",
            );
            None
        }
    };
    let sigv4 = m.sigv4.map(|r| mock_sigv4(r, v)).unwrap_or_default();
    let hmac = m.hmac.map(|r| mock_hmac(r, v)).unwrap_or_default();
    let listen = listen_addr(&m.listen, "mock_provider.listen", v)?;
    Some(MockProviderConfig {
        listen,
        token_lifetime: m
            .token_lifetime
            .map_or(DEFAULT_MOCK_TOKEN_LIFETIME, |d| d.0),
        client_id: m.client_id.unwrap_or_else(|| DEFAULT_MOCK_CLIENT_ID.into()),
        client_secret: m
            .client_secret
            .unwrap_or_else(|| DEFAULT_MOCK_CLIENT_SECRET.into()),
        username: m.username.unwrap_or_else(|| DEFAULT_MOCK_USERNAME.into()),
        password: m.password.unwrap_or_else(|| DEFAULT_MOCK_PASSWORD.into()),
        client_keys,
        bearer_issuer,
        sigv4,
        hmac,
    })
}

/// `[mock_provider.sigv4]`: each key defaults to the mock's demo value.
fn mock_sigv4(r: raw::RawMockSigV4, v: &mut V) -> MockSigV4 {
    let d = MockSigV4::default();
    for (key, value) in [("region", &r.region), ("service", &r.service)] {
        if value.as_deref().is_some_and(|s| {
            s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }) {
            v.err(
                &format!("mock_provider.sigv4.{key}"),
                "expected a name of letters, digits, '-' or '_' (e.g. us-east-1, execute-api)",
            );
        }
    }
    if r.access_key_id
        .as_deref()
        .is_some_and(|id| id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        v.err(
            "mock_provider.sigv4.access_key_id",
            "expected letters and digits (e.g. AKIA…)",
        );
    }
    if r.secret_access_key.as_ref().is_some_and(|s| s.is_empty()) {
        v.err("mock_provider.sigv4.secret_access_key", "empty");
    }
    MockSigV4 {
        access_key_id: r.access_key_id.unwrap_or(d.access_key_id),
        secret_access_key: r.secret_access_key.unwrap_or(d.secret_access_key),
        session_token: r.session_token,
        region: r.region.unwrap_or(d.region),
        service: r.service.unwrap_or(d.service),
    }
}

/// `[mock_provider.hmac]`: each key defaults to the mock's demo value.
fn mock_hmac(r: raw::RawMockHmac, v: &mut V) -> MockHmac {
    let mut m = MockHmac::default();
    let pick = |value: Option<String>,
                key: &str,
                v: &mut V,
                set: &mut dyn FnMut(&str) -> Result<(), String>| {
        if let Some(value) = value {
            if let Err(e) = set(&value) {
                v.err(&format!("mock_provider.hmac.{key}"), e);
            }
        }
    };
    pick(r.secret_encoding, "secret_encoding", v, &mut |s| {
        m.secret_encoding = named(&HMAC_SECRET_ENCODINGS, s)?;
        Ok(())
    });
    pick(r.algorithm, "algorithm", v, &mut |s| {
        m.algorithm = named(&HMAC_ALGORITHMS, s)?;
        Ok(())
    });
    pick(r.encoding, "encoding", v, &mut |s| {
        m.encoding = named(&HMAC_ENCODINGS, s)?;
        Ok(())
    });
    for (value, key, slot) in [
        (
            r.signature_header,
            "signature_header",
            &mut m.signature_header,
        ),
        (
            r.timestamp_header,
            "timestamp_header",
            &mut m.timestamp_header,
        ),
        (r.nonce_header, "nonce_header", &mut m.nonce_header),
    ] {
        if let Some(h) = value {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                v.err(
                    &format!("mock_provider.hmac.{key}"),
                    "expected a header field name (e.g. X-Signature)",
                );
            }
            *slot = h.to_ascii_lowercase();
        }
    }
    if let Some(s) = r.secret {
        m.secret = s;
    }
    if let Some(t) = r.string_to_sign {
        m.string_to_sign = t;
    }
    if let Some(d) = r.max_skew {
        m.max_skew = d.0;
    }
    if let Err(e) = m.signer() {
        let key = if e.starts_with("string_to_sign") {
            "mock_provider.hmac.string_to_sign"
        } else {
            "mock_provider.hmac.secret"
        };
        v.err(key, e);
    }
    m
}

/// Two listeners on one address (port 0 aside: each gets its own).
pub(super) fn check_distinct_listeners(
    proxy: &ProxySettings,
    admin: &AdminSettings,
    auth: Option<&AuthSettings>,
    mock: Option<&MockProviderConfig>,
    v: &mut V,
) {
    let mut listeners: Vec<(&str, SocketAddr)> = vec![
        ("proxy.listen", proxy.listen),
        ("admin.listen", admin.listen),
    ];
    if let Some(m) = mock {
        listeners.push(("mock_provider.listen", m.listen));
    }
    if let Some(a) = auth {
        listeners.push(("auth.listen", a.listen));
    }
    for (i, (a, addr)) in listeners.iter().enumerate() {
        for (b, other) in &listeners[..i] {
            if addr == other && addr.port() != 0 {
                v.err(
                    a,
                    format!("same address as {b}; each listener needs its own"),
                );
            }
        }
    }
}
