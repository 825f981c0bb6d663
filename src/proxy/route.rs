//! The route table: longest-prefix match and building the upstream URI.

use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Uri};

use super::upstream::Upstream;
use super::ProfileRt;
use crate::config::{GrantOrigin, HostPattern, Route, Seg, UpstreamUrl};
use crate::error::{ErrorCode, ProxyError};

pub struct RouteRt {
    pub prefix: String,
    pub upstream: UpstreamUrl,
    /// Allowed profiles, each with the upstream client for it (TLS and connector); the first is
    /// the default.
    pub profiles: Vec<(Arc<ProfileRt>, Upstream, crate::metrics::RequestMetrics)>,
    pub timeout: Duration,
    /// The fast path's `host:` line for the upstream, when its authority is fixed.
    pub host_line: Option<Box<[u8]>>,
    /// The fast transport's pool name (`host:port`), when the authority is fixed.
    pub pool_name: Option<Arc<str>>,
    /// Hosts an origin taken from the grant may have (`upstream_hosts`).
    pub upstream_hosts: Vec<HostPattern>,
}

impl RouteRt {
    pub fn new(
        route: &Route,
        profiles: Vec<(Arc<ProfileRt>, Upstream, crate::metrics::RequestMetrics)>,
    ) -> Self {
        RouteRt {
            prefix: route.prefix.clone(),
            upstream: route.upstream.clone(),
            profiles,
            timeout: route.timeout,
            upstream_hosts: route.upstream_hosts.clone(),
            pool_name: route
                .upstream
                .authority
                .as_ref()
                .map(|a| Arc::from(a.as_str())),
            host_line: route.upstream.authority.as_ref().map(|a| {
                let default = if route.upstream.scheme == http::uri::Scheme::HTTPS {
                    443
                } else {
                    80
                };
                super::h1::host_line(a, default).into_boxed_slice()
            }),
        }
    }

    /// Whether `path` is under this route's prefix. A prefix without a trailing `/` matches only at a
    /// segment boundary: `/a` matches `/a` and `/a/x`, not `/ab`.
    pub fn matches<'p>(&self, path: &'p str) -> Option<&'p str> {
        let rest = path.strip_prefix(self.prefix.as_str())?;
        if self.prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/') {
            Some(rest)
        } else {
            None
        }
    }

    /// The origin a grant member names, when it is a plain origin on a host of `upstream_hosts`;
    /// otherwise 502 `upstream_not_allowed` (and nothing is sent). The message never holds the
    /// member's value, only the host it named when that host is the reason.
    pub fn grant_origin(
        &self,
        member: &str,
        grant: Option<&crate::token::Token>,
    ) -> Result<GrantOrigin, ProxyError> {
        let value = grant.and_then(|t| t.extra(member)).ok_or_else(|| {
            ProxyError::new(
                ErrorCode::UpstreamNotAllowed,
                format!("the grant has no member {member}, which the route's upstream ({{{{grant.{member}}}}}) needs"),
            )
        })?;
        let origin = GrantOrigin::parse(value).map_err(|why| {
            ProxyError::new(
                ErrorCode::UpstreamNotAllowed,
                format!("the grant's {member} is not used as an upstream origin: {why}"),
            )
        })?;
        if !self.upstream_hosts.iter().any(|p| p.matches(&origin.host)) {
            return Err(ProxyError::new(
                ErrorCode::UpstreamNotAllowed,
                format!(
                    "the grant's {member} names host {}, which is not in the route's upstream_hosts",
                    origin.host
                ),
            ));
        }
        Ok(origin)
    }

    /// The upstream URI: configured scheme and authority (never from the request; from the grant
    /// only within `upstream_hosts`), base path with its placeholders filled, the rest of the
    /// request path, and the query.
    pub fn upstream_uri(
        &self,
        rest: &str,
        query: Option<&str>,
        tenant: Option<&str>,
        params: &[(&str, String)],
        grant: Option<&crate::token::Token>,
    ) -> Result<Uri, ProxyError> {
        let u = &self.upstream;
        let mut scheme = u.scheme.clone();
        let mut base = String::new();
        let authority = match (&u.grant_origin, &u.authority) {
            (Some(member), _) => {
                let o = self.grant_origin(member, grant)?;
                scheme = o.scheme;
                base = o.path;
                o.authority
            }
            (None, Some(a)) => a.clone(),
            (None, None) => {
                let tenant = tenant.ok_or_else(|| {
                    ProxyError::new(
                        ErrorCode::TenantInvalid,
                        "X-Authsidecar-Tenant is required: the route's upstream URL uses {tenant}",
                    )
                })?;
                let mut host = String::with_capacity(64);
                for s in &u.host {
                    match s {
                        Seg::Lit(l) => host.push_str(l),
                        Seg::Var(_) => host.push_str(tenant),
                    }
                }
                if let Some(p) = u.port {
                    host.push(':');
                    host.push_str(&p.to_string());
                }
                Authority::try_from(host).map_err(|_| {
                    ProxyError::new(
                        ErrorCode::TenantInvalid,
                        "the tenant does not form a valid host",
                    )
                })?
            }
        };

        let mut pq = String::with_capacity(64 + rest.len() + query.map_or(0, str::len));
        pq.push_str(&base);
        for s in &u.path {
            match s {
                Seg::Lit(l) => pq.push_str(l),
                Seg::Var(name) if name == "tenant" => match tenant {
                    Some(t) => pq.push_str(t),
                    None => return Err(ProxyError::new(
                        ErrorCode::TenantInvalid,
                        "X-Authsidecar-Tenant is required: the route's upstream URL uses {tenant}",
                    )),
                },
                Seg::Var(name) => {
                    let v = params
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                        .ok_or_else(|| {
                            ProxyError::new(
                                ErrorCode::Internal,
                                format!("no path field for {{{name}}}"),
                            )
                        })?;
                    pq.push_str(v);
                }
            }
        }
        if !rest.is_empty() {
            if pq.ends_with('/') && rest.starts_with('/') {
                pq.push_str(&rest[1..]);
            } else if !pq.ends_with('/') && !rest.starts_with('/') {
                pq.push('/');
                pq.push_str(rest);
            } else {
                pq.push_str(rest);
            }
        }
        match (&u.query, query) {
            (Some(a), Some(b)) if !b.is_empty() => {
                pq.push('?');
                pq.push_str(a);
                pq.push('&');
                pq.push_str(b);
            }
            (Some(a), _) => {
                pq.push('?');
                pq.push_str(a);
            }
            (None, Some(b)) => {
                pq.push('?');
                pq.push_str(b);
            }
            (None, None) => {}
        }
        let pq = PathAndQuery::try_from(pq).map_err(|_| {
            ProxyError::new(
                ErrorCode::PathInvalid,
                "the upstream path is not a valid URI path",
            )
        })?;
        Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(pq)
            .build()
            .map_err(|e| {
                ProxyError::new(
                    ErrorCode::Internal,
                    format!("building the upstream URI: {e}"),
                )
            })
    }
}

