//! `{{variable}}` templates for field values (DESIGN.md §3).
//!
//! Templates are parsed once, at config load; a request only renders them. Rendering is one pass: a
//! value that itself contains `{{…}}` (or `${…}`, or `{tenant}`) is inserted literally, never expanded
//! again (RELIABILITY.md A9).

use std::fmt;

use thiserror::Error;

/// A template variable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Var {
    AccessToken,
    TokenType,
    IdToken,
    ApiKey,
    Username,
    Password,
    Basic,
    ClientId,
    Tenant,
    User,
    /// `context.<name>`: from the `X-Authsidecar-Context-<name>` request header (name lowercased).
    Context(String),
    /// `user_field.<key>`: a value the end user entered on the authorization page.
    UserField(String),
    /// `token.<name>`: an extra member of the token response.
    Token(String),
    /// `id_claims.<name>`: a claim of the end user's validated OpenID Connect `id_token`, kept
    /// with their grant.
    IdClaim(String),
    /// `grant.<name>`: the same members, named as kept with the grant (e.g. `grant.instance_url`);
    /// also usable at the start of a route's `upstream`.
    Grant(String),
    /// `hmac` profiles: the request's signature (a field using it is placed after signing).
    Signature,
    /// `hmac` profiles: the signed request's time and nonce, one value per request (the same as
    /// in the string to sign).
    Timestamp,
    TimestampMs,
    Date,
    Nonce,
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Var::AccessToken => f.write_str("access_token"),
            Var::TokenType => f.write_str("token_type"),
            Var::IdToken => f.write_str("id_token"),
            Var::ApiKey => f.write_str("api_key"),
            Var::Username => f.write_str("username"),
            Var::Password => f.write_str("password"),
            Var::Basic => f.write_str("basic"),
            Var::ClientId => f.write_str("client_id"),
            Var::Tenant => f.write_str("tenant"),
            Var::User => f.write_str("user"),
            Var::Context(n) => write!(f, "context.{n}"),
            Var::UserField(n) => write!(f, "user_field.{n}"),
            Var::Token(n) => write!(f, "token.{n}"),
            Var::IdClaim(n) => write!(f, "id_claims.{n}"),
            Var::Grant(n) => write!(f, "grant.{n}"),
            Var::Signature => f.write_str("signature"),
            Var::Timestamp => f.write_str("timestamp"),
            Var::TimestampMs => f.write_str("timestamp_ms"),
            Var::Date => f.write_str("date"),
            Var::Nonce => f.write_str("nonce"),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("unclosed \"{{{{\" at byte {0}; expected {{{{name}}}}")]
    Unclosed(usize),
    #[error("empty variable at byte {0}")]
    Empty(usize),
    #[error("unknown variable \"{0}\"; expected one of access_token, token_type, id_token, api_key, username, password, basic, client_id, tenant, user, signature, timestamp, timestamp_ms, date, nonce, context.<name>, user_field.<key>, token.<name>, id_claims.<name>, grant.<name>")]
    Unknown(String),
    #[error(
        "variable \"{0}\" has an invalid name after the dot; expected letters, digits, '-' or '_'"
    )]
    BadName(String),
    /// An unknown variable in a template with its own variables ([`Template::parse_with`]).
    #[error("unknown variable \"{0}\"; expected one of {1}")]
    UnknownOf(String, &'static str),
}

#[derive(Clone, PartialEq, Eq)]
enum Part<V> {
    Lit(String),
    Var(V),
}

/// A literal part may hold a secret that a `${VAR}` reference put there: its length only.
impl<V: fmt::Debug> fmt::Debug for Part<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Lit(s) => write!(f, "Lit([{} bytes])", s.len()),
            Part::Var(v) => write!(f, "Var({v:?})"),
        }
    }
}

/// One piece of a parsed template, in order: literal text or a variable.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a, V> {
    Lit(&'a str),
    Var(&'a V),
}

/// Like [`Part`]'s: a literal piece shows its length only.
impl<V: fmt::Debug> fmt::Debug for Piece<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Piece::Lit(s) => write!(f, "Lit([{} bytes])", s.len()),
            Piece::Var(v) => write!(f, "Var({v:?})"),
        }
    }
}

/// A parsed template. The variables are [`Var`] (field values); a module with its own variables
/// (the HMAC `string_to_sign`) parses with [`Template::parse_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template<V = Var> {
    parts: Vec<Part<V>>,
}

fn valid_suffix(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_var(raw: &str) -> Result<Var, TemplateError> {
    let name = raw.trim();
    Ok(match name {
        "access_token" => Var::AccessToken,
        "token_type" => Var::TokenType,
        "id_token" => Var::IdToken,
        "api_key" => Var::ApiKey,
        "username" => Var::Username,
        "password" => Var::Password,
        "basic" => Var::Basic,
        "client_id" => Var::ClientId,
        "tenant" => Var::Tenant,
        "user" => Var::User,
        "signature" => Var::Signature,
        "timestamp" => Var::Timestamp,
        "timestamp_ms" => Var::TimestampMs,
        "date" => Var::Date,
        "nonce" => Var::Nonce,
        _ => {
            let (kind, rest) = name
                .split_once('.')
                .ok_or_else(|| TemplateError::Unknown(name.to_string()))?;
            let make: fn(String) -> Var = match kind {
                "context" => |s| Var::Context(s.to_ascii_lowercase()),
                "user_field" => Var::UserField,
                "token" => Var::Token,
                "id_claims" => Var::IdClaim,
                "grant" => Var::Grant,
                _ => return Err(TemplateError::Unknown(name.to_string())),
            };
            if !valid_suffix(rest) {
                return Err(TemplateError::BadName(name.to_string()));
            }
            make(rest.to_string())
        }
    })
}

impl Template<Var> {
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        Template::parse_with(src, parse_var)
    }
}

