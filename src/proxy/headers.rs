//! Control headers and hop-by-hop headers (RFC 9110 §7.6.1).

use http::header::{HeaderName, HeaderValue, CONNECTION};
use http::HeaderMap;

use crate::error::{ErrorCode, ProxyError};

pub const PROFILE: &str = "x-authsidecar-profile";
pub const USER: &str = "x-authsidecar-user";
pub const TENANT: &str = "x-authsidecar-tenant";
const CONTEXT_PREFIX: &str = "x-authsidecar-context-";
const CONTROL_PREFIX: &str = "x-authsidecar-";

/// Hop-by-hop headers, never forwarded in either direction. `Proxy-Authorization` belongs to the
/// next proxy only (the sidecar), so the caller's is dropped too. `Trailer` is not among them: it
/// announces a chunked message's trailer fields end to end (RFC 9110 §6.6.2), and a server only
/// sends the fields it announced.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Whether `name` is one of the hop-by-hop headers above (any case).
pub fn is_hop_by_hop(name: &str) -> bool {
    // By length first: most names are of no hop-by-hop length and need no comparison.
    let candidates: &[&str] = match name.len() {
        2 => &["te"],
        7 => &["upgrade"],
        10 => &["connection", "keep-alive"],
        16 => &["proxy-connection"],
        17 => &["transfer-encoding"],
        18 => &["proxy-authenticate"],
        19 => &["proxy-authorization"],
        _ => return false,
    };
    candidates.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// The caller's control headers, taken out of the request.
#[derive(Debug, Default)]
pub struct Control {
    pub profile: Option<HeaderValue>,
    pub user: Option<HeaderValue>,
    pub tenant: Option<HeaderValue>,
    pub context: Vec<(String, HeaderValue)>,
}

/// Removes hop-by-hop headers (including those the `Connection` header names).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Usually there is none (and so no `Connection` either): one pass over the few names present
    // instead of a lookup for each hop-by-hop name.
    if !any_of(headers, HOP_BY_HOP) {
        return;
    }
    let listed = super::message::connection_options(
        headers
            .get_all(CONNECTION)
            .iter()
            .map(HeaderValue::as_bytes),
    )
    .listed;
    for name in listed {
        headers.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Whether `headers` has any of `names` (lowercase, as `HeaderName`s are).
fn any_of(headers: &HeaderMap, names: &[&str]) -> bool {
    headers.keys().any(|k| names.contains(&k.as_str()))
}

/// Removes every header of `names` (lowercase): a removal only when one of them is there.
pub fn remove_all_of(headers: &mut HeaderMap, names: &[&str]) {
    if any_of(headers, names) {
        for name in names {
            headers.remove(*name);
        }
    }
}

/// Takes every `X-Authsidecar-*` header out of the request, keeping the ones it understands, and
/// removes hop-by-hop headers.
pub fn take_control(headers: &mut HeaderMap) -> Control {
    strip_hop_by_hop(headers);
    let mut c = Control::default();
    let (mut has_control, mut has_underscore) = (false, false);
    for k in headers.keys() {
        has_control |= k.as_str().starts_with(CONTROL_PREFIX);
        has_underscore |= may_be_lookalike(k.as_str().as_bytes());
    }
    if has_underscore {
        drop_underscore_lookalikes(headers);
        has_control = headers
            .keys()
            .any(|k| k.as_str().starts_with(CONTROL_PREFIX));
    }
    if !has_control {
        return c;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(CONTROL_PREFIX))
        .cloned()
        .collect();
    for name in names {
        let Some(value) = headers.remove(&name) else {
            continue;
        };
        match name.as_str() {
            PROFILE => c.profile = Some(value),
            USER => c.user = Some(value),
            TENANT => c.tenant = Some(value),
            n => {
                if let Some(ctx) = n.strip_prefix(CONTEXT_PREFIX) {
                    c.context.push((ctx.to_string(), value));
                }
            }
        }
    }
    c
}

/// Framing and routing headers an upstream (or a server in front of it) may read a name with `_` for
/// `-` as, besides the hop-by-hop ones and the control headers.
const FRAMING: &[&str] = &["content-length", "host", "expect"];

/// A quick test, with no scan of the name, for what `drop_underscore_lookalikes` looks at: a name
/// with `_` where one of those headers has `-` (the control prefix `x-authsidecar-` at 1 or 13,
/// `keep-alive` at 4, `content-length` at 7, `proxy-*` at 5, `transfer-encoding` at 8). The other
/// names of the lists have no `-` to stand in for.
fn may_be_lookalike(n: &[u8]) -> bool {
    let at = |i: usize| n.get(i) == Some(&b'_');
    match n.len() {
        10 => at(4),
        14 => at(7) || (n[0] == b'x' && (at(1) || at(13))),
        16 | 18 | 19 => at(5) || (n[0] == b'x' && (at(1) || at(13))),
        17 => at(8) || (n[0] == b'x' && (at(1) || at(13))),
        l if l > 14 => n[0] == b'x' && (at(1) || at(13)),
        _ => false,
    }
}

/// Removes headers whose names differ from a control, hop-by-hop or framing header only by `_` for
/// `-` (`X_Authsidecar_User`, `Transfer_Encoding`): servers that map `_` to `-` (CGI-style
/// environments, some frameworks) would read them as the real one, so they go, as nginx drops
/// names with underscores. Other names with `_` pass unchanged.
fn drop_underscore_lookalikes(headers: &mut HeaderMap) {
    let lookalikes: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let n = k.as_str();
            if !n.contains('_') {
                return false;
            }
            let dashed = n.replace('_', "-");
            dashed.starts_with(CONTROL_PREFIX)
                || HOP_BY_HOP.contains(&dashed.as_str())
                || FRAMING.contains(&dashed.as_str())
        })
        .cloned()
        .collect();
    for name in lookalikes {
        headers.remove(name);
    }
}

