//! File shapes → typed [`Config`], collecting every error with its key path.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderName;
use indexmap::IndexMap;

use super::raw::{
    self, AuthCodeKeys, OAuthKeys, RawAdmin, RawAuth, RawConnector, RawField, RawKind, RawMock,
    RawProfile, RawProxy, RawRoute, RawServerTls, RawStore, RawTls, RawUserField,
};
use super::*;
use crate::template::{Template, Var};

const SECTIONS: &str = "proxy, admin, auth, routes, profiles, connectors, mock_provider, store";

/// Headers a profile may never set: framing, routing and hop-by-hop headers.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

struct V<'a> {
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
    env: &'a Env,
    /// `[connectors.NAME]`, read before routes and profiles name them.
    connectors: IndexMap<String, Arc<Connector>>,
}

impl V<'_> {
    fn err(&mut self, path: &str, msg: impl Into<String>) {
        self.errors.push(ConfigError::new(path, msg));
    }

    fn warn(&mut self, msg: String) {
        self.warnings.push(msg);
    }

    fn has_error(&self, path: &str) -> bool {
        self.errors.iter().any(|e| e.path == path)
    }
}

pub fn validate(mut table: toml::Table, env: &Env) -> Result<Config, Vec<ConfigError>> {
    let mut v = V {
        errors: Vec::new(),
        warnings: Vec::new(),
        env,
        connectors: IndexMap::new(),
    };

    let proxy: RawProxy = section(&mut table, "proxy", &mut v).unwrap_or_default();
    let admin: RawAdmin = section(&mut table, "admin", &mut v).unwrap_or_default();
    let mock: Option<RawMock> = section(&mut table, "mock_provider", &mut v);
    let raw_store: Option<RawStore> = section(&mut table, "store", &mut v);
    let raw_auth: Option<RawAuth> = section(&mut table, "auth", &mut v);
    let auth = raw_auth.and_then(|a| {
        let listen = listen_addr(&a.listen, "auth.listen", &mut v)?;
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
        let tls = server_tls(a.tls, "auth", &mut v);
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
    });
    let store = store_config(raw_store, &mut v);

    match table.remove("connectors") {
        None => {}
        Some(toml::Value::Table(t)) => {
            for (name, value) in t {
                let path = format!("connectors.{name}");
                if !valid_name(&name) {
                    v.err(
                        &path,
                        "invalid connector name; expected letters, digits, '-', '_' or '.'",
                    );
                }
                if let Some(rc) = raw::collect::<RawConnector>(value, &path, &mut v.errors) {
                    if let Some(c) = connector(&name, rc, &path, &mut v) {
                        v.connectors.insert(name, Arc::new(c));
                    }
                }
            }
        }
        Some(_) => v.err(
            "connectors",
            "expected a table of connectors: [connectors.NAME]",
        ),
    }
    let raw_profiles = match table.remove("profiles") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(_) => {
            v.err("profiles", "expected a table of profiles: [profiles.NAME]");
            toml::Table::new()
        }
    };
    let raw_routes = match table.remove("routes") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a,
        Some(_) => {
            v.err("routes", "expected an array of tables: [[routes]]");
            Vec::new()
        }
    };
    for key in table.keys() {
        v.err(
            key,
            format!("unknown section \"{key}\"; expected {SECTIONS}"),
        );
    }

    let proxy = proxy_settings(proxy, &mut v);
    let admin = admin_settings(admin, &mut v);
    let mock_provider = mock.and_then(|m| {
        if m.token_lifetime.is_some_and(|d| d.0.is_zero()) {
            v.err(
                "mock_provider.token_lifetime",
                "must be greater than zero; expected a duration like \"1h\"",
            );
        }
        let listen = listen_addr(&m.listen, "mock_provider.listen", &mut v)?;
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
        })
    });

    let mut listeners: Vec<(&str, SocketAddr)> = vec![
        ("proxy.listen", proxy.listen),
        ("admin.listen", admin.listen),
    ];
    if let Some(m) = &mock_provider {
        listeners.push(("mock_provider.listen", m.listen));
    }
    if let Some(a) = &auth {
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

    let mut profiles = IndexMap::new();
    // Profiles that failed to parse are remembered so routes naming them don't add a second error.
    let mut broken = HashSet::new();
    for (name, value) in raw_profiles {
        let path = format!("profiles.{name}");
        if !valid_name(&name) {
            v.err(
                &path,
                "invalid profile name; expected letters, digits, '-', '_' or '.'",
            );
        }
        let Some(rp) = RawProfile::collect(value, &path, &mut v.errors) else {
            broken.insert(name);
            continue;
        };
        match profile(&name, rp, &path, &mut v) {
            Some(p) => {
                profiles.insert(Arc::<str>::from(name.as_str()), Arc::new(p));
            }
            None => {
                broken.insert(name);
            }
        }
    }

    let mut routes = Vec::new();
    let mut prefixes: IndexMap<String, usize> = IndexMap::new();
    for (i, value) in raw_routes.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        let Some(rr) = raw::collect::<RawRoute>(value, &path, &mut v.errors) else {
            continue;
        };
        if let Some(prev) = prefixes.insert(rr.prefix.clone(), i) {
            v.err(
                &format!("{path}.prefix"),
                format!(
                    "ambiguous route: prefix \"{}\" is also used by routes[{prev}]",
                    rr.prefix
                ),
            );
        }
        if let Some(r) = route(rr, &path, &profiles, &broken, &proxy, &mut v) {
            routes.push(r);
        }
    }
    if matches!(store, StoreConfig::Memory) && profiles.values().any(|p| p.per_user) {
        v.warn(
            "store: end users' grants are kept in memory only ([store] kind = \"file\" keeps them across restarts)"
                .to_string(),
        );
    }
    for (name, p) in &profiles {
        if p.per_user && auth.is_none() {
            v.err(
                &format!("profiles.{name}"),
                "a per-user profile needs an [auth] section (listen, public_url) for login links, the start page and the callback",
            );
        }
    }
    if routes.is_empty() && v.errors.is_empty() {
        v.err(
            "routes",
            "no routes; expected at least one [[routes]] entry",
        );
    }

    // Plain HTTP through a connector: the connector sees the whole request, credential included.
    for (i, r) in routes.iter().enumerate() {
        if !r.upstream.raw.starts_with("http://") {
            continue;
        }
        for name in &r.profiles {
            let via = r
                .connector
                .clone()
                .or_else(|| profiles.get(name).and_then(|p| p.connector.clone()));
            if let Some(c) = via.filter(|c| !c.no_proxy.iter().any(|n| n == "*")) {
                v.warn(format!(
                    "routes[{i}]: plain http:// upstream through connector {}: the connector sees the request and its credential (profile {name}); use https://",
                    c.name
                ));
            }
        }
    }
    for (name, p) in &profiles {
        if let (Some(o), Some(c)) = (p.kind.oauth(), &p.connector) {
            if o.token_url.starts_with("http://") && !c.no_proxy.iter().any(|n| n == "*") {
                v.warn(format!(
                    "profiles.{name}.token_url: plain http:// through connector {}: the connector sees the client secret and the tokens; use https://",
                    c.name
                ));
            }
        }
    }

    if v.errors.is_empty() {
        // Longest prefix first, so the first match is the longest.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Config {
            proxy,
            admin,
            routes,
            profiles,
            mock_provider,
            store,
            auth,
            connectors: v.connectors,
            warnings: v.warnings,
        })
    } else {
        Err(v.errors)
    }
}

