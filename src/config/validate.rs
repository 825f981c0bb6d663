//! File shapes → typed [`Config`], collecting every error with its key path.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderName;
use indexmap::IndexMap;

use super::raw::{self, RawAdmin, RawField, RawMock, RawProfile, RawProxy, RawRoute, RawTls};
use super::*;
use crate::template::{Template, Var};

const SECTIONS: &str = "proxy, admin, routes, profiles, mock_provider";

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
    env: &'a Env,
}

impl V<'_> {
    fn err(&mut self, path: &str, msg: impl Into<String>) {
        self.errors.push(ConfigError::new(path, msg));
    }
}

pub fn validate(mut table: toml::Table, env: &Env) -> Result<Config, Vec<ConfigError>> {
    let mut v = V {
        errors: Vec::new(),
        env,
    };

    let proxy: RawProxy = section(&mut table, "proxy", &mut v).unwrap_or_default();
    let admin: RawAdmin = section(&mut table, "admin", &mut v).unwrap_or_default();
    let mock: Option<RawMock> = section(&mut table, "mock_provider", &mut v);

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
    let mock_provider = mock.and_then(|m| listen_addr(&m.listen, "mock_provider.listen", &mut v));

    let mut listeners: Vec<(&str, SocketAddr)> = vec![
        ("proxy.listen", proxy.listen),
        ("admin.listen", admin.listen),
    ];
    if let Some(m) = mock_provider {
        listeners.push(("mock_provider.listen", m));
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
        let Some(rp) = raw::collect::<RawProfile>(value, &path, &mut v.errors) else {
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
    if routes.is_empty() && v.errors.is_empty() {
        v.err(
            "routes",
            "no routes; expected at least one [[routes]] entry",
        );
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
        idle_timeout: dur(p.idle_timeout, DEFAULT_IDLE_TIMEOUT),
        connect_timeout: dur(p.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
        upstream_timeout: dur(p.upstream_timeout, DEFAULT_UPSTREAM_TIMEOUT),
        drain_timeout: dur(p.drain_timeout, DEFAULT_DRAIN_TIMEOUT),
        max_body_bytes: p.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
    };
    for (name, d) in [
        ("header_read_timeout", s.header_read_timeout),
        ("body_read_timeout", s.body_read_timeout),
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
    s
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
    }
}

fn client_tls(t: Option<RawTls>, path: &str, v: &mut V) -> ClientTls {
    let t = t.unwrap_or_default();
    if let Some(ca) = &t.ca_file {
        let ca = if ca.is_relative() {
            v.env_base().join(ca)
        } else {
            ca.clone()
        };
        if let Err(e) = crate::tls::load_roots(&ca) {
            v.err(&format!("{path}.tls.ca_file"), e);
        }
        return ClientTls { ca_file: Some(ca) };
    }
    ClientTls { ca_file: None }
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
    if v.errors.len() > before {
        return None;
    }
    Some(Route {
        prefix: rr.prefix,
        upstream: upstream?,
        profiles: names,
        tls,
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

const PROFILE_TYPES: &str = "none, basic or api_key";

fn profile(name: &str, rp: RawProfile, path: &str, v: &mut V) -> Option<Profile> {
    let before = v.errors.len();
    let unused = |key: &str, present: bool, v: &mut V| {
        if present {
            v.err(
                &format!("{path}.{key}"),
                format!("not used by type \"{}\"", rp.kind),
            );
        }
    };
    let required = |key: &str, val: Option<crate::secret::Secret>, v: &mut V| {
        if val.is_none() {
            v.err(
                &format!("{path}.{key}"),
                format!("required for type \"{}\"", rp.kind),
            );
        }
        val
    };
    let kind = match rp.kind.as_str() {
        "none" => {
            unused("username", rp.username.is_some(), v);
            unused("password", rp.password.is_some(), v);
            unused("api_key", rp.api_key.is_some(), v);
            Some(ProfileKind::None)
        }
        "basic" => {
            unused("api_key", rp.api_key.is_some(), v);
            let u = required("username", rp.username, v);
            let p = required("password", rp.password, v);
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
        "api_key" => {
            unused("username", rp.username.is_some(), v);
            unused("password", rp.password.is_some(), v);
            if rp.fields.as_ref().is_none_or(|f| f.is_empty()) {
                v.err(
                    &format!("{path}.fields"),
                    "required for type \"api_key\": say where the key goes, e.g. [[profiles.NAME.fields]] in = \"header\", key = \"X-Api-Key\", value = \"{{api_key}}\"",
                );
            }
            required("api_key", rp.api_key, v).map(|key| ProfileKind::ApiKey { key })
        }
        other => {
            v.err(
                &format!("{path}.type"),
                format!("unknown type \"{other}\"; expected {PROFILE_TYPES}"),
            );
            None
        }
    };

    let raw_fields = match rp.fields {
        Some(f) => f,
        None => default_fields(rp.kind.as_str()),
    };
    let mut fields = Vec::new();
    let mut seen: HashSet<(Location, String)> = HashSet::new();
    for (i, rf) in raw_fields.into_iter().enumerate() {
        let fp = format!("{path}.fields[{i}]");
        if let Some(f) = field(rf, &fp, kind.as_ref(), rp.tenancy, v) {
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
        identity_provider: rp.identity_provider,
        tenancy: rp.tenancy,
        fields,
    })
}

fn default_fields(kind: &str) -> Vec<RawField> {
    match kind {
        "basic" => vec![RawField {
            location: "header".into(),
            key: "Authorization".into(),
            value: Some("Basic {{basic}}".into()),
            payload_format: None,
        }],
        _ => Vec::new(),
    }
}

/// Whether a profile of this kind can fill the variable at request time.
fn var_available(var: &Var, kind: &ProfileKind, tenancy: bool) -> Result<(), String> {
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
        Var::Username | Var::Password | Var::Basic => matches!(kind, ProfileKind::Basic { .. }),
        Var::ApiKey => matches!(kind, ProfileKind::ApiKey { .. }),
        _ => false,
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
                if rendered.is_empty() || rendered == "." || rendered == ".." {
                    v.err(
                        &value_path,
                        "a path parameter can never be empty, \".\" or \"..\"",
                    );
                }
            }
        }
        for var in t.vars() {
            if let Err(msg) = var_available(var, k, tenancy) {
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