/// Validates `X-Authsidecar-Tenant` by the profile's `tenant_pattern` (see [`tenant_for`]).
pub fn tenant(value: &HeaderValue, pattern: Option<&regex::Regex>) -> Result<String, ProxyError> {
    tenant_for(value.as_bytes(), pattern)
}

/// Characters never allowed in a tenant, whatever `tenant_pattern` says: they would change the
/// meaning of a URL or of a store record's name (`:`).
pub const TENANT_REFUSED: &[u8] = b"/@?#%\\:";

/// Validates a tenant value and lowercases it. With a profile's `tenant_pattern` the whole
/// (lowercased) value must match it; without, it must be one DNS label. Whatever the pattern:
/// 1-253 bytes of printable ASCII, none of `/ @ ? # % \ :`, no whitespace, no `..`, not `.` or `-`.
pub fn tenant_for(b: &[u8], pattern: Option<&regex::Regex>) -> Result<String, ProxyError> {
    let Some(re) = pattern else {
        return tenant_bytes(b);
    };
    let safe = !b.is_empty()
        && b.len() <= 253
        && b.iter()
            .all(|c| c.is_ascii_graphic() && !TENANT_REFUSED.contains(c))
        && !b.windows(2).any(|w| w == b"..")
        && b != b"."
        && b != b"-";
    let lower = String::from_utf8_lossy(b).to_ascii_lowercase();
    if !safe || !re.is_match(&lower) {
        return Err(ProxyError::new(
            ErrorCode::TenantInvalid,
            "X-Authsidecar-Tenant does not match the profile's tenant_pattern (and '/', '@', '?', '#', '%', '\\', ':', whitespace and '..' are never allowed)",
        ));
    }
    Ok(lower)
}

/// Validates a tenant value as one DNS label and lowercases it.
pub fn tenant_bytes(b: &[u8]) -> Result<String, ProxyError> {
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if !ok {
        return Err(ProxyError::new(
            ErrorCode::TenantInvalid,
            "X-Authsidecar-Tenant must be one DNS label: 1-63 letters, digits or '-', not starting or ending with '-'",
        ));
    }
    Ok(String::from_utf8_lossy(b).to_ascii_lowercase())
}

/// A user id: any non-empty UTF-8 header value up to 256 bytes.
pub fn user(value: &HeaderValue) -> Result<String, ProxyError> {
    // Not UTF-8 is refused as an empty value is.
    user_str(std::str::from_utf8(value.as_bytes()).unwrap_or_default())
}

/// A user id given as text (the header's rule): 1-256 bytes.
pub fn user_str(s: &str) -> Result<String, ProxyError> {
    if !s.is_empty() && s.len() <= 256 {
        Ok(s.to_string())
    } else {
        Err(ProxyError::new(
            ErrorCode::UserInvalid,
            "X-Authsidecar-User must be 1-256 bytes of UTF-8",
        ))
    }
}

/// A context value: the header's bytes as UTF-8, used literally (no decoding of any kind).
pub fn context(name: &str, value: &HeaderValue) -> Result<String, ProxyError> {
    context_text(name, std::str::from_utf8(value.as_bytes()).ok())
}

/// A context value given as text (the header's rule): at most 4096 bytes.
pub fn context_str(name: &str, s: &str) -> Result<String, ProxyError> {
    context_text(name, Some(s))
}

