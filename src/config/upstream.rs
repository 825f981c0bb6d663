//! Parsing a route's `upstream` URL with its `{tenant}` and `{field}` placeholders, or an origin
//! taken from the grant (`{{grant.NAME}}/path/`), and the `upstream_hosts` patterns that bind such
//! an origin to known hosts.

use http::uri::{Authority, Scheme};

/// A piece of the host or path of an upstream URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Lit(String),
    /// `{name}`: `tenant`, or the key of a `path` field.
    Var(String),
}

/// A parsed upstream URL template. `Debug` leaves out the fixed query: it may hold a value a
/// `${VAR}` reference put there.
#[derive(Clone)]
pub struct UpstreamUrl {
    pub raw: String,
    pub scheme: Scheme,
    /// Host pieces; only `{tenant}` may appear here.
    pub host: Vec<Seg>,
    pub port: Option<u16>,
    /// Path pieces (always starts with `/`).
    pub path: Vec<Seg>,
    /// A fixed query to put before the caller's query, without `?`.
    pub query: Option<String>,
    /// The authority, when the host has no placeholder.
    pub authority: Option<Authority>,
    /// `{{grant.NAME}}` at the start: the origin (and a base path) is the member `NAME` kept with
    /// the grant, checked per request ([`GrantOrigin::parse`], `upstream_hosts`); `scheme` and
    /// `host` are then placeholders, and `path` follows the grant's path.
    pub grant_origin: Option<String>,
}

impl std::fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = match &self.query {
            Some(_) => format!("{}?…", self.raw.split('?').next().unwrap_or("")),
            None => self.raw.clone(),
        };
        f.debug_struct("UpstreamUrl")
            .field("raw", &shown)
            .finish_non_exhaustive()
    }
}

fn split_placeholders(s: &str, what: &str) -> Result<Vec<Seg>, String> {
    let mut segs = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            segs.push(Seg::Lit(rest[..open].to_string()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed \"{{\" in the {what}; expected {{name}}"))?
            + open;
        let name = &rest[open + 1..close];
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "invalid placeholder \"{{{name}}}\" in the {what}; expected {{tenant}} or {{field_key}} (letters, digits, '-', '_')"
            ));
        }
        segs.push(Seg::Var(name.to_string()));
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("stray \"}}\" in the {what}"));
    }
    if !rest.is_empty() {
        segs.push(Seg::Lit(rest.to_string()));
    }
    Ok(segs)
}

fn sample(segs: &[Seg]) -> String {
    segs.iter()
        .map(|s| match s {
            Seg::Lit(l) => l.as_str(),
            Seg::Var(_) => "x",
        })
        .collect()
}