impl<V> Template<V> {
    /// Parses `src` with `var` naming the variables (it gets the trimmed text between the braces).
    pub fn parse_with<F>(src: &str, var: F) -> Result<Template<V>, TemplateError>
    where
        F: Fn(&str) -> Result<V, TemplateError>,
    {
        let mut parts = Vec::new();
        let mut rest = src;
        let mut offset = 0;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Lit(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or(TemplateError::Unclosed(offset + start))?;
            let inner = &after[..end];
            if inner.trim().is_empty() {
                return Err(TemplateError::Empty(offset + start));
            }
            if inner.contains("{{") {
                return Err(TemplateError::Unclosed(offset + start));
            }
            parts.push(Part::Var(var(inner.trim())?));
            let consumed = start + 2 + end + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The literal text and variables in order (for a renderer that is not a string).
    pub fn pieces(&self) -> impl Iterator<Item = Piece<'_, V>> {
        self.parts.iter().map(|p| match p {
            Part::Lit(s) => Piece::Lit(s),
            Part::Var(v) => Piece::Var(v),
        })
    }

    /// The variables this template uses, in order of appearance.
    pub fn vars(&self) -> impl Iterator<Item = &V> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Lit(_) => None,
        })
    }

    /// Renders into `out` (appending). `lookup` returns the value of a variable, or `None` when the
    /// request lacks it; the first missing variable is returned as the error.
    pub fn render_into<'v, F>(&self, out: &mut String, mut lookup: F) -> Result<(), &V>
    where
        F: FnMut(&V) -> Option<&'v str>,
    {
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) => out.push_str(lookup(v).ok_or(v)?),
            }
        }
        Ok(())
    }

    /// Like [`Template::render_into`], into a new string.
    pub fn render<'v, F>(&self, mut lookup: F) -> Result<String, &V>
    where
        F: FnMut(&V) -> Option<&'v str>,
    {
        // Exactly sized: the string is not grown on the way (and becomes a header value's
        // buffer as it is).
        let mut len = 0;
        for part in &self.parts {
            len += match part {
                Part::Lit(s) => s.len(),
                Part::Var(v) => lookup(v).ok_or(v)?.len(),
            };
        }
        let mut out = String::with_capacity(len);
        self.render_into(&mut out, lookup)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(v: &Var) -> Option<&'static str> {
        match v {
            Var::AccessToken => Some("tok"),
            Var::Context(n) if n == "org" => Some("{{client_secret}} ${HOME} {tenant}"),
            _ => None,
        }
    }

    #[test]
    fn parses_literals_and_vars() {
        let t = Template::parse("Bearer {{ access_token }}!").unwrap();
        assert_eq!(t.render(vals).unwrap(), "Bearer tok!");
        assert_eq!(t.vars().collect::<Vec<_>>(), vec![&Var::AccessToken]);
    }

    #[test]
    fn a_rendered_string_is_exactly_sized() {
        let t = Template::parse("Bearer {{ access_token }} for {{context.org}}").unwrap();
        let s = t.render(vals).unwrap();
        assert_eq!(s, "Bearer tok for {{client_secret}} ${HOME} {tenant}");
        assert_eq!(s.capacity(), s.len());
        let missing = Template::parse("{{access_token}} {{user}}").unwrap();
        assert_eq!(missing.render(vals), Err(&Var::User));
    }

    #[test]
    fn expansion_is_a_single_pass() {
        let t = Template::parse("x={{context.ORG}}").unwrap();
        assert_eq!(
            t.render(vals).unwrap(),
            "x={{client_secret}} ${HOME} {tenant}"
        );
    }

    #[test]
    fn missing_variable_is_reported() {
        let t = Template::parse("{{user}}").unwrap();
        assert_eq!(t.render(vals).unwrap_err(), &Var::User);
    }

    #[test]
    fn bad_templates_are_rejected() {
        assert_eq!(
            Template::parse("a {{access_token"),
            Err(TemplateError::Unclosed(2))
        );
        assert_eq!(Template::parse("{{ }}"), Err(TemplateError::Empty(0)));
        assert!(matches!(
            Template::parse("{{secret}}"),
            Err(TemplateError::Unknown(_))
        ));
        assert!(matches!(
            Template::parse("{{context.}}"),
            Err(TemplateError::BadName(_))
        ));
        assert!(matches!(
            Template::parse("{{context.a b}}"),
            Err(TemplateError::BadName(_))
        ));
        assert!(matches!(
            Template::parse("{{a{{b}}"),
            Err(TemplateError::Unclosed(0))
        ));
    }

    #[test]
    fn a_module_can_parse_with_its_own_variables() {
        let own = |name: &str| match name {
            "method" => Ok(1u8),
            other => Err(TemplateError::UnknownOf(other.to_string(), "method")),
        };
        let t = Template::parse_with("{{ method }}\n{{method}}", own).unwrap();
        let pieces: Vec<_> = t.pieces().collect();
        assert_eq!(pieces, [Piece::Var(&1), Piece::Lit("\n"), Piece::Var(&1)]);
        assert_eq!(t.render(|_| Some("GET")).unwrap(), "GET\nGET");
        assert_eq!(
            Template::parse_with("{{access_token}}", own)
                .unwrap_err()
                .to_string(),
            "unknown variable \"access_token\"; expected one of method"
        );
    }

    #[test]
    fn plain_text_and_single_braces_are_literal() {
        let t = Template::parse("{tenant} } {").unwrap();
        assert_eq!(t.render(vals).unwrap(), "{tenant} } {");
        assert_eq!(t.vars().count(), 0);
    }
}
