//! Dynamic values in a profile's identity-provider requests (issue 20 item 7): `{tenant}`,
//! `{{user_field.NAME}}` and `{{context.NAME}}` in `authorization_url`, `token_url`,
//! `refresh_url`, and the values of `scope` and `token_params`.
//!
//! Each value is encoded for the place it lands in, so no value can change the structure of a
//! URL:
//!
//! | position | rule |
//! | --- | --- |
//! | host | a DNS label (letters, digits, `-`; a tenant may be dotted); anything else is refused |
//! | path | percent-encoded as one segment; a value with `/` or `\`, or that is `.` or `..`, as sent or percent-decoded (the rule of path fields), is refused |
//! | query | form-encoded |
//! | `scope` / `token_params` value | as given: the request builder form-encodes it |
//!
//! The templates are parsed at load ([`parse`]) and rendered per request ([`render`]); a
//! refused value is named in the error, never echoed.

use crate::inject::encode::encode;

/// A dynamic variable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DynVar {
    Tenant,
    Context(String),
    UserField(String),
}

impl DynVar {
    /// The name the values are kept under (`tenant`, `context.NAME`, `user_field.NAME`).
    pub fn key(&self) -> String {
        match self {
            DynVar::Tenant => "tenant".into(),
            DynVar::Context(n) => format!("context.{n}"),
            DynVar::UserField(n) => format!("user_field.{n}"),
        }
    }
}

impl std::fmt::Display for DynVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DynVar::Tenant => f.write_str("{tenant}"),
            other => write!(f, "{{{{{}}}}}", other.key()),
        }
    }
}

/// Where a value lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pos {
    Host,
    Path,
    Query,
    /// A `scope` or `token_params` value (form-encoded by the request builder).
    Value,
}

impl Pos {
    fn name(self) -> &'static str {
        match self {
            Pos::Host => "the host name",
            Pos::Path => "a path segment",
            Pos::Query => "the query",
            Pos::Value => "a parameter value",
        }
    }
}

/// One use of a dynamic variable: the profile key it is in (`token_url`, `scope.scope`, …),
/// the variable and its position.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DynUse {
    pub key: String,
    pub var: DynVar,
    pub pos: Pos,
}

enum Piece<'a> {
    Lit(&'a str),
    Var(DynVar),
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Splits a template into literals and variables: `{tenant}`, `{{tenant}}`, `{{context.NAME}}`,
/// `{{user_field.NAME}}`. Any other `{{…}}` is an error naming it; so is any other `{…}` in a URL
/// (`url`), where a parameter value keeps it as text (a JSON `claims` parameter).
fn pieces(src: &str, url: bool) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push(Piece::Lit(&rest[..open]));
        }
        let after = &rest[open..];
        let (inner, len) = if let Some(a) = after.strip_prefix("{{") {
            let end = a
                .find("}}")
                .ok_or("unclosed \"{{\"; expected {{context.NAME}} or {{user_field.NAME}}")?;
            (a[..end].trim(), end + 4)
        } else if after.starts_with("{tenant}") {
            ("tenant", "{tenant}".len())
        } else if !url {
            out.push(Piece::Lit("{"));
            rest = &after[1..];
            continue;
        } else {
            let end = after.find('}').map_or(after.len(), |e| e + 1);
            return Err(format!(
                "unknown placeholder \"{}\"; expected {{tenant}}, {{{{context.NAME}}}} or {{{{user_field.NAME}}}}",
                &after[..end]
            ));
        };
        let var = match inner.split_once('.') {
            None if inner == "tenant" => DynVar::Tenant,
            Some(("context", n)) if valid_name(n) => DynVar::Context(n.to_ascii_lowercase()),
            Some(("user_field", n)) if valid_name(n) => DynVar::UserField(n.to_string()),
            _ => {
                return Err(format!(
                    "unknown variable \"{{{{{inner}}}}}\" here; expected {{tenant}}, {{{{context.NAME}}}} or {{{{user_field.NAME}}}}"
                ))
            }
        };
        out.push(Piece::Var(var));
        rest = &after[len..];
    }
    if url && rest.contains('}') {
        return Err(
            "stray \"}\"; expected {tenant}, {{context.NAME}} or {{user_field.NAME}}".into(),
        );
    }
    if !rest.is_empty() {
        out.push(Piece::Lit(rest));
    }
    Ok(out)
}