fn section<T: serde::de::DeserializeOwned>(
    table: &mut toml::Table,
    key: &str,
    v: &mut V,
) -> Option<T> {
    let value = table.remove(key)?;
    raw::collect(value, key, &mut v.errors)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn listen_addr(s: &str, path: &str, v: &mut V) -> Option<SocketAddr> {
    match s.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            v.err(
                path,
                format!("invalid address \"{s}\"; expected IP:port like 127.0.0.1:8080"),
            );
            None
        }
    }
}

fn proxy_settings(p: RawProxy, v: &mut V) -> ProxySettings {
    let listen = listen_addr(
        p.listen.as_deref().unwrap_or(DEFAULT_PROXY_LISTEN),
        "proxy.listen",
        v,
    );
    let dur = |d: Option<raw::Dur>, def| d.map(|d| d.0).unwrap_or(def);
    let s = ProxySettings {
        listen: listen.unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
        header_read_timeout: dur(p.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT),
        body_read_timeout: dur(p.body_read_timeout, DEFAULT_BODY_READ_TIMEOUT),
        body_total_timeout: dur(p.body_total_timeout, DEFAULT_BODY_TOTAL_TIMEOUT),
        idle_timeout: dur(p.idle_timeout, DEFAULT_IDLE_TIMEOUT),
        connect_timeout: dur(p.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
        upstream_timeout: dur(p.upstream_timeout, DEFAULT_UPSTREAM_TIMEOUT),
        drain_timeout: dur(p.drain_timeout, DEFAULT_DRAIN_TIMEOUT),
        max_body_bytes: p.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        max_connections: p.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        max_headers: p.max_headers.unwrap_or(DEFAULT_MAX_HEADERS),
        fast_path: p.fast_path.unwrap_or(true),
        max_header_bytes: p.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES),
        max_uri_bytes: p.max_uri_bytes.unwrap_or(DEFAULT_MAX_URI_BYTES),
        max_cached_tokens: p
            .max_cached_tokens
            .unwrap_or(crate::token::DEFAULT_MAX_ENTRIES),
        trusted_proxies: p
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let net = IpNet::parse(t);
                if net.is_none() {
                    v.err(
                        &format!("proxy.trusted_proxies[{i}]"),
                        "expected an IP address or a range like 10.0.0.0/8",
                    );
                }
                net
            })
            .collect(),
        workers: p
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        tls: server_tls(p.tls, "proxy", v),
        access_log: p.access_log.unwrap_or(true),
    };
    if s.workers == 0 || s.workers > 256 {
        v.err("proxy.workers", "expected 1-256 worker threads");
    }
    for (name, d) in [
        ("header_read_timeout", s.header_read_timeout),
        ("body_read_timeout", s.body_read_timeout),
        ("body_total_timeout", s.body_total_timeout),
        ("idle_timeout", s.idle_timeout),
        ("connect_timeout", s.connect_timeout),
        ("upstream_timeout", s.upstream_timeout),
    ] {
        if d.is_zero() {
            v.err(
                &format!("proxy.{name}"),
                "must be greater than zero; expected a duration like \"10s\"",
            );
        }
    }
    if s.max_body_bytes == 0 {
        v.err(
            "proxy.max_body_bytes",
            "must be greater than zero; expected a byte count like 1048576",
        );
    }
    if s.max_connections == 0 {
        v.err(
            "proxy.max_connections",
            "must be greater than zero; expected a count like 16384",
        );
    }
    if s.max_cached_tokens == 0 {
        v.err(
            "proxy.max_cached_tokens",
            "must be greater than zero; expected a count like 100000",
        );
    }
    if !(1..=1000).contains(&s.max_headers) {
        v.err("proxy.max_headers", "expected 1-1000 header fields");
    }
    if !(8192..=1024 * 1024).contains(&s.max_header_bytes) {
        v.err(
            "proxy.max_header_bytes",
            "expected 8192-1048576 bytes (the request line counts too)",
        );
    }
    if s.max_uri_bytes < 256 || s.max_uri_bytes > s.max_header_bytes {
        v.err(
            "proxy.max_uri_bytes",
            "expected at least 256 bytes and no more than proxy.max_header_bytes",
        );
    }
    s
}

