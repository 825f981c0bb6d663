//! `[[routes]]`: prefix, upstream URL, the profiles a route allows, and how they fit together.

use super::tls::client_tls;
use super::*;

/// `[[routes]]`, checked against the profiles they name (`broken`: profiles that did not load,
/// so a route naming one adds no second error).
pub(super) fn routes(
    raw_routes: Vec<toml::Value>,
    profiles: &IndexMap<Arc<str>, Arc<Profile>>,
    broken: &HashSet<String>,
    proxy: &ProxySettings,
    v: &mut V,
) -> Vec<Route> {
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
        if let Some(r) = route(rr, &path, profiles, broken, proxy, v) {
            routes.push(r);
        }
    }
    routes
}

/// Plain HTTP through a connector: the connector sees the whole request, credential included.
pub(super) fn warn_plain_http_through_connectors(
    routes: &[Route],
    profiles: &IndexMap<Arc<str>, Arc<Profile>>,
    v: &mut V,
) {
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
    for (name, p) in profiles {
        if let (Some(o), Some(c)) = (p.kind.oauth(), &p.connector) {
            if o.token_url.starts_with("http://") && !c.no_proxy.iter().any(|n| n == "*") {
                v.warn(format!(
                    "profiles.{name}.token_url: plain http:// through connector {}: the connector sees the client secret and the tokens; use https://",
                    c.name
                ));
            }
        }
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
    let upstream_hosts = upstream_hosts(rr.upstream_hosts, upstream.as_ref(), path, v);
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
        upstream_hosts,
    })
}

/// `upstream_hosts`: required exactly when the upstream's origin comes from the grant
/// (`{{grant.NAME}}`), so a credential only ever goes to hosts the config names.
fn upstream_hosts(
    raw: Option<Vec<String>>,
    upstream: Option<&UpstreamUrl>,
    path: &str,
    v: &mut V,
) -> Vec<HostPattern> {
    let key = format!("{path}.upstream_hosts");
    let from_grant = upstream.and_then(|u| u.grant_origin.as_deref());
    let mut out = Vec::new();
    match (&raw, from_grant) {
        (None, Some(name)) => v.err(
            &key,
            format!("required: the upstream's origin comes from the grant ({{{{grant.{name}}}}}); list the hosts it may name, e.g. [\"*.my.salesforce.com\"]"),
        ),
        (Some(l), Some(name)) if l.is_empty() => v.err(
            &key,
            format!("empty: the upstream's origin comes from the grant ({{{{grant.{name}}}}}); list the hosts it may name"),
        ),
        (Some(_), None) if upstream.is_some() => v.err(
            &key,
            "only for an upstream whose origin comes from the grant ({{grant.NAME}}/…); this upstream's host is fixed",
        ),
        _ => {}
    }
    for (i, h) in raw.unwrap_or_default().iter().enumerate() {
        match HostPattern::parse(h) {
            Ok(p) => out.push(p),
            Err(e) => v.err(&format!("{key}[{i}]"), e),
        }
    }
    out
}

/// The route's placeholders and the profile's path fields must match exactly, and `{tenant}` needs
/// `tenancy = true`.
fn check_route_profile(u: &UpstreamUrl, prof: &Profile, p: &str, route_path: &str, v: &mut V) {
    let name = &prof.name;
    if let (Some(member), None) = (&u.grant_origin, prof.kind.oauth()) {
        v.err(
            p,
            format!("profile \"{name}\" is of type \"{}\", which keeps no grant for {{{{grant.{member}}}}}; the route's upstream needs an OAuth profile", prof.kind.type_name()),
        );
    }
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
