//! Secret values, one type per role (after oauth2's `new_secret_type!`).
//!
//! Every role is its own newtype, so a client secret cannot be passed where an access token is
//! expected, and none of them prints its value: `Debug` shows `Role([redacted])`, there is no
//! `Display`, no `Serialize` and no derived equality. Roles that are compared with a value from
//! outside (the admin token; tokens compared across replicas) have a `ct_eq` that runs in constant
//! time through [`ct_eq`], the one place secrets are compared. The value is read through one
//! explicitly named method, `expose`, so every place that hands a secret to a sink (an upstream
//! request, an IdP request, the encrypted store) is easy to find with grep.
//!
//! | role | where it comes from |
//! | --- | --- |
//! | [`ClientSecret`] | `client_secret` of an OAuth profile or of `[mock_provider]` |
//! | [`Username`], [`Password`] | `basic` and `oauth2_password` profiles, connectors, the mock's user |
//! | [`ApiKey`] | `api_key` profiles |
//! | [`BasicCredentials`] | base64 of `username:password` (RFC 7617), rendered once |
//! | [`AdminToken`] | `[admin] token` |
//! | [`StoreKey`] | `[store] key` and `previous_key` (32 bytes, AES-256-GCM) |
//! | [`StoreUrl`] | `[store] url` and `cluster` (may hold the Redis password) |
//! | [`AccessToken`], [`RefreshToken`], [`IdToken`] | an IdP's token response |
//! | [`PkceVerifier`] | an authorization in progress (RFC 7636) |
//! | [`ConsumerSecret`], [`OAuth1Token`], [`OAuth1TokenSecret`] | `oauth1` profiles |
//! | [`OAuth1RequestSecret`] | a three-legged OAuth 1.0a sign-in in progress (the request token's secret) |
//! | [`EnteredValue`] | what an end user entered on the start page: user fields, their own credentials |
//! | [`ClientAssertionKey`] | `client_assertion_key` (`private_key_jwt`), or the client secret as an HS256 key (`client_secret_jwt`) |
//! | [`BearerAssertionKey`] | `assertion_key` or `credentials_file` of an `oauth2_jwt_bearer` profile |
//!
//! The two JWT signing keys hold a ready [`crate::sign::jwt::Signer`] (parsed once, at load): their
//! `Debug` shows the role, the algorithm and the `kid` (public), never key material.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serializer};
use subtle::ConstantTimeEq;

/// Constant-time equality of two byte strings: the one place secrets are compared. Lengths may
/// differ; the answer is then false without revealing where the contents differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// What every textual secret role offers to code that handles secrets of any role (redaction
/// lists, the store's record encoding).
pub trait SecretText {
    /// The value. Security: see the role's `expose`.
    fn expose_text(&self) -> &str;
}

/// Deserializes a secret from config text through a visitor that never quotes the value in its
/// error.
fn deserialize_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Arc<str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Arc<str>, E> {
            Ok(v.into())
        }
        // An all-digit value (a PIN, or an environment override, which the loader turns into a
        // number) is taken as its decimal text.
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Arc<str>, E> {
            Ok(v.to_string().into())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Arc<str>, E> {
            Ok(v.to_string().into())
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Arc<str>, E> {
            Err(E::custom(
                "invalid type: a number, expected a string (quote it)",
            ))
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Arc<str>, E> {
            Err(E::custom("invalid type: a boolean, expected a string"))
        }
    }
    deserializer.deserialize_str(V)
}

macro_rules! secret_type {
    (@base $(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(value: impl Into<Arc<str>>) -> Self {
                $name(value.into())
            }

            /// Returns the secret value.
            ///
            /// Security: call this only where the value goes to the party it is meant for (the
            /// upstream, the identity provider, the encrypted store). Never format the result into
            /// a message.
            pub fn expose(&self) -> &str {
                &self.0
            }

            /// Length in bytes: safe to show.
            pub fn len(&self) -> usize {
                self.0.len()
            }

            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s.into())
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.into())
            }
        }

        impl SecretText for $name {
            fn expose_text(&self) -> &str {
                &self.0
            }
        }
    };
    ($(#[$doc:meta])* $name:ident $(, $extra:ident)*) => {
        secret_type!(@base $(#[$doc])* $name);
        $(secret_type!(@$extra $name);)*
    };
    (@config $name:ident) => {
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserialize_text(deserializer).map($name)
            }
        }
    };
    (@compare $name:ident) => {
        impl $name {
            /// Constant-time comparison with a candidate value.
            pub fn ct_eq(&self, candidate: &[u8]) -> bool {
                ct_eq(self.0.as_bytes(), candidate)
            }
        }
    };
}