fn store_config(s: Option<RawStore>, v: &mut V) -> StoreConfig {
    let Some(s) = s else {
        return StoreConfig::Memory;
    };
    match s.kind.as_str() {
        "memory" => {
            for (k, set) in [
                ("path", s.path.is_some()),
                ("key", s.key.is_some()),
                ("previous_key", s.previous_key.is_some()),
                ("url", s.url.is_some()),
                ("cluster", s.cluster.is_some()),
                ("prefix", s.prefix.is_some()),
                ("timeout", s.timeout.is_some()),
            ] {
                if set {
                    v.err(&format!("store.{k}"), "not used by kind \"memory\"");
                }
            }
            StoreConfig::Memory
        }
        "file" => {
            for (k, set) in [
                ("url", s.url.is_some()),
                ("cluster", s.cluster.is_some()),
                ("prefix", s.prefix.is_some()),
                ("timeout", s.timeout.is_some()),
            ] {
                if set {
                    v.err(&format!("store.{k}"), "not used by kind \"file\"");
                }
            }
            // A key that did not parse is reported already (and removed from the section).
            if s.key.is_none() && !v.has_error("store.key") {
                v.err(
                    "store.key",
                    "required for kind \"file\": records are encrypted; `authsidecar keygen` prints a key",
                );
            }
            let (key, previous_key) = (s.key, s.previous_key);
            let path = s.path.unwrap_or_else(|| DEFAULT_STORE_PATH.into());
            let path = if path.is_relative() {
                v.env_base().join(path)
            } else {
                path
            };
            match key {
                Some(key) => StoreConfig::File {
                    path,
                    key,
                    previous_key,
                },
                None => StoreConfig::Memory,
            }
        }
        "redis" => {
            if s.path.is_some() {
                v.err("store.path", "not used by kind \"redis\"");
            }
            if s.key.is_none() && !v.has_error("store.key") {
                v.err(
                    "store.key",
                    "required for kind \"redis\": records are encrypted; `authsidecar keygen` prints a key",
                );
            }
            let (key, previous_key) = (s.key, s.previous_key);
            let valid = |u: &crate::secret::StoreUrl| {
                (u.expose().starts_with("redis://") || u.expose().starts_with("rediss://"))
                    && redis::parse_redis_url(u.expose()).is_some()
            };
            // Never echo a URL: it may hold the password.
            let url_form = "expected redis://[user:password@]host:port[/db] or rediss://… (TLS)";
            let (urls, cluster) = match (s.url, s.cluster) {
                (Some(u), None) => {
                    if !valid(&u) {
                        v.err("store.url", url_form);
                    }
                    (vec![u], false)
                }
                (None, Some(nodes)) => {
                    if nodes.is_empty() {
                        v.err("store.cluster", "expected at least one seed node URL");
                    }
                    for (i, u) in nodes.iter().enumerate() {
                        if !valid(u) {
                            v.err(&format!("store.cluster[{i}]"), url_form);
                        }
                    }
                    (nodes, true)
                }
                (Some(_), Some(_)) => {
                    v.err(
                        "store.cluster",
                        "set either url (one Redis) or cluster (Redis Cluster seed nodes), not both",
                    );
                    (Vec::new(), false)
                }
                (None, None) => {
                    v.err(
                        "store.url",
                        "required for kind \"redis\" (or cluster = [seed node URLs])",
                    );
                    (Vec::new(), false)
                }
            };
            let timeout = s.timeout.map_or(DEFAULT_REDIS_TIMEOUT, |d| d.0);
            if timeout.is_zero() || timeout > std::time::Duration::from_secs(30) {
                v.err("store.timeout", "expected a duration from 1ms to 30s");
            }
            let prefix = s.prefix.unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_string());
            if prefix.contains(['*', '?', '[', ']', '\\', '{', '}']) {
                v.err("store.prefix", "must not contain * ? [ ] \\ { }");
            }
            match key {
                Some(key) if !urls.is_empty() => StoreConfig::Redis {
                    urls,
                    cluster,
                    prefix,
                    key,
                    previous_key,
                    timeout,
                },
                _ => StoreConfig::Memory,
            }
        }
        other => {
            v.err(
                "store.kind",
                format!("unknown kind \"{other}\"; expected memory, file or redis"),
            );
            StoreConfig::Memory
        }
    }
}