impl UpstreamUrl {
    pub fn parse(raw: &str) -> Result<UpstreamUrl, String> {
        if let Some(after) = raw.strip_prefix("{{") {
            let end = after
                .find("}}")
                .ok_or("unclosed \"{{\"; expected {{grant.NAME}}/path/")?;
            let var = after[..end].trim();
            let name = var
                .strip_prefix("grant.")
                .filter(|n| {
                    !n.is_empty()
                        && n.len() <= 64
                        && n.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
                .ok_or_else(|| {
                    format!("{{{{{var}}}}} cannot start an upstream URL; expected {{{{grant.NAME}}}} (a member kept with the grant, e.g. instance_url)")
                })?;
            let rest = &after[end + 2..];
            if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')) {
                return Err(
                    "{{grant.NAME}} is the whole origin: it must be followed by nothing, a path starting with '/', or a query".into(),
                );
            }
            if rest.contains("{{") {
                return Err(
                    "{{grant.NAME}} is allowed once, at the start of the upstream URL".into(),
                );
            }
            let mut u = UpstreamUrl::parse(&format!("https://grant.invalid{rest}"))?;
            if u.host
                .iter()
                .chain(&u.path)
                .any(|s| *s == Seg::Var("tenant".into()))
            {
                return Err(
                    "{tenant} cannot be used with {{grant.NAME}}: the grant gives the origin"
                        .into(),
                );
            }
            u.raw = raw.to_string();
            u.authority = None;
            u.grant_origin = Some(name.to_string());
            return Ok(u);
        }
        if raw.contains("{{") {
            return Err("{{grant.NAME}} is allowed only at the start of the upstream URL (the whole origin), e.g. \"{{grant.instance_url}}/services/data/v60.0/\"".into());
        }
        let (scheme, rest) = if let Some(r) = raw.strip_prefix("http://") {
            (Scheme::HTTP, r)
        } else if let Some(r) = raw.strip_prefix("https://") {
            (Scheme::HTTPS, r)
        } else {
            return Err(
                "not an absolute URL; expected http://host[:port]/path or https://…".to_string(),
            );
        };
        if raw.contains('#') {
            return Err("a fragment (#) is not allowed in an upstream URL".into());
        }
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (auth, after) = rest.split_at(auth_end);
        if auth.contains('@') {
            return Err("credentials in the URL are not allowed; use a profile".into());
        }
        if auth.is_empty() {
            return Err("the URL has no host".to_string());
        }
        // Port (only after the last ':' outside IPv6 brackets)
        let (host_part, port) = match auth.rfind(':') {
            Some(i) if !auth[i..].contains(']') => {
                let p = &auth[i + 1..];
                let port: u16 = p
                    .parse()
                    .map_err(|_| format!("invalid port \"{p}\"; expected a number 1-65535"))?;
                if port == 0 {
                    return Err("invalid port 0; expected a number 1-65535".into());
                }
                (&auth[..i], Some(port))
            }
            _ => (auth, None),
        };
        let host = split_placeholders(host_part, "host")?;
        for s in &host {
            if let Seg::Var(v) = s {
                if v != "tenant" {
                    return Err(format!(
                        "placeholder {{{v}}} is not allowed in the host; only {{tenant}} is"
                    ));
                }
            }
        }
        let (path_part, query) = match after.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (after, None),
        };
        if let Some(q) = query {
            if q.contains(['{', '}']) {
                return Err("placeholders are allowed in the host and path only".into());
            }
        }
        let path_part = if path_part.is_empty() { "/" } else { path_part };
        let path = split_placeholders(path_part, "path")?;

        // Check the shape with placeholders filled in.
        let sample_auth = match port {
            Some(p) => format!("{}:{p}", sample(&host)),
            None => sample(&host),
        };
        let authority: Authority = sample_auth
            .parse()
            .map_err(|_| "invalid host; expected a DNS name or IP address".to_string())?;
        let sample_path = sample(&path);
        let pq = match query {
            Some(q) => format!("{sample_path}?{q}"),
            None => sample_path,
        };
        pq.parse::<http::uri::PathAndQuery>().map_err(|_| {
            "invalid characters in the path or query; percent-encode them".to_string()
        })?;

        let has_host_var = host.iter().any(|s| matches!(s, Seg::Var(_)));
        Ok(UpstreamUrl {
            raw: raw.to_string(),
            scheme,
            host,
            port,
            path,
            query: query.filter(|q| !q.is_empty()).map(str::to_string),
            authority: (!has_host_var).then_some(authority),
            grant_origin: None,
        })
    }

    /// Every placeholder name, host first, then path.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.host
            .iter()
            .chain(self.path.iter())
            .filter_map(|s| match s {
                Seg::Var(v) => Some(v.as_str()),
                Seg::Lit(_) => None,
            })
    }
}

/// One `upstream_hosts` pattern: an exact host name, an IP address, or `*.domain`, which matches
/// any name with one or more labels before `.domain`, never `domain` itself. No port: a pattern
/// binds the host whatever the port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    Ip(std::net::IpAddr),
    /// `*.domain`, kept as `.domain`.
    Subdomains(String),
}

