//! Credentials per profile type: the values behind template variables that a profile holds itself.
//!
//! For `basic` and `api_key` these come from the config and never change while it is loaded, so field
//! values that use only them are rendered once, at load (see `inject::Plan`).

use crate::config::ProfileKind;
use crate::http_util::{basic_credentials, BasicEncoding};
use crate::secret::{ApiKey, BasicCredentials, Password, Username};
use crate::template::{Template, Var};

/// The static variable values of one profile.
#[derive(Debug, Default)]
pub struct Credential {
    api_key: Option<ApiKey>,
    username: Option<Username>,
    password: Option<Password>,
    /// base64(username ":" password), RFC 7617.
    basic: Option<BasicCredentials>,
    /// OAuth client id (not a secret).
    client_id: Option<String>,
}

impl Credential {
    pub fn from_kind(kind: &ProfileKind) -> Credential {
        match kind {
            // Per-user credentials come with each request's grant (see `inject::Inputs`).
            ProfileKind::None
            | ProfileKind::UserBasic
            | ProfileKind::UserApiKey
            | ProfileKind::Sign(_) => Credential::default(),
            ProfileKind::OAuth(o) => Credential {
                client_id: Some(o.client_id.clone()),
                ..Credential::default()
            },
            ProfileKind::ApiKey { key } => Credential {
                api_key: Some(key.clone()),
                ..Credential::default()
            },
            ProfileKind::Basic { username, password } => Credential {
                username: Some(username.clone()),
                password: Some(password.clone()),
                basic: Some(BasicCredentials::new(basic_credentials(
                    username.expose(),
                    password.expose(),
                    BasicEncoding::Plain,
                ))),
                ..Credential::default()
            },
        }
    }

    /// The value of a credential variable, if this profile holds it.
    pub fn get(&self, var: &Var) -> Option<&str> {
        match var {
            Var::ApiKey => self.api_key.as_ref().map(ApiKey::expose),
            Var::Username => self.username.as_ref().map(Username::expose),
            Var::Password => self.password.as_ref().map(Password::expose),
            Var::Basic => self.basic.as_ref().map(BasicCredentials::expose),
            Var::ClientId => self.client_id.as_deref(),
            _ => None,
        }
    }
}

/// Renders a template that uses only the profile's own credential variables; `None` if it needs
/// anything from the request.
pub fn render_static(t: &Template, kind: &ProfileKind) -> Option<String> {
    let cred = Credential::from_kind(kind);
    t.render(|v| cred.get(v)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_is_base64_of_user_colon_password() {
        let c = Credential::from_kind(&ProfileKind::Basic {
            username: Username::new("Aladdin"),
            password: Password::new("open sesame"),
        });
        assert_eq!(c.get(&Var::Basic), Some("QWxhZGRpbjpvcGVuIHNlc2FtZQ=="));
        assert_eq!(c.get(&Var::ApiKey), None);
    }

    #[test]
    fn static_rendering_only_when_nothing_comes_from_the_request() {
        let kind = ProfileKind::ApiKey {
            key: ApiKey::new("k"),
        };
        let t = Template::parse("Key {{api_key}}").unwrap();
        assert_eq!(render_static(&t, &kind).as_deref(), Some("Key k"));
        let t = Template::parse("{{api_key}}-{{user}}").unwrap();
        assert_eq!(render_static(&t, &kind), None);
    }
}