fn admin_settings(a: RawAdmin, v: &mut V) -> AdminSettings {
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

impl V<'_> {
    /// A path from the config, relative to the config file's folder.
    fn path(&self, p: &std::path::Path) -> std::path::PathBuf {
        if p.is_relative() {
            self.env_base().join(p)
        } else {
            p.to_path_buf()
        }
    }

    /// An expired certificate is an error; one that expires within 30 days a warning.
    fn check_expiry(&mut self, cert: &std::path::Path, key: &str) {
        match crate::tls::expiry_check(cert) {
            Ok(None) => {}
            Ok(Some(days)) => self.warn(format!(
                "{key}: the certificate in {} expires in {days} days",
                cert.display()
            )),
            Err(e) => self.err(key, e),
        }
    }

    /// A `connector = "NAME"` reference.
    fn connector_ref(&mut self, name: Option<String>, path: &str) -> Option<Arc<Connector>> {
        let name = name?;
        match self.connectors.get(&name) {
            Some(c) => Some(c.clone()),
            None => {
                let known: Vec<&str> = self.connectors.keys().map(String::as_str).collect();
                let expected = if known.is_empty() {
                    "no [connectors.NAME] section is defined".to_string()
                } else {
                    format!("expected one of {}", known.join(", "))
                };
                self.err(
                    &format!("{path}.connector"),
                    format!("unknown connector \"{name}\"; {expected}"),
                );
                None
            }
        }
    }
}

fn client_tls(t: Option<RawTls>, path: &str, v: &mut V) -> ClientTls {
    let Some(t) = t else {
        return ClientTls::default();
    };
    let ca_file = t.ca_file.map(|p| v.path(&p));
    if let Some(ca) = &ca_file {
        if let Err(e) = crate::tls::load_roots(ca) {
            v.err(&format!("{path}.tls.ca_file"), e);
        }
    }
    let (client_cert, client_key) = match (t.client_cert, t.client_key) {
        (Some(c), Some(k)) => {
            let (c, k) = (v.path(&c), v.path(&k));
            match crate::tls::load_certified_key(&c, &k) {
                Ok(_) => v.check_expiry(&c, &format!("{path}.tls.client_cert")),
                Err(e) => v.err(&format!("{path}.tls.client_cert"), e),
            }
            (Some(c), Some(k))
        }
        (Some(_), None) => {
            v.err(
                &format!("{path}.tls.client_key"),
                "required with client_cert: the private key of the client certificate",
            );
            (None, None)
        }
        (None, Some(_)) => {
            v.err(
                &format!("{path}.tls.client_cert"),
                "required with client_key: the client certificate (PEM chain)",
            );
            (None, None)
        }
        (None, None) => (None, None),
    };
    if let Some(name) = &t.server_name {
        if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
            v.err(
                &format!("{path}.tls.server_name"),
                format!("\"{name}\" is not a valid DNS name or IP address"),
            );
        }
    }
    ClientTls {
        ca_file,
        client_cert,
        client_key,
        server_name: t.server_name,
    }
}

/// A listener's `tls = { cert, key, client_ca }`.
fn server_tls(t: Option<RawServerTls>, section: &str, v: &mut V) -> Option<ServerTls> {
    let t = t?;
    let (cert, key) = (v.path(&t.cert), v.path(&t.key));
    match crate::tls::load_certified_key(&cert, &key) {
        Ok(_) => v.check_expiry(&cert, &format!("{section}.tls.cert")),
        Err(e) => v.err(&format!("{section}.tls.cert"), e),
    }
    let client_ca = t.client_ca.map(|p| v.path(&p));
    if let Some(ca) = &client_ca {
        if let Err(e) = crate::tls::load_roots(ca) {
            v.err(&format!("{section}.tls.client_ca"), e);
        }
    }
    Some(ServerTls {
        cert,
        key,
        client_ca,
    })
}

/// `[connectors.NAME]`.
fn connector(name: &str, rc: RawConnector, path: &str, v: &mut V) -> Option<Connector> {
    let before = v.errors.len();
    let url = match rc.url.parse::<http::Uri>() {
        Ok(u)
            if u.scheme() == Some(&http::uri::Scheme::HTTP)
                && u.host().is_some()
                && u.port_u16().is_some()
                && u.path_and_query().is_none_or(|p| p.as_str() == "/")
                && !u.authority().is_some_and(|a| a.as_str().contains('@')) =>
        {
            Some(u)
        }
        _ => {
            v.err(
                &format!("{path}.url"),
                "expected http://host:port (an HTTP proxy; credentials go in username and password)",
            );
            None
        }
    };
    let credentials = match (rc.username, rc.password) {
        (Some(u), Some(p)) => {
            if u.expose().contains(':') {
                v.err(
                    &format!("{path}.username"),
                    "must not contain ':' (RFC 7617)",
                );
            }
            Some((u, p))
        }
        (None, None) => None,
        (Some(_), None) => {
            v.err(&format!("{path}.password"), "required with username");
            None
        }
        (None, Some(_)) => {
            v.err(&format!("{path}.username"), "required with password");
            None
        }
    };
    let mut no_proxy = Vec::new();
    for (i, h) in rc.no_proxy.unwrap_or_default().into_iter().enumerate() {
        let bare = h.trim_start_matches('*').trim_start_matches('.');
        let ok = h == "*"
            || !bare.is_empty()
                && bare
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        if ok {
            no_proxy.push(h.to_ascii_lowercase());
        } else {
            v.err(
                &format!("{path}.no_proxy[{i}]"),
                "expected a host name, an IP address, .domain (the domain and its subdomains) or *",
            );
        }
    }
    if v.errors.len() > before {
        return None;
    }
    Some(Connector {
        name: name.to_string(),
        url: url?,
        credentials,
        no_proxy,
    })
}

