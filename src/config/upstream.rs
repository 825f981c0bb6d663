//! Parsing a route's `upstream` URL with its `{tenant}` and `{field}` placeholders.

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

#[cfg(test)]
mod tests {
    use super::*;

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