secret_type!(
    /// An OAuth client's secret (RFC 6749 §2.3.1).
    ClientSecret,
    config
);
secret_type!(
    /// A username that goes with a [`Password`] (basic auth, the password grant, a connector).
    Username,
    config
);
secret_type!(
    /// A password: a basic-auth profile's, a service account's (password grant), a connector's.
    Password,
    config
);
secret_type!(
    /// A static API key (`api_key` profiles).
    ApiKey,
    config
);
secret_type!(
    /// `base64(username ":" password)` for `Authorization: Basic` (RFC 7617).
    BasicCredentials
);
secret_type!(
    /// The admin listener's bearer token; compared in constant time.
    AdminToken,
    config,
    compare
);
secret_type!(
    /// A Redis URL of the shared store: `redis://[user:password@]host…` may hold a password.
    StoreUrl,
    config
);
secret_type!(
    /// An access token an identity provider issued.
    AccessToken,
    compare
);
secret_type!(
    /// A refresh token; never injected, only sent back to the identity provider.
    RefreshToken,
    compare
);
secret_type!(
    /// An OpenID Connect ID token.
    IdToken
);
secret_type!(
    /// A PKCE code verifier (RFC 7636), kept with an authorization in progress.
    PkceVerifier
);
secret_type!(
    /// A value an end user entered on the start page: a user field (secret or not) or their own
    /// username, password or API key. Kept with their grant, encrypted like the tokens.
    EnteredValue
);

macro_rules! signing_key_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(Arc<crate::sign::jwt::Signer>);

        impl $name {
            pub fn new(signer: crate::sign::jwt::Signer) -> Self {
                $name(Arc::new(signer))
            }

            /// The signer.
            ///
            /// Security: for signing an assertion that goes to the identity provider only.
            pub fn expose(&self) -> &crate::sign::jwt::Signer {
                &self.0
            }

            /// The JWS `alg` (public).
            pub fn alg(&self) -> &'static str {
                self.0.alg().as_str()
            }

            /// The header's `kid` (public: a thumbprint, a certificate hash or a configured name).
            pub fn kid(&self) -> Option<&str> {
                self.0.kid()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    concat!(stringify!($name), "({} kid={:?} [redacted])"),
                    self.alg(),
                    self.kid()
                )
            }
        }
    };
}

signing_key_type!(
    /// Signs RFC 7523 §2.2 client assertions: a private key (`private_key_jwt`) or the client
    /// secret (`client_secret_jwt`, HS256).
    ClientAssertionKey
);
signing_key_type!(
    /// Signs RFC 7523 §2.1 JWT bearer grant assertions (`assertion_key`, `credentials_file`).
    BearerAssertionKey
);
secret_type!(
    /// An AWS secret access key (`aws_sigv4` profiles).
    AwsSecretAccessKey,
    config
);
secret_type!(
    /// An AWS session token of temporary credentials (`aws_sigv4`, sent as `X-Amz-Security-Token`).
    AwsSessionToken,
    config
);
secret_type!(
    /// The shared key of an `hmac` profile's request signature.
    HmacSecret,
    config
);
secret_type!(
    /// A webhook's signing secret (`whsec_` + base64, Standard Webhooks).
    WebhookSecret,
    config
);
secret_type!(
    /// An OAuth 1.0a consumer secret (`oauth1` profiles with an HMAC or PLAINTEXT method).
    ConsumerSecret,
    config
);
secret_type!(
    /// An OAuth 1.0a token (`oauth_token`: NetSuite's token id, a two-legged access token).
    OAuth1Token,
    config
);
secret_type!(
    /// An OAuth 1.0a token secret: half of the signing key of the HMAC methods.
    OAuth1TokenSecret,
    config
);
secret_type!(
    /// The secret of an OAuth 1.0a request token (temporary credentials, RFC 5849 §2.1): kept
    /// server-side with the sign-in in progress, single use, never sent to the browser.
    OAuth1RequestSecret
);

/// The store's AES-256-GCM key: 32 bytes, written in the config as standard base64 (`authsidecar
/// keygen` prints one).
#[derive(Clone)]
pub struct StoreKey([u8; 32]);