impl V<'_> {
    fn env_base(&self) -> std::path::PathBuf {
        self.env.base_dir().to_path_buf()
    }
}

fn route(
    rr: RawRoute,
    path: &str,
    profiles: &IndexMap<Arc<str>, Arc<Profile>>,
    broken: &HashSet<String>,
    proxy: &ProxySettings,
    v: &mut V,
) -> Option<Route> {
    let before = v.errors.len();
    if !rr.prefix.starts_with('/') {
        v.err(
            &format!("{path}.prefix"),
            format!("\"{}\" must start with '/'", rr.prefix),
        );
    }
    let upstream = match UpstreamUrl::parse(&rr.upstream) {
        Ok(u) => Some(u),
        Err(e) => {
            v.err(&format!("{path}.upstream"), e);
            None
        }
    };
    if rr.profiles.is_empty() {
        v.err(
            &format!("{path}.profiles"),
            "empty; expected at least one profile name (use a profile of type \"none\" to send no credential)",
        );
    }
    let mut names = Vec::new();
    for (j, name) in rr.profiles.iter().enumerate() {
        let p = format!("{path}.profiles[{j}]");
        match profiles.get_key_value(name.as_str()) {
            Some((k, prof)) => {
                if names.contains(k) {
                    v.err(&p, format!("profile \"{name}\" is listed twice"));
                }
                names.push(k.clone());
                if let Some(u) = &upstream {
                    check_route_profile(u, prof, &p, path, v);
                }
            }
            None if broken.contains(name) => {}
            None => v.err(&p, format!("unknown profile \"{name}\"")),
        }
    }
    if rr.timeout.is_some_and(|d| d.0.is_zero()) {
        v.err(
            &format!("{path}.timeout"),
            "must be greater than zero; expected a duration like \"30s\"",
        );
    }
    let tls = client_tls(rr.tls, path, v);
    let connector = v.connector_ref(rr.connector, path);
    if v.errors.len() > before {
        return None;
    }
    Some(Route {
        prefix: rr.prefix,
        upstream: upstream?,
        profiles: names,
        tls,
        connector,
        timeout: rr.timeout.map(|d| d.0).unwrap_or(proxy.upstream_timeout),
    })
}

/// The route's placeholders and the profile's path fields must match exactly, and `{tenant}` needs
/// `tenancy = true`.
fn check_route_profile(u: &UpstreamUrl, prof: &Profile, p: &str, route_path: &str, v: &mut V) {
    let name = &prof.name;
    for ph in u.placeholders() {
        if ph == "tenant" {
            if !prof.tenancy {
                v.err(
                    &format!("{route_path}.upstream"),
                    format!("uses {{tenant}} but profile \"{name}\" has tenancy = false; set tenancy = true on it"),
                );
            }
        } else if !prof
            .fields
            .iter()
            .any(|f| f.location == Location::Path && f.key == ph)
        {
            v.err(
                &format!("{route_path}.upstream"),
                format!("placeholder {{{ph}}} has no path field in profile \"{name}\"; expected a field with in = \"path\", key = \"{ph}\""),
            );
        }
    }
    for (i, f) in prof.fields.iter().enumerate() {
        if f.location == Location::Query {
            let fixed = u.query.as_deref().unwrap_or("");
            if fixed
                .split('&')
                .any(|pair| pair.split('=').next() == Some(f.key.as_str()))
            {
                v.err(
                    p,
                    format!(
                        "profile \"{name}\" fields[{i}] sets query parameter \"{}\", which the upstream URL of {route_path} already has; remove one",
                        f.key
                    ),
                );
            }
        }
        if f.location == Location::Path && !u.placeholders().any(|ph| ph == f.key) {
            v.err(
                p,
                format!(
                    "profile \"{name}\" fields[{i}] is a path field for {{{}}}, but the upstream URL of {route_path} has no {{{}}}",
                    f.key, f.key
                ),
            );
        }
    }
}

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

