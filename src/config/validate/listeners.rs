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
    })
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
