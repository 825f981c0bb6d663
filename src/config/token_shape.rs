//! Custom token requests and responses of an OAuth profile (`token_request`, `token_response`):
//! for identity providers that log in with a JSON body, answer the token at an odd place, give
//! an expiry time instead of a lifetime, or name their token type something other than Bearer.
//!
//! These are the typed, validated shapes; `oauth::custom` sends and reads them.

use http::HeaderName;

use crate::template::{Template, TemplateError};

/// How the body of a custom token request is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `application/x-www-form-urlencoded` (the default).
    Form,
    /// `application/json`.
    Json,
}

/// A variable of a `token_request` template.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReqVar {
    ClientId,
    ClientSecret,
    Tenant,
    /// The RFC 6749 `grant_type` of the request at hand (`client_credentials`, `password`,
    /// `authorization_code`, `refresh_token`), for a provider that wants it where the profile says.
    GrantType,
    /// `oauth2_password`: the service account's, or what the end user entered.
    Username,
    Password,
    /// Refresh requests only.
    RefreshToken,
    /// `oauth2_authorization_code`, the code's redemption only.
    Code,
    RedirectUri,
    CodeVerifier,
}

/// The variable names, for error messages.
pub const REQ_VARS: &str = "client_id, client_secret, tenant, grant_type, username, password, refresh_token, code, redirect_uri, code_verifier";

impl ReqVar {
    /// A variable that belongs to one kind of request: a member using it is left out of the other
    /// kinds (a refresh sends what uses `{{refresh_token}}`, a code redemption what uses `{{code}}`).
    pub fn request_bound(&self) -> bool {
        matches!(
            self,
            ReqVar::RefreshToken
                | ReqVar::Code
                | ReqVar::RedirectUri
                | ReqVar::CodeVerifier
                | ReqVar::Username
                | ReqVar::Password
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            ReqVar::ClientId => "client_id",
            ReqVar::ClientSecret => "client_secret",
            ReqVar::Tenant => "tenant",
            ReqVar::GrantType => "grant_type",
            ReqVar::Username => "username",
            ReqVar::Password => "password",
            ReqVar::RefreshToken => "refresh_token",
            ReqVar::Code => "code",
            ReqVar::RedirectUri => "redirect_uri",
            ReqVar::CodeVerifier => "code_verifier",
        }
    }
}

impl std::fmt::Display for ReqVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses a `token_request` template.
pub fn parse_req_template(src: &str) -> Result<Template<ReqVar>, TemplateError> {
    Template::parse_with(src, |name| {
        Ok(match name {
            "client_id" => ReqVar::ClientId,
            "client_secret" => ReqVar::ClientSecret,
            "tenant" => ReqVar::Tenant,
            "grant_type" => ReqVar::GrantType,
            "username" => ReqVar::Username,
            "password" => ReqVar::Password,
            "refresh_token" => ReqVar::RefreshToken,
            "code" => ReqVar::Code,
            "redirect_uri" => ReqVar::RedirectUri,
            "code_verifier" => ReqVar::CodeVerifier,
            other => return Err(TemplateError::UnknownOf(other.to_string(), REQ_VARS)),
        })
    })
}

/// One value of a custom request body: a template string, a fixed JSON value (number, boolean),
/// or (JSON only) an object or array of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyValue {
    Text(Template<ReqVar>),
    /// A number or boolean, written as JSON (as text in a form).
    Fixed(String),
    Object(Vec<(String, BodyValue)>),
    Array(Vec<BodyValue>),
}

impl BodyValue {
    /// Every variable used, depth first.
    pub fn vars(&self, out: &mut Vec<ReqVar>) {
        match self {
            BodyValue::Text(t) => out.extend(t.vars().cloned()),
            BodyValue::Fixed(_) => {}
            BodyValue::Object(m) => m.iter().for_each(|(_, v)| v.vars(out)),
            BodyValue::Array(a) => a.iter().for_each(|v| v.vars(out)),
        }
    }
}

/// `token_request`: the whole request, written by the profile. Nothing is added to the body
/// (no `grant_type`, no client authentication).
#[derive(Clone, Debug)]
pub struct TokenRequestShape {
    pub encoding: Encoding,
    /// Header fields, in order; the values are templates.
    pub headers: Vec<(HeaderName, Template<ReqVar>)>,
    pub body: Vec<(String, BodyValue)>,
}

impl TokenRequestShape {
    /// Every variable the request uses.
    pub fn vars(&self) -> Vec<ReqVar> {
        let mut out: Vec<ReqVar> = self
            .headers
            .iter()
            .flat_map(|(_, t)| t.vars().cloned())
            .collect();
        for (_, v) in &self.body {
            v.vars(&mut out);
        }
        out
    }

    pub fn uses(&self, var: &ReqVar) -> bool {
        self.vars().contains(var)
    }

    /// Feeds everything that decides the request into `h` (the profile's token fingerprint).
    pub fn fingerprint(&self, h: &mut impl std::hash::Hasher) {
        use std::hash::Hash;
        fn template(t: &Template<ReqVar>, h: &mut impl std::hash::Hasher) {
            for piece in t.pieces() {
                match piece {
                    crate::template::Piece::Lit(l) => ("lit", l).hash(h),
                    crate::template::Piece::Var(x) => ("var", x).hash(h),
                }
            }
        }
        fn value(v: &BodyValue, h: &mut impl std::hash::Hasher) {
            match v {
                BodyValue::Text(t) => template(t, h),
                BodyValue::Fixed(s) => ("fixed", s).hash(h),
                BodyValue::Object(m) => {
                    ("object", m.len()).hash(h);
                    for (k, x) in m {
                        k.hash(h);
                        value(x, h);
                    }
                }
                BodyValue::Array(a) => {
                    ("array", a.len()).hash(h);
                    a.iter().for_each(|x| value(x, h));
                }
            }
        }
        self.encoding.hash(h);
        for (n, t) in &self.headers {
            n.as_str().hash(h);
            template(t, h);
        }
        for (k, v) in &self.body {
            k.hash(h);
            value(v, h);
        }
    }
}

/// How the expiry is given.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expiry {
    /// Seconds from now (a number or numeric string).
    In(String),
    /// A point in time: RFC 3339 text, or Unix seconds, or Unix milliseconds.
    At(String),
}

/// `token_response`: where the members are (JSON Pointers, RFC 6901), and the token type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenResponseShape {
    pub access_token: String,
    pub refresh_token: String,
    pub expiry: Expiry,
    /// The type written before the token by the default field, and `{{token_type}}`; the
    /// response's own `token_type` member is then not checked.
    pub token_type: Option<String>,
}

pub const DEFAULT_ACCESS_TOKEN_POINTER: &str = "/access_token";
pub const DEFAULT_REFRESH_TOKEN_POINTER: &str = "/refresh_token";
pub const DEFAULT_EXPIRES_IN_POINTER: &str = "/expires_in";