fn profile(name: &str, rp: RawProfile, path: &str, v: &mut V) -> Option<Profile> {
    let before = v.errors.len();
    let RawProfile { ty, common, kind } = rp;
    let tenancy = common.tenancy;
    let per_user = match &kind {
        RawKind::AuthorizationCode { per_user: p, .. } => {
            if p.per_user == Some(false) {
                v.err(
                    &format!("{path}.per_user"),
                    "an authorization-code profile is always per user; remove per_user",
                );
            }
            true
        }
        other => other.per_user().and_then(|p| p.per_user).unwrap_or(false),
    };
    if let Some(p) = kind.per_user() {
        if !per_user {
            for (key, set) in [
                ("user_fields", p.user_fields.is_some()),
                ("on_authorized", p.on_authorized.is_some()),
            ] {
                if set {
                    v.err(
                        &format!("{path}.{key}"),
                        "only used with per_user = true (credentials that belong to end users)",
                    );
                }
            }
        }
    }
    // With per_user = true the credentials come from each end user, not from the config.
    if per_user {
        let (username, password, api_key) = match &kind {
            RawKind::Basic { credentials: c, .. } | RawKind::Password { credentials: c, .. } => {
                (c.username.is_some(), c.password.is_some(), false)
            }
            RawKind::ApiKey { key, .. } => (false, false, key.api_key.is_some()),
            _ => (false, false, false),
        };
        for (key, set) in [
            ("username", username),
            ("password", password),
            ("api_key", api_key),
        ] {
            if set {
                v.err(
                    &format!("{path}.{key}"),
                    "with per_user = true each end user enters it on the start page; remove it",
                );
            }
        }
    }
    let allow_insecure_http = match &kind {
        RawKind::ClientCredentials { oauth }
        | RawKind::Password { oauth, .. }
        | RawKind::AuthorizationCode { oauth, .. } => oauth.allow_insecure_http,
        _ => None,
    };
    let mut kind = kind;
    let (raw_user_fields, on_authorized) = match kind.per_user_mut() {
        Some(p) => (p.user_fields.take(), p.on_authorized.take()),
        None => (None, None),
    };
    if let Some(u) = &on_authorized {
        if u.contains('{') {
            v.err(
                &format!("{path}.on_authorized"),
                "a fixed URL is expected; the body says which profile, user and tenant",
            );
        } else {
            let ctx = UrlContext {
                path,
                tenancy,
                allow_insecure_http,
            };
            endpoint_url(u, "on_authorized", &ctx, v);
        }
    }
    let required = |key: &str, missing: bool, v: &mut V| {
        if missing {
            v.err(
                &format!("{path}.{key}"),
                format!("required for type \"{}\"", ty.name()),
            );
        }
    };
    let api_key_fields = |v: &mut V| {
        if common.fields.as_ref().is_none_or(|f| f.is_empty()) {
            v.err(
                &format!("{path}.fields"),
                "required for type \"api_key\": say where the key goes, e.g. [[profiles.NAME.fields]] in = \"header\", key = \"X-Api-Key\", value = \"{{api_key}}\"",
            );
        }
    };
    let oauth_ctx = OAuthContext { ty, tenancy, path };
    let kind = match kind {
        RawKind::None => Some(ProfileKind::None),
        RawKind::Basic { .. } if per_user => Some(ProfileKind::UserBasic),
        RawKind::Basic { credentials, .. } => {
            let (u, p) = (credentials.username, credentials.password);
            required("username", u.is_none(), v);
            required("password", p.is_none(), v);
            if let Some(u) = &u {
                if u.expose().contains(':') {
                    v.err(
                        &format!("{path}.username"),
                        "must not contain ':' (RFC 7617)",
                    );
                }
            }
            match (u, p) {
                (Some(username), Some(password)) => Some(ProfileKind::Basic { username, password }),
                _ => None,
            }
        }
        RawKind::ApiKey { .. } if per_user => {
            api_key_fields(v);
            Some(ProfileKind::UserApiKey)
        }
        RawKind::ApiKey { key, .. } => {
            api_key_fields(v);
            required("api_key", key.api_key.is_none(), v);
            key.api_key.map(|key| ProfileKind::ApiKey { key })
        }
        RawKind::ClientCredentials { oauth } => {
            oauth_settings(*oauth, Grant::ClientCredentials, &oauth_ctx, v)
                .map(|o| ProfileKind::OAuth(Box::new(o)))
        }
        RawKind::Password { oauth, .. } if per_user => {
            v.warn(format!(
                "{path}: oauth2_password is a legacy grant (RFC 9700 §2.4); end users type their IdP password into the sidecar's page"
            ));
            oauth_settings(*oauth, Grant::UserPassword, &oauth_ctx, v)
                .map(|o| ProfileKind::OAuth(Box::new(o)))
        }
        RawKind::Password {
            oauth, credentials, ..
        } => {
            let (u, p) = (credentials.username, credentials.password);
            required("username", u.is_none(), v);
            required("password", p.is_none(), v);
            v.warn(format!(
                "{path}: oauth2_password is a legacy grant (RFC 9700 §2.4); prefer client credentials"
            ));
            // Check the OAuth keys even when the credentials are missing: every error at once.
            let grant = match (u, p) {
                (Some(username), Some(password)) => Some(Grant::Password { username, password }),
                _ => None,
            };
            let settings = oauth_settings(
                *oauth,
                grant.clone().unwrap_or(Grant::ClientCredentials),
                &oauth_ctx,
                v,
            );
            match (settings, grant) {
                (Some(o), Some(_)) => Some(ProfileKind::OAuth(Box::new(o))),
                _ => None,
            }
        }
        RawKind::AuthorizationCode { oauth, code, .. } => {
            let ctx = UrlContext {
                path,
                tenancy,
                allow_insecure_http,
            };
            let code = auth_code_settings(code, &ctx, v);
            let settings = oauth_settings(*oauth, Grant::ClientCredentials, &oauth_ctx, v);
            match (settings, code) {
                (Some(mut o), Some(c)) => {
                    o.grant = Grant::AuthorizationCode(c);
                    Some(ProfileKind::OAuth(Box::new(o)))
                }
                _ => None,
            }
        }
    };

    let connector = v.connector_ref(common.connector, path);
    let mut kind = kind;
    if let Some(ProfileKind::OAuth(o)) = &mut kind {
        o.connector = connector.clone();
    }
    let user_fields = match raw_user_fields {
        Some(raw) => user_fields(raw, path, v),
        None => Vec::new(),
    };
    let user_field_keys: Vec<String> = user_fields.iter().map(|f| f.key.clone()).collect();
    let raw_fields = match common.fields {
        Some(f) => f,
        None => default_fields(ty),
    };
    let mut fields = Vec::new();
    let mut seen: HashSet<(Location, String)> = HashSet::new();
    for (i, rf) in raw_fields.into_iter().enumerate() {
        let fp = format!("{path}.fields[{i}]");
        if let Some(f) = field(rf, &fp, kind.as_ref(), tenancy, &user_field_keys, v) {
            let norm = match f.location {
                Location::Header => f.key.replace('_', "-"),
                _ => f.key.clone(),
            };
            if !seen.insert((f.location, norm)) {
                v.err(
                    &format!("{fp}.key"),
                    format!(
                        "\"{}\" is already set by another {} field of this profile",
                        f.key,
                        f.location.as_str()
                    ),
                );
            }
            fields.push(f);
        }
    }
    let formats: HashSet<PayloadFormat> = fields
        .iter()
        .filter(|f| f.location == Location::Payload)
        .map(|f| f.payload_format)
        .collect();
    if formats.len() > 1 {
        v.err(
            &format!("{path}.fields"),
            "payload fields disagree on payload_format; use the same for all",
        );
    }
    if fields.is_empty() && !matches!(kind, Some(ProfileKind::None) | None) {
        v.err(
            &format!("{path}.fields"),
            "empty: the credential would never be sent; remove `fields` to use the default or add one",
        );
    }
    if v.errors.len() > before {
        return None;
    }
    Some(Profile {
        name: Arc::from(name),
        kind: kind?,
        identity_provider: common.identity_provider,
        tenancy,
        fields,
        user_fields,
        per_user,
        on_authorized,
        connector,
    })
}