/// The position of what follows `prefix` in a URL; `Err` where no value may go (scheme, port,
/// user info, fragment).
fn url_pos(prefix: &str) -> Result<Pos, &'static str> {
    let Some(i) = prefix.find("://") else {
        return Err("a variable cannot be part of the scheme");
    };
    let rest = &prefix[i + 3..];
    if rest.contains('#') {
        return Err("a variable cannot be part of the fragment");
    }
    match rest.find(['/', '?']) {
        None if rest.contains(['@', ':']) => {
            Err("a variable cannot be part of the port or user info")
        }
        None => Ok(Pos::Host),
        Some(j) if rest[j..].contains('?') => Ok(Pos::Query),
        Some(_) => Ok(Pos::Path),
    }
}

/// The variables of a template (a URL when `url`, else a parameter value) with their positions.
pub fn parse(src: &str, url: bool) -> Result<Vec<(DynVar, Pos)>, String> {
    let mut out = Vec::new();
    let mut sample = String::new();
    for p in pieces(src, url)? {
        match p {
            Piece::Lit(l) => sample.push_str(l),
            Piece::Var(v) => {
                let pos = if url {
                    url_pos(&sample).map_err(|e| format!("{e} (at {v})"))?
                } else {
                    Pos::Value
                };
                sample.push('x');
                out.push((v, pos));
            }
        }
    }
    Ok(out)
}

/// The template with every variable replaced by `with(var)` (unencoded: for checking the shape).
pub fn sample(src: &str, with: impl Fn(&DynVar) -> &'static str) -> String {
    match pieces(src, true) {
        Ok(ps) => ps
            .iter()
            .map(|p| match p {
                Piece::Lit(l) => *l,
                Piece::Var(v) => with(v),
            })
            .collect(),
        Err(_) => src.to_string(),
    }
}

/// Whether `s` is one DNS label.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Checks `value` of `var` for `pos`; the message names the variable, never the value.
pub fn check_value(var: &DynVar, pos: Pos, value: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "{var} {why} ({} of an identity-provider URL)",
            pos.name()
        ))
    };
    match pos {
        Pos::Host => {
            let ok = match var {
                // A tenant may be dotted (tenant_pattern); each label must still be a DNS label.
                DynVar::Tenant => value.len() <= 253 && value.split('.').all(dns_label),
                _ => dns_label(value),
            };
            if !ok {
                return bad("must be a DNS label: letters, digits and '-' only");
            }
        }
        Pos::Path => {
            // The rule of path fields (RELIABILITY.md A11): read as a decoding server would,
            // no separator and no `.`/`..` piece in any form.
            if value.is_empty() {
                return bad("must not be empty");
            }
            if !crate::inject::path_param_ok(value) {
                return bad("must not contain '/' or '\\' or be '.' or '..' (in any encoding)");
            }
        }
        Pos::Query | Pos::Value => {}
    }
    if value.bytes().any(|b| b.is_ascii_control()) {
        return bad("must not contain control characters");
    }
    Ok(())
}