/// Whether `s` is a DNS name: labels of letters, digits and '-' (not at either end), 1 to 63
/// bytes each, 253 in all; no empty label (so no trailing dot).
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let expected = "expected a host name (api.example.com), *.domain (*.my.salesforce.com) or an IP address, without scheme, port or path";
        let lower = s.to_ascii_lowercase();
        if let Some(domain) = lower.strip_prefix("*.") {
            if !is_dns_name(domain) || !domain.contains('.') {
                return Err(format!(
                    "\"{s}\": *. must be followed by a domain of two or more labels; {expected}"
                ));
            }
            return Ok(HostPattern::Subdomains(format!(".{domain}")));
        }
        let bare = lower
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(&lower);
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            return Ok(HostPattern::Ip(ip));
        }
        if is_dns_name(&lower) && !lower.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Ok(HostPattern::Exact(lower));
        }
        Err(format!("\"{s}\": {expected}"))
    }

    /// Whether `host` (as [`GrantOrigin::parse`] gives it: lowercase, IPv6 without brackets)
    /// matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Ip(ip) => host.parse::<std::net::IpAddr>().is_ok_and(|a| a == *ip),
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

/// An origin taken from a grant member: `https://host[:port]` or `http://…`, with an optional
/// base path. Anything else is refused: userinfo, a query or fragment, percent-encoding,
/// backslashes, whitespace, non-ASCII, empty labels, `.` or `..` path segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantOrigin {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Lowercase; an IPv6 address without its brackets.
    pub host: String,
    /// The base path without a trailing `/` (empty for none).
    pub path: String,
}