/// `user_fields` ("Additional Fields"): what the start page asks the end user for.
fn user_fields(raw: Vec<RawUserField>, path: &str, v: &mut V) -> Vec<UserField> {
    let mut out: Vec<UserField> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let fp = format!("{path}.user_fields[{i}]");
        let key_ok = !r.key.is_empty()
            && r.key.len() <= 64
            && r.key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !key_ok {
            v.err(
                &format!("{fp}.key"),
                "expected 1 to 64 letters, digits, '_' or '-'",
            );
            continue;
        }
        if out.iter().any(|f| f.key == r.key) {
            v.err(
                &format!("{fp}.key"),
                format!("\"{}\" is already a user field of this profile", r.key),
            );
            continue;
        }
        if r.key == "tenant" {
            v.err(
                &format!("{fp}.key"),
                "\"tenant\" is asked by the start page itself when tenancy = true",
            );
            continue;
        }
        let pattern = match &r.pattern {
            None => None,
            Some(p) => match regex::Regex::new(&format!("^(?:{p})$")) {
                Ok(re) => Some(re),
                Err(e) => {
                    let first = e.to_string();
                    let first = first.lines().last().unwrap_or("").trim().to_string();
                    v.err(
                        &format!("{fp}.pattern"),
                        format!("not a valid regular expression: {first}"),
                    );
                    continue;
                }
            },
        };
        let max_length = r.max_length.unwrap_or(DEFAULT_USER_FIELD_MAX_LENGTH);
        if max_length == 0 || max_length > 4096 {
            v.err(&format!("{fp}.max_length"), "expected 1 to 4096");
            continue;
        }
        out.push(UserField {
            label: r.label.unwrap_or_else(|| r.key.clone()),
            key: r.key,
            secret: r.secret,
            pattern,
            max_length,
        });
    }
    out
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

/// What an endpoint URL of a profile is checked against.
struct UrlContext<'a> {
    path: &'a str,
    tenancy: bool,
    allow_insecure_http: Option<bool>,
}