impl StoreKey {
    pub fn new(bytes: [u8; 32]) -> StoreKey {
        StoreKey(bytes)
    }

    /// Parses the config's base64 text. The error gives the length at most, never the text.
    pub fn from_base64(text: &str) -> Result<StoreKey, String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| format!("not base64 (len {}); expected 32 random bytes in base64, as `authsidecar keygen` prints", text.len()))?;
        bytes
            .try_into()
            .map(StoreKey)
            .map_err(|b: Vec<u8>| format!("{} bytes; expected 32", b.len()))
    }

    /// Returns the key bytes.
    ///
    /// Security: only for the cipher that seals and opens store records.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey([redacted])")
    }
}

impl<'de> Deserialize<'de> for StoreKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = deserialize_text(deserializer)?;
        StoreKey::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

/// `serialize_with` helpers for the records the encrypted store keeps (an authorization in
/// progress): the roles have no `Serialize` of their own, so a secret is written out only where a
/// field says so.
pub mod store_form {
    use serde::ser::SerializeSeq;

    use super::*;

    pub fn option<S: Serializer, T: SecretText>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(v.expose_text()),
            None => s.serialize_none(),
        }
    }

    pub fn pairs<S: Serializer, T: SecretText>(v: &[(String, T)], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for (k, v) in v {
            seq.serialize_element(&(k, v.expose_text()))?;
        }
        seq.end()
    }

    pub fn de_option<'de, D: Deserializer<'de>, T: From<String>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(T::from))
    }

    pub fn de_pairs<'de, D: Deserializer<'de>, T: From<String>>(
        d: D,
    ) -> Result<Vec<(String, T)>, D::Error> {
        Ok(Vec::<(String, String)>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| (k, T::from(v)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let shown = format!(
            "{:?} {:?} {:?} {:?} {:?} {:?}",
            ClientSecret::new("hunter2-canary"),
            Some(AccessToken::new("hunter2-canary")),
            RefreshToken::new("hunter2-canary"),
            PkceVerifier::new("hunter2-canary"),
            EnteredValue::new("hunter2-canary"),
            StoreKey::new([0x68; 32]),
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("104"), "{shown}");
        assert!(shown.contains("ClientSecret([redacted])"), "{shown}");
        assert!(shown.contains("StoreKey([redacted])"), "{shown}");
    }

    #[test]
    fn constant_time_equality() {
        let s = AdminToken::new("abc");
        assert!(s.ct_eq(b"abc"));
        assert!(!s.ct_eq(b"abd"));
        assert!(!s.ct_eq(b"ab"));
        assert!(!s.ct_eq(b""));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn numbers_are_taken_as_text_and_other_types_not_echoed() {
        let s = toml::Value::Integer(987654321)
            .try_into::<Password>()
            .unwrap();
        assert_eq!(s.expose(), "987654321");
        let err = toml::Value::Float(98765.4321)
            .try_into::<ApiKey>()
            .unwrap_err()
            .to_string();
        assert!(!err.contains("98765"), "{err}");
    }

    #[test]
    fn store_keys_are_32_bytes_of_base64_and_errors_do_not_echo() {
        use base64::Engine;
        let text = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(StoreKey::from_base64(&text).unwrap().expose(), &[7u8; 32]);
        let e = StoreKey::from_base64("c2hvcnQ=").unwrap_err();
        assert!(e.contains("5 bytes"), "{e}");
        let e = StoreKey::from_base64("not base64 at all!").unwrap_err();
        assert!(!e.contains("at all"), "{e}");
    }

    #[test]
    fn store_form_round_trips() {
        #[derive(serde::Serialize, Deserialize)]
        struct R {
            #[serde(
                serialize_with = "store_form::option",
                deserialize_with = "store_form::de_option"
            )]
            v: Option<PkceVerifier>,
            #[serde(
                serialize_with = "store_form::pairs",
                deserialize_with = "store_form::de_pairs"
            )]
            e: Vec<(String, EnteredValue)>,
        }
        let r = R {
            v: Some("ver".into()),
            e: vec![("pin".into(), "1234".into())],
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"v":"ver","e":[["pin","1234"]]}"#);
        let back: R = serde_json::from_str(&json).unwrap();
        assert_eq!(back.v.unwrap().expose(), "ver");
        assert_eq!(back.e[0].1.expose(), "1234");
    }
}