fn context_text(name: &str, s: Option<&str>) -> Result<String, ProxyError> {
    match s {
        Some(s) if s.len() <= 4096 => Ok(s.to_string()),
        _ => Err(ProxyError::new(
            ErrorCode::ContextValueInvalid,
            format!("X-Authsidecar-Context-{name} must be at most 4096 bytes of UTF-8"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_listed_and_hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("close, x-secret-hop, Authorization"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn underscore_lookalikes_are_dropped_and_other_underscores_kept() {
        let mut h = HeaderMap::new();
        for n in [
            "x_authsidecar_user",
            "x-authsidecar_context_acct",
            "transfer_encoding",
            "content_length",
            "proxy_authorization",
            "host_",
        ] {
            h.insert(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_static("x"),
            );
        }
        h.insert("x_trace_id", HeaderValue::from_static("1"));
        let c = take_control(&mut h);
        assert!(c.user.is_none() && c.context.is_empty());
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["host_", "x_trace_id"]);
    }

    #[test]
    fn the_quick_test_finds_every_lookalike() {
        // Every name with one `-` (or more) turned into `_` that the full rule drops passes the
        // quick test first.
        let mut names: Vec<String> = HOP_BY_HOP
            .iter()
            .chain(FRAMING)
            .map(|s| s.to_string())
            .collect();
        names.extend(
            [
                "x-authsidecar-user",
                "x-authsidecar-profile",
                "x-authsidecar-tenant",
                "x-authsidecar-context-acct",
            ]
            .map(String::from),
        );
        for name in names {
            let dashes: Vec<usize> = name.match_indices('-').map(|(i, _)| i).collect();
            for mask in 1u32..(1 << dashes.len()) {
                let mut b = name.clone().into_bytes();
                for (j, i) in dashes.iter().enumerate() {
                    if mask & (1 << j) != 0 {
                        b[*i] = b'_';
                    }
                }
                let n = String::from_utf8(b).unwrap();
                let dashed = n.replace('_', "-");
                let dropped = dashed.starts_with(CONTROL_PREFIX)
                    || HOP_BY_HOP.contains(&dashed.as_str())
                    || FRAMING.contains(&dashed.as_str());
                if dropped && !n.starts_with(CONTROL_PREFIX) {
                    assert!(may_be_lookalike(n.as_bytes()), "{n}");
                }
            }
        }
        assert!(!may_be_lookalike(b"x_trace_id"));
        assert!(!may_be_lookalike(b"user-agent"));
    }

    #[test]
    fn hop_by_hop_names_are_found_by_length_and_name() {
        for name in HOP_BY_HOP {
            assert!(is_hop_by_hop(name), "{name}");
            assert!(is_hop_by_hop(&name.to_ascii_uppercase()), "{name}");
        }
        for name in ["content-length", "trailer", "date", "te2", "x-upgrade"] {
            assert!(!is_hop_by_hop(name), "{name}");
        }
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        // The one-pass check must see every name of the list, not only `connection`.
        for name in HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert(*name, HeaderValue::from_static("x"));
            h.insert("x-keep", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name} was kept");
        }
    }

    #[test]
    fn remove_all_of_removes_every_listed_name_and_nothing_else() {
        let mut h = HeaderMap::new();
        h.append("x-real-ip", HeaderValue::from_static("1"));
        h.append("forwarded", HeaderValue::from_static("a"));
        h.append("forwarded", HeaderValue::from_static("b"));
        h.append("accept", HeaderValue::from_static("*/*"));
        remove_all_of(&mut h, &["forwarded", "x-real-ip", "x-forwarded-for"]);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
        remove_all_of(&mut h, &["forwarded"]);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn control_headers_are_taken_out() {
        let mut h = HeaderMap::new();
        h.insert("x-authsidecar-profile", HeaderValue::from_static("p"));
        h.insert("x-authsidecar-context-org", HeaderValue::from_static("o"));
        h.insert("x-authsidecar-unknown", HeaderValue::from_static("u"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        let c = take_control(&mut h);
        assert_eq!(c.profile.unwrap(), "p");
        assert_eq!(c.context[0].0, "org");
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn tenant_must_be_one_dns_label() {
        for bad in [
            "evil.com/",
            "a@b",
            "..",
            "",
            "-a",
            "a-",
            "a.b",
            &"a".repeat(64),
        ] {
            let v = HeaderValue::from_str(bad).unwrap();
            assert_eq!(
                tenant(&v, None).unwrap_err().code,
                ErrorCode::TenantInvalid,
                "{bad}"
            );
        }
        assert_eq!(
            tenant(&HeaderValue::from_static("Contoso-1"), None).unwrap(),
            "contoso-1"
        );
    }

    #[test]
    fn a_tenant_pattern_allows_dotted_tenants_but_never_the_dangerous_characters() {
        let dotted = regex::Regex::new(r"^(?:[a-z0-9-]+(\.[a-z0-9-]+)*)$").unwrap();
        let t = |s: &str, re| tenant_for(s.as_bytes(), Some(re));
        assert_eq!(
            t("Contoso.onmicrosoft.com", &dotted).unwrap(),
            "contoso.onmicrosoft.com"
        );
        // Whatever the pattern says, these are refused.
        let anything = regex::Regex::new("^(?:.*)$").unwrap();
        for bad in [
            "a/b", "a@b", "a?b", "a#b", "a%2e", "a\\b", "a b", "a\tb", "a..b", "..", ".", "-",
            "a:b", "", "é",
        ] {
            assert!(t(bad, &anything).is_err(), "{bad:?}");
        }
        assert!(t(&"a".repeat(254), &anything).is_err());
        assert!(t("contoso.onmicrosoft.com", &dotted).is_ok());
        assert!(t("contoso_x", &dotted).is_err());
        // Without a pattern: one DNS label, as before.
        assert!(tenant_for(b"a.b", None).is_err());
    }
}