impl GrantOrigin {
    /// Never echoes the value in its error (it came from the identity provider).
    pub fn parse(value: &str) -> Result<GrantOrigin, &'static str> {
        let (scheme, rest) = if let Some(r) = value.strip_prefix("https://") {
            (Scheme::HTTPS, r)
        } else if let Some(r) = value.strip_prefix("http://") {
            (Scheme::HTTP, r)
        } else {
            return Err("it is not an https:// or http:// URL");
        };
        if value.len() > 2048 {
            return Err("it is over 2048 bytes");
        }
        if rest
            .bytes()
            .any(|b| !b.is_ascii_graphic() || matches!(b, b'@' | b'?' | b'#' | b'%' | b'\\'))
        {
            return Err(
                "it has userinfo, a query, a fragment, percent-encoding, a backslash, whitespace or non-ASCII",
            );
        }
        let (auth, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = if let Some(v6) = auth.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("its IPv6 host is not closed")?;
            h.parse::<std::net::Ipv6Addr>()
                .map_err(|_| "its IPv6 host is not an address")?;
            if !after.is_empty() && !after.starts_with(':') {
                return Err("its host and port do not form an authority");
            }
            (h.to_string(), after.strip_prefix(':'))
        } else {
            let (h, p) = match auth.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (auth, None),
            };
            let h = h.to_ascii_lowercase();
            if !is_dns_name(&h) {
                return Err("its host is not a DNS name or an IP address");
            }
            if h.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && h.parse::<std::net::Ipv4Addr>().is_err()
            {
                return Err("its host is not a DNS name or an IP address");
            }
            (h, p)
        };
        if let Some(p) = port {
            if p.is_empty()
                || p.len() > 5
                || !p.bytes().all(|b| b.is_ascii_digit())
                || !matches!(p.parse::<u16>(), Ok(1..))
            {
                return Err("its port is not a number 1-65535");
            }
        }
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                let name = seg.split(';').next().unwrap_or(seg);
                if name == "." || name == ".." {
                    return Err("its path has a '.' or '..' segment");
                }
                if !seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:".contains(&b))
                {
                    return Err("its path has a character outside the unreserved set");
                }
            }
        }
        let authority: Authority = auth
            .to_ascii_lowercase()
            .parse()
            .map_err(|_| "its host and port do not form an authority")?;
        Ok(GrantOrigin {
            scheme,
            authority,
            host,
            path: path.trim_end_matches('/').to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_upstreams_parse() {
        let u = UpstreamUrl::parse("{{grant.instance_url}}/services/data/v60.0/").unwrap();
        assert_eq!(u.grant_origin.as_deref(), Some("instance_url"));
        assert!(u.authority.is_none());
        assert_eq!(u.path, vec![Seg::Lit("/services/data/v60.0/".into())]);
        assert!(UpstreamUrl::parse("{{ grant.instance_url }}").is_ok());
        for bad in [
            "{{token.instance_url}}/x",
            "{{grant.}}/x",
            "{{grant.a}}x/",
            "{{grant.a}}.evil.com/",
            "https://{{grant.a}}/",
            "https://x/{{grant.a}}/",
            "{{grant.a}}/{{grant.b}}",
            "{{grant.a}}/{tenant}/",
            "{{grant.a",
        ] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_patterns() {
        let p = HostPattern::parse("*.My.Salesforce.com").unwrap();
        assert!(p.matches("acme.my.salesforce.com"));
        assert!(p.matches("a.b.my.salesforce.com"));
        assert!(!p.matches("my.salesforce.com"));
        assert!(!p.matches("evilmy.salesforce.com"));
        assert!(!p.matches("acme.my.salesforce.com.evil.com"));
        let p = HostPattern::parse("api.example.com").unwrap();
        assert!(p.matches("api.example.com") && !p.matches("x.api.example.com"));
        let p = HostPattern::parse("127.0.0.2").unwrap();
        assert!(p.matches("127.0.0.2") && !p.matches("127.0.0.20"));
        assert!(HostPattern::parse("[::1]").unwrap().matches("::1"));
        for bad in [
            "*.com",
            "*",
            "a.*.com",
            "x.com:443",
            "https://x.com",
            "x.com/",
            "",
            "x..com",
            "x.com.",
            "1.2.3",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grant_origins() {
        let o = GrantOrigin::parse("https://Acme.my.salesforce.com").unwrap();
        assert_eq!(o.host, "acme.my.salesforce.com");
        assert_eq!(o.path, "");
        let o = GrantOrigin::parse("http://127.0.0.1:8080/base/").unwrap();
        assert_eq!(
            (o.authority.as_str(), o.path.as_str()),
            ("127.0.0.1:8080", "/base")
        );
        let o = GrantOrigin::parse("https://[::1]:8443").unwrap();
        assert_eq!(o.host, "::1");
        for bad in [
            "ftp://x.com",
            "//x.com",
            "https://user:pw@x.com",
            "https://x.com@evil.com",
            "https://evil.com#@x.com",
            "https://x.com/a/../b",
            "https://x.com/..",
            "https://x.com/%2e%2e/admin",
            "https://x.com/a%2fb",
            "https://x.com/..;/admin",
            "https://x.com\\@evil.com",
            "https://x.com?x=1",
            "https://x.com:0",
            "https://x.com:99999",
            "https://x.com:",
            "https://x..com",
            "https://x.com./",
            "https://",
            "https://x .com",
            "https://x.com/\u{e9}",
            "https://1.2.3/",
            "https://[::1/",
            "https://[::1]x/",
        ] {
            assert!(GrantOrigin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_plain_and_templated_urls() {
        let u = UpstreamUrl::parse("https://{tenant}.example.com:8443/api/{org}/v1?x=1").unwrap();
        assert_eq!(u.scheme, Scheme::HTTPS);
        assert_eq!(u.port, Some(8443));
        assert_eq!(u.placeholders().collect::<Vec<_>>(), vec!["tenant", "org"]);
        assert_eq!(u.query.as_deref(), Some("x=1"));
        assert!(u.authority.is_none());

        let u = UpstreamUrl::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(u.path, vec![Seg::Lit("/".into())]);
        assert_eq!(u.authority.unwrap().as_str(), "127.0.0.1:9000");
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "ftp://x/",
            "example.com/",
            "http://user:pw@x/",
            "http:///p",
            "http://x:99999/",
            "http://{org}.x/",
            "http://x/{a b}/",
            "http://x/{open",
            "http://x/?a={b}",
            "http://x/#frag",
        ] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