/// Whether `s`, in any form an upstream may read it as, satisfies `f`: as sent, then percent-decoded
/// once, twice and three times (an upstream, or a chain of them, may decode more than once). Stops at
/// the first form that no longer changes.
pub(crate) fn any_form(s: &str, mut f: impl FnMut(&[u8]) -> bool) -> bool {
    let mut cur: std::borrow::Cow<'_, [u8]> = std::borrow::Cow::Borrowed(s.as_bytes());
    for _ in 0..4 {
        if f(&cur) {
            return true;
        }
        if !cur.contains(&b'%') {
            return false;
        }
        let next: Vec<u8> = percent_encoding::percent_decode(&cur).collect();
        if next[..] == cur[..] {
            return false;
        }
        cur = std::borrow::Cow::Owned(next);
    }
    false
}

/// Whether one path segment is `.` or `..` once cut at its first `;` (path parameters, which
/// Tomcat-style servers strip before they resolve dot-segments: `..;x` is `..` to them).
pub(crate) fn is_dot_segment(seg: &[u8]) -> bool {
    let seg = seg.split(|b| *b == b';').next().unwrap_or(seg);
    seg == b"." || seg == b".."
}

/// Rejects a request path that has, in any form an upstream may decode it to, a `.` or `..` segment,
/// with `/` and `\` both taken as separators and each segment cut at `;`. So `..%2f`, `%2e%2e%2f`,
/// `..;/`, `..\` and `..%5c` are all refused, and a request can never climb out of a route's
/// upstream base path. An encoded slash inside a name (`group%2Fproject`) passes unchanged.
pub fn check_path(path: &str) -> Result<(), ProxyError> {
    if !path.starts_with('/') {
        return Err(ProxyError::new(
            ErrorCode::PathInvalid,
            "the request target must be a path starting with '/'",
        ));
    }
    // A dot-segment needs a `.`, literal or encoded.
    if !path.contains('.') && !path.contains('%') {
        return Ok(());
    }
    if any_form(path, |b| {
        b.split(|c| *c == b'/' || *c == b'\\').any(is_dot_segment)
    }) {
        return Err(ProxyError::new(
            ErrorCode::PathInvalid,
            "the request path has a '.' or '..' segment (after percent-decoding, with '/' or '\\' as separators and ';' parameters cut)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_rejected() {
        for bad in [
            "/a/../b",
            "/a/./b",
            "/a/%2e%2E/b",
            "/a/..",
            "/%2e",
            "x",
            "/ng/..%2fadmin",
            "/ng/..%2Fadmin",
            "/ng/%2e%2e%2fadmin",
            "/ng/..;/admin",
            "/ng/..;jsessionid=x/admin",
            "/ng/..\\admin",
            "/ng/..%5cadmin",
            "/ng/..%5Cadmin",
            "/ng/%2e%2e%5cadmin",
            "/ng/.%2e/admin",
            "/ng/%252e%252e%252fadmin",
            "/ng/a%2f..%2f..%2fadmin",
            "/ng/.;/admin",
            "/ng/x/..",
            "/ng/x/%2e%2e;",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for good in [
            "/a/b",
            "/a/..b/c",
            "/a/.well-known/x",
            "/a%2fb",
            "/",
            "/api/v4/projects/group%2Fproject/issues",
            "/a/b;c=d",
            "/a/...;/b",
            "/a/%2e%2e%2e",
            "/a/..a%2fb",
        ] {
            assert!(check_path(good).is_ok(), "{good}");
        }
    }
}