/// Checks an endpoint URL: absolute, https (http only to loopback or with allow_insecure_http),
/// `{tenant}` only with `tenancy = true`.
fn endpoint_url(url: &str, key: &str, ctx: &UrlContext, v: &mut V) {
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

fn auth_code_settings(rp: AuthCodeKeys, ctx: &UrlContext, v: &mut V) -> Option<AuthCodeSettings> {
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
struct OAuthContext<'a> {
    ty: ProfileType,
    tenancy: bool,
    path: &'a str,
}

fn oauth_settings(
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

/// `fields` of a profile that leaves them out: OAuth types send the access token as a bearer
/// token, basic its Basic value; api_key has no default (it must say where the key goes).
fn default_fields(ty: ProfileType) -> Vec<RawField> {
    let authorization = |value: &str| {
        vec![RawField {
            location: "header".into(),
            key: "Authorization".into(),
            value: Some(value.into()),
            payload_format: None,
        }]
    };
    match ty {
        ProfileType::Basic => authorization("Basic {{basic}}"),
        t if t.is_oauth() => authorization("Bearer {{access_token}}"),
        _ => Vec::new(),
    }
}

/// Whether a profile of this kind can fill the variable at request time.
fn var_available(
    var: &Var,
    kind: &ProfileKind,
    tenancy: bool,
    user_fields: &[String],
) -> Result<(), String> {
    let ok = match var {
        Var::User | Var::Context(_) => true,
        Var::Tenant => {
            if !tenancy {
                return Err(
                    "uses {{tenant}} but the profile has tenancy = false; set tenancy = true"
                        .into(),
                );
            }
            true
        }
        Var::Username | Var::Password | Var::Basic => {
            matches!(kind, ProfileKind::Basic { .. } | ProfileKind::UserBasic)
        }
        Var::ApiKey => matches!(kind, ProfileKind::ApiKey { .. } | ProfileKind::UserApiKey),
        Var::Token(name)
            if matches!(
                name.as_str(),
                "access_token" | "refresh_token" | "id_token" | "token_type"
            ) =>
        {
            return Err(format!(
                "{{{{token.{name}}}}} is not available; use {{{{access_token}}}}, {{{{token_type}}}} or {{{{id_token}}}} (refresh tokens are never injected)"
            ));
        }
        Var::AccessToken | Var::TokenType | Var::IdToken | Var::Token(_) | Var::ClientId => {
            matches!(kind, ProfileKind::OAuth(_))
        }
        Var::UserField(key) => {
            if !user_fields.contains(key) {
                return Err(format!(
                    "uses {{{{user_field.{key}}}}} but the profile has no user field with key \"{key}\""
                ));
            }
            true
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "variable {{{{{var}}}}} is not available for type \"{}\"",
            kind.type_name()
        ))
    }
}

fn field(
    rf: RawField,
    fp: &str,
    kind: Option<&ProfileKind>,
    tenancy: bool,
    user_fields: &[String],
    v: &mut V,
) -> Option<Field> {
    let before = v.errors.len();
    let location = match rf.location.as_str() {
        "header" => Some(Location::Header),
        "query" => Some(Location::Query),
        "payload" => Some(Location::Payload),
        "path" => Some(Location::Path),
        other => {
            v.err(
                &format!("{fp}.in"),
                format!("unknown location \"{other}\"; expected header, query, payload or path"),
            );
            None
        }
    };
    let key_path = format!("{fp}.key");
    if rf.key.is_empty() {
        v.err(&key_path, "empty; expected a name");
    } else if rf.key.contains("{{") || rf.key.contains("${") {
        v.err(&key_path, "keys are never templated; expected a fixed name");
    }
    let mut key = rf.key.clone();
    match location {
        Some(Location::Header) => match HeaderName::from_bytes(rf.key.as_bytes()) {
            Ok(h) => {
                let lower = h.as_str().replace('_', "-");
                if FORBIDDEN_HEADERS.contains(&lower.as_str())
                    || lower.starts_with("x-authsidecar-")
                {
                    v.err(
                        &key_path,
                        format!("header \"{}\" cannot be set by a profile", rf.key),
                    );
                }
                key = h.as_str().to_string();
            }
            Err(_) => v.err(
                &key_path,
                format!("\"{}\" is not a valid header name", rf.key),
            ),
        },
        Some(Location::Payload) => {
            if let Some(ptr) = rf.key.strip_prefix('/') {
                if ptr.split('/').any(|seg| seg.is_empty()) {
                    v.err(
                        &key_path,
                        "JSON Pointer with an empty segment; expected /a/b",
                    );
                }
                if !valid_pointer_escapes(ptr) {
                    v.err(
                        &key_path,
                        "invalid JSON Pointer escape; only ~0 and ~1 are allowed (RFC 6901)",
                    );
                }
            }
        }
        Some(Location::Path)
            if !rf
                .key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                || rf.key == "tenant" =>
        {
            v.err(
                &key_path,
                "a path key names a {placeholder} of the route's upstream URL; expected letters, digits, '-' or '_' (not \"tenant\")",
            );
        }
        _ => {}
    }
    let payload_format = match (rf.payload_format.as_deref(), location) {
        (None, _) | (Some("json"), Some(Location::Payload)) => PayloadFormat::Json,
        (Some("form"), Some(Location::Payload)) => PayloadFormat::Form,
        (Some(_), Some(Location::Payload)) => {
            v.err(&format!("{fp}.payload_format"), "expected json or form");
            PayloadFormat::Json
        }
        (Some(_), _) => {
            v.err(
                &format!("{fp}.payload_format"),
                "only used with in = \"payload\"",
            );
            PayloadFormat::Json
        }
    };
    let value_path = format!("{fp}.value");
    let value = match rf.value {
        None => {
            v.err(
                &value_path,
                "required key missing; expected a template such as \"Bearer {{access_token}}\"",
            );
            None
        }
        Some(src) => match Template::parse(&src) {
            Ok(t) => Some(t),
            Err(e) => {
                v.err(&value_path, e.to_string());
                None
            }
        },
    };
    if location == Some(Location::Payload)
        && payload_format == PayloadFormat::Form
        && rf.key.starts_with('/')
    {
        v.err(
            &format!("{fp}.key"),
            "a JSON Pointer needs payload_format = \"json\"; a form body takes a plain name",
        );
    }
    if let (Some(t), Some(k)) = (&value, kind) {
        if location == Some(Location::Path) {
            if let Some(rendered) = crate::credential::render_static(t, k) {
                if !crate::inject::path_param_ok(&rendered) {
                    v.err(
                        &value_path,
                        "renders to a path parameter every request would refuse: it must be 1-4096 bytes, hold no '/' or '\\', and not be \".\" or \"..\" (also once percent-decoded, and cut at ';')",
                    );
                }
            }
        }
        for var in t.vars() {
            if let Err(msg) = var_available(var, k, tenancy, user_fields) {
                v.err(&value_path, msg);
            }
        }
        if location == Some(Location::Header) {
            if let Some(rendered) = crate::credential::render_static(t, k) {
                if http::HeaderValue::from_str(&rendered).is_err() {
                    v.err(
                        &value_path,
                        "renders to a value with a control character (CR, LF, NUL, …); not usable in a header",
                    );
                }
            }
        }
    }
    if v.errors.len() > before {
        return None;
    }
    Some(Field {
        location: location?,
        key,
        value: value?,
        payload_format,
    })
}

fn valid_pointer_escapes(ptr: &str) -> bool {
    let b = ptr.as_bytes();
    b.iter()
        .enumerate()
        .all(|(i, &c)| c != b'~' || matches!(b.get(i + 1), Some(b'0') | Some(b'1')))
}
