//! The start page's form: the tenant (when the request named none), the credentials of a per-user
//! basic, api_key or password profile, and the profile's user fields.

use http::{Response, StatusCode};

use super::{escape, page, Body};
use crate::config::UserField;
use crate::proxy::Entry;

/// Longest credential accepted from the form.
const MAX_CREDENTIAL_CHARS: usize = 1024;

pub(super) struct Form<'a> {
    pub title: String,
    pub ask_tenant: bool,
    /// The profile's `tenant_pattern` (one DNS label when `None`).
    pub tenant_pattern: Option<&'a regex::Regex>,
    /// Which credentials the user enters here (`Code`: none, the IdP asks).
    pub entry: Entry,
    pub fields: &'a [UserField],
}

/// What the user entered.
pub(super) struct Answers {
    pub tenant: Option<String>,
    /// `(key, value)` of the user fields.
    pub fields: Vec<(String, String)>,
    pub username: String,
    pub password: String,
    pub api_key: String,
}

fn one(answers: &[(String, String)], name: &str) -> String {
    answers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// A value typed by the user: present, not too long, no control characters. The message names the
/// field, never the value.
fn text(label: &str, v: &str, max: usize) -> Result<(), String> {
    if v.is_empty() {
        return Err(format!("{label}: required."));
    }
    if v.chars().count() > max {
        return Err(format!("{label}: at most {max} characters."));
    }
    if v.chars().any(char::is_control) {
        return Err(format!(
            "{label}: must not contain line breaks or other control characters."
        ));
    }
    Ok(())
}

impl Form<'_> {
    /// Whether the page has anything to ask (otherwise it goes straight to the IdP).
    pub fn is_empty(&self) -> bool {
        !self.ask_tenant
            && self.fields.is_empty()
            && matches!(self.entry, Entry::Code | Entry::OAuth1)
    }

    pub fn check(&self, answers: &[(String, String)]) -> Result<Answers, String> {
        let tenant = if self.ask_tenant {
            match crate::proxy::tenant_for(
                one(answers, "tenant").trim().as_bytes(),
                self.tenant_pattern,
            ) {
                Ok(t) => Some(t),
                Err(_) if self.tenant_pattern.is_some() => {
                    return Err("Tenant: not a tenant name this sign-in accepts.".into())
                }
                Err(_) => {
                    return Err("Tenant: expected one DNS label (letters, digits and '-', up to 63, not starting or ending with '-').".into())
                }
            }
        } else {
            None
        };
        let mut out = Answers {
            tenant,
            fields: Vec::with_capacity(self.fields.len()),
            username: String::new(),
            password: String::new(),
            api_key: String::new(),
        };
        match self.entry {
            Entry::Basic | Entry::Password => {
                out.username = one(answers, "username");
                out.password = one(answers, "password");
                text("Username", &out.username, MAX_CREDENTIAL_CHARS)?;
                if self.entry == Entry::Basic && out.username.contains(':') {
                    return Err("Username: must not contain ':'.".into());
                }
                text("Password", &out.password, MAX_CREDENTIAL_CHARS)?;
            }
            Entry::ApiKey => {
                out.api_key = one(answers, "api_key");
                text("API key", &out.api_key, MAX_CREDENTIAL_CHARS)?;
            }
            Entry::Code | Entry::OAuth1 | Entry::Machine => {}
        }
        for f in self.fields {
            let v = one(answers, &format!("f.{}", f.key));
            text(&f.label, &v, f.max_length)?;
            if f.pattern.as_ref().is_some_and(|re| !re.is_match(&v)) {
                return Err(format!("{}: does not have the expected form.", f.label));
            }
            out.fields.push((f.key.clone(), v));
        }
        Ok(out)
    }

    /// The form as first shown.
    pub fn page(&self) -> Response<Body> {
        page(StatusCode::OK, &self.title, "", Some(&self.html(&[])), None)
    }

    /// The form itself. Only non-secret answers are filled in again after an error.
    pub fn html(&self, answers: &[(String, String)]) -> String {
        let mut inputs = String::new();
        let mut input = |label: &str, name: &str, secret: bool, max: usize, auto: &str| {
            let value = if secret {
                String::new()
            } else {
                escape(&one(answers, name))
            };
            let kind = if secret { "password" } else { "text" };
            inputs.push_str(&format!(
                "<p><label>{} <input type=\"{kind}\" name=\"{}\" required maxlength=\"{max}\" autocomplete=\"{auto}\" value=\"{value}\"></label></p>",
                escape(label),
                escape(name),
            ));
        };
        if self.ask_tenant {
            input("Tenant", "tenant", false, 63, "organization");
        }
        match self.entry {
            Entry::Basic | Entry::Password => {
                input(
                    "Username",
                    "username",
                    false,
                    MAX_CREDENTIAL_CHARS,
                    "username",
                );
                input(
                    "Password",
                    "password",
                    true,
                    MAX_CREDENTIAL_CHARS,
                    "current-password",
                );
            }
            Entry::ApiKey => input("API key", "api_key", true, MAX_CREDENTIAL_CHARS, "off"),
            Entry::Code | Entry::OAuth1 | Entry::Machine => {}
        }
        for f in self.fields {
            input(
                &f.label,
                &format!("f.{}", f.key),
                f.secret,
                f.max_length,
                "off",
            );
        }
        format!(
            "<form method=\"post\">{inputs}<p><button type=\"submit\">Continue</button></p></form>"
        )
    }
}