/// Renders a template: each variable's value (from `lookup`) checked and encoded for its
/// position. `Err` names the first missing or refused variable.
pub fn render<'v>(
    src: &str,
    url: bool,
    lookup: impl Fn(&DynVar) -> Option<&'v str>,
) -> Result<String, String> {
    let mut out = String::with_capacity(src.len() + 16);
    for p in pieces(src, url)? {
        match p {
            Piece::Lit(l) => out.push_str(l),
            Piece::Var(v) => {
                let pos = if url { url_pos(&out)? } else { Pos::Value };
                let value = lookup(&v).ok_or_else(|| match &v {
                    DynVar::Tenant => "X-Authsidecar-Tenant is required: an identity-provider URL uses {tenant}".to_string(),
                    DynVar::Context(n) => format!(
                        "X-Authsidecar-Context-{n} is required: the profile uses {{{{context.{n}}}}}"
                    ),
                    DynVar::UserField(n) => format!(
                        "the grant has no {{{{user_field.{n}}}}}: the end user must sign in again"
                    ),
                })?;
                check_value(&v, pos, value)?;
                match pos {
                    Pos::Host | Pos::Value => out.push_str(value),
                    Pos::Path | Pos::Query => out.push_str(&encode(value).to_string()),
                }
            }
        }
    }
    Ok(out)
}

/// Whether a template has any variable (a plain string renders as itself).
pub fn has_vars(src: &str) -> bool {
    src.contains('{')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(v: &DynVar) -> Option<&'static str> {
        match v {
            DynVar::Tenant => Some("contoso"),
            DynVar::Context(n) if n == "region" => Some("eu west"),
            DynVar::Context(n) if n == "evil" => Some("../x"),
            DynVar::UserField(n) if n == "org" => Some("a?b#c"),
            _ => None,
        }
    }

    #[test]
    fn positions_are_found() {
        let uses = parse(
            "https://{tenant}.idp.example/{{context.region}}/t?org={{user_field.org}}",
            true,
        )
        .unwrap();
        assert_eq!(
            uses,
            vec![
                (DynVar::Tenant, Pos::Host),
                (DynVar::Context("region".into()), Pos::Path),
                (DynVar::UserField("org".into()), Pos::Query),
            ]
        );
        assert!(parse("https://idp.example:{{context.p}}/", true).is_err());
        assert!(parse("{{context.p}}://idp.example/", true).is_err());
        assert!(parse("https://idp.example/{{access_token}}", true).is_err());
        assert!(parse("https://idp.example/{other}", true).is_err());
    }

    #[test]
    fn values_are_encoded_for_their_position() {
        let u = render(
            "https://{tenant}.idp.example/{{context.region}}/t?org={{user_field.org}}",
            true,
            vals,
        )
        .unwrap();
        assert_eq!(u, "https://contoso.idp.example/eu%20west/t?org=a%3Fb%23c");
        assert_eq!(
            render("{{context.region}} x", false, vals).unwrap(),
            "eu west x"
        );
        // A parameter value keeps other braces as text (a JSON `claims` parameter).
        assert_eq!(
            render(r#"{"id_token":{"acr":"{{context.region}}"}}"#, false, vals).unwrap(),
            r#"{"id_token":{"acr":"eu west"}}"#
        );
        assert!(parse("{{access_token}}", false).is_err());
    }

    #[test]
    fn hostile_values_are_refused() {
        for (pos, v) in [
            (Pos::Path, "../x"),
            (Pos::Path, "a/b"),
            (Pos::Path, "%2e%2e"),
            (Pos::Path, ".."),
            (Pos::Path, "a%2Fb"),
            (Pos::Path, "a\\b"),
            (Pos::Host, "a?b"),
            (Pos::Host, "a#b"),
            (Pos::Host, "a.b"),
            (Pos::Host, "evil.com/"),
        ] {
            let e = check_value(&DynVar::Context("x".into()), pos, v).unwrap_err();
            assert!(e.contains("{{context.x}}"), "{e}");
            assert!(v == ".." || !e.contains(v), "{e}");
        }
        assert!(check_value(&DynVar::Context("x".into()), Pos::Path, "a?b#c").is_ok());
        assert!(check_value(&DynVar::Tenant, Pos::Host, "contoso.eu").is_ok());
        assert!(render("https://idp.example/{{context.evil}}", true, vals).is_err());
        let missing = render("https://idp.example/{{context.nope}}", true, vals).unwrap_err();
        assert!(missing.contains("X-Authsidecar-Context-nope"), "{missing}");
    }
}
