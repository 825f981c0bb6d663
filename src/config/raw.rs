//! The file shapes of the config (serde), and a deserializer that collects every error of an item.
//!
//! These types never leave the `config` module: `validate` turns them into the typed [`super::Config`].

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::{ConfigError, ProfileType};
use crate::secret::{
    AdminToken, ApiKey, AwsSecretAccessKey, AwsSessionToken, ClientSecret, ConsumerSecret,
    HmacSecret, OAuth1Token, OAuth1TokenSecret, Password, StoreKey, StoreUrl, Username,
};

/// A duration written as text: `"10s"`, `"250ms"`, `"2m"`.
#[derive(Clone, Copy, Debug)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "invalid type; expected a duration string like \"10s\" or \"250ms\"",
            )
        })?;
        humantime::parse_duration(&s).map(Dur).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid duration \"{s}\"; expected a duration like \"10s\" or \"250ms\""
            ))
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    pub listen: Option<String>,
    pub header_read_timeout: Option<Dur>,
    pub body_read_timeout: Option<Dur>,
    pub body_total_timeout: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    pub connect_timeout: Option<Dur>,
    pub upstream_timeout: Option<Dur>,
    pub drain_timeout: Option<Dur>,
    pub max_body_bytes: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub max_uri_bytes: Option<usize>,
    pub max_cached_tokens: Option<usize>,
    pub trusted_proxies: Option<Vec<String>>,
    pub workers: Option<usize>,
    pub tls: Option<RawServerTls>,
    pub access_log: Option<bool>,
    pub fast_path: Option<bool>,
    pub worker_scheduling: Option<String>,
}

/// `tls = { cert, key, client_ca }` of a listener.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// `[webhooks.NAME]`: a receiver of grant events.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: String,
    pub secret: Option<crate::secret::WebhookSecret>,
    pub events: Option<Vec<String>>,
    pub tls: Option<RawTls>,
    pub connector: Option<String>,
    pub retry_initial: Option<Dur>,
    pub retry_max: Option<Dur>,
    pub max_age: Option<Dur>,
    pub timeout: Option<Dur>,
}

/// `[connectors.NAME]`: an egress proxy.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnector {
    pub url: String,
    pub username: Option<Username>,
    pub password: Option<Password>,
    pub no_proxy: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub token: Option<AdminToken>,
    pub tls: Option<RawServerTls>,
    pub profiles_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMock {
    pub listen: String,
    pub token_lifetime: Option<Dur>,
    pub client_id: Option<String>,
    pub client_secret: Option<ClientSecret>,
    pub username: Option<String>,
    pub password: Option<Password>,
    pub client_keys: Option<PathBuf>,
    pub bearer_issuer: Option<String>,
    pub bearer_keys: Option<PathBuf>,
    pub sigv4: Option<RawMockSigV4>,
    pub hmac: Option<RawMockHmac>,
}

/// `[mock_provider.sigv4]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMockSigV4 {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<crate::secret::AwsSecretAccessKey>,
    pub session_token: Option<crate::secret::AwsSessionToken>,
    pub region: Option<String>,
    pub service: Option<String>,
}

/// `[mock_provider.hmac]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMockHmac {
    pub secret: Option<crate::secret::HmacSecret>,
    pub secret_encoding: Option<String>,
    pub algorithm: Option<String>,
    pub encoding: Option<String>,
    pub string_to_sign: Option<String>,
    pub signature_header: Option<String>,
    pub timestamp_header: Option<String>,
    pub nonce_header: Option<String>,
    pub max_skew: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub listen: String,
    pub public_url: String,
    pub ticket_ttl: Option<Dur>,
    pub max_link_attempts: Option<u64>,
    pub max_user_attempts: Option<u64>,
    pub user_attempt_window: Option<Dur>,
    pub tls: Option<RawServerTls>,
}

fn default_store_kind() -> String {
    "file".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `file` (the embedded default) when the section leaves it out.
    #[serde(default = "default_store_kind")]
    pub kind: String,
    pub path: Option<PathBuf>,
    pub key: Option<StoreKey>,
    pub previous_key: Option<StoreKey>,
    pub url: Option<StoreUrl>,
    pub cluster: Option<Vec<StoreUrl>>,
    pub prefix: Option<String>,
    pub timeout: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub server_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub prefix: String,
    pub upstream: String,
    pub profiles: Vec<String>,
    pub tls: Option<RawTls>,
    pub timeout: Option<Dur>,
    pub connector: Option<String>,
    pub upstream_hosts: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawField {
    #[serde(rename = "in")]
    pub location: String,
    pub key: String,
    pub value: Option<String>,
    pub payload_format: Option<String>,
}

/// A profile's file shape. `type` selects the variant of [`RawKind`]; each variant reads its own
/// key groups, and those groups are the keys the type takes: any other key is refused with its path
/// and that list (`profiles.x.token_url: unknown key for type "api_key"; this type takes: …`).
pub struct RawProfile {
    pub ty: ProfileType,
    pub common: CommonKeys,
    pub kind: RawKind,
}

/// The keys of each profile type, beyond [`CommonKeys`].
pub enum RawKind {
    None,
    Basic {
        credentials: CredentialKeys,
        per_user: PerUserKeys,
    },
    ApiKey {
        key: ApiKeyKeys,
        per_user: PerUserKeys,
    },
    ClientCredentials {
        oauth: Box<OAuthKeys>,
    },
    Password {
        oauth: Box<OAuthKeys>,
        credentials: CredentialKeys,
        per_user: PerUserKeys,
    },
    AuthorizationCode {
        oauth: Box<OAuthKeys>,
        code: AuthCodeKeys,
        per_user: PerUserKeys,
    },
    JwtBearer {
        oauth: Box<OAuthKeys>,
        bearer: Box<JwtBearerKeys>,
    },
    AwsSigV4 {
        keys: Box<SigV4Keys>,
        body: SignedBodyKeys,
    },
    Hmac {
        keys: Box<HmacKeys>,
        body: SignedBodyKeys,
    },
    OAuth1 {
        keys: Box<OAuth1Keys>,
        body: SignedBodyKeys,
        per_user: PerUserKeys,
    },
}

impl RawKind {
    /// The per-user keys, for the types that can be per user.
    pub fn per_user(&self) -> Option<&PerUserKeys> {
        match self {
            RawKind::None
            | RawKind::ClientCredentials { .. }
            | RawKind::JwtBearer { .. }
            | RawKind::AwsSigV4 { .. }
            | RawKind::Hmac { .. } => None,
            RawKind::Basic { per_user, .. }
            | RawKind::ApiKey { per_user, .. }
            | RawKind::Password { per_user, .. }
            | RawKind::AuthorizationCode { per_user, .. }
            | RawKind::OAuth1 { per_user, .. } => Some(per_user),
        }
    }

    pub fn per_user_mut(&mut self) -> Option<&mut PerUserKeys> {
        match self {
            RawKind::None
            | RawKind::ClientCredentials { .. }
            | RawKind::JwtBearer { .. }
            | RawKind::AwsSigV4 { .. }
            | RawKind::Hmac { .. } => None,
            RawKind::Basic { per_user, .. }
            | RawKind::ApiKey { per_user, .. }
            | RawKind::Password { per_user, .. }
            | RawKind::AuthorizationCode { per_user, .. }
            | RawKind::OAuth1 { per_user, .. } => Some(per_user),
        }
    }
}

/// Keys every profile takes.
#[derive(Deserialize, Default)]
pub struct CommonKeys {
    pub identity_provider: Option<String>,
    #[serde(default)]
    pub tenancy: bool,
    pub tenant_pattern: Option<String>,
    pub fields: Option<Vec<RawField>>,
    pub connector: Option<String>,
}

/// A username and password held in the config (`basic`, `oauth2_password`).
#[derive(Deserialize, Default)]
pub struct CredentialKeys {
    pub username: Option<Username>,
    pub password: Option<Password>,
}

#[derive(Deserialize, Default)]
pub struct ApiKeyKeys {
    pub api_key: Option<ApiKey>,
}

/// Keys of the types whose credentials can belong to end users.
#[derive(Deserialize, Default)]
pub struct PerUserKeys {
    pub per_user: Option<bool>,
    pub user_fields: Option<Vec<RawUserField>>,
    pub on_authorized: Option<String>,
    pub webhooks: Option<Vec<String>>,
    pub keep_alive: Option<Dur>,
}

/// Keys of every OAuth 2.0 type.
#[derive(Deserialize, Default)]
pub struct OAuthKeys {
    pub token_url: Option<String>,
    /// The provider's issuer: its discovery document gives the endpoints the profile leaves out.
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<ClientSecret>,
    pub client_auth: Option<String>,
    pub client_assertion_key: Option<PathBuf>,
    pub client_assertion_alg: Option<String>,
    pub client_assertion_kid: Option<String>,
    pub client_assertion_cert: Option<PathBuf>,
    pub client_assertion_audience: Option<String>,
    pub scope: Option<indexmap::IndexMap<String, String>>,
    pub token_params: Option<indexmap::IndexMap<String, String>>,
    pub token_request: Option<RawTokenRequest>,
    pub token_response: Option<RawTokenResponse>,
    pub tls: Option<RawTls>,
    pub idp_timeout: Option<Dur>,
    pub default_token_lifetime: Option<Dur>,
    pub refresh_before: Option<Dur>,
    pub reauth_on: Option<Vec<u16>>,
    pub reauth_min_token_age: Option<Dur>,
    pub replay_max_body_bytes: Option<u64>,
    pub allow_insecure_http: Option<bool>,
}

/// `token_request = { encoding, headers, body }`: a token request the profile writes itself.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenRequest {
    pub encoding: Option<String>,
    pub headers: Option<indexmap::IndexMap<String, String>>,
    pub body: Option<toml::Table>,
}

/// `token_response = { access_token, refresh_token, expires_in | expires_at, token_type }`: where
/// the token response keeps its members (JSON Pointers) and the token's type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenResponse {
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_in: Option<String>,
    pub expires_at: Option<String>,
    pub token_type: Option<String>,
}

/// Keys of `oauth2_jwt_bearer` beyond the OAuth ones.
#[derive(Deserialize, Default)]
pub struct JwtBearerKeys {
    pub assertion_key: Option<PathBuf>,
    pub assertion_alg: Option<String>,
    pub assertion_kid: Option<String>,
    pub assertion_claims: Option<toml::Table>,
    pub assertion_lifetime: Option<Dur>,
    pub credentials_file: Option<PathBuf>,
}

/// `aws_sigv4`: AWS Signature Version 4.
#[derive(Deserialize, Default)]
pub struct SigV4Keys {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<AwsSecretAccessKey>,
    pub session_token: Option<AwsSessionToken>,
    pub region: Option<String>,
    pub service: Option<String>,
    pub payload: Option<String>,
}

/// `hmac`: a request signature over a `string_to_sign` template.
#[derive(Deserialize, Default)]
pub struct HmacKeys {
    pub secret: Option<HmacSecret>,
    pub secret_encoding: Option<String>,
    pub algorithm: Option<String>,
    pub encoding: Option<String>,
    pub string_to_sign: Option<String>,
}

/// `oauth1`: OAuth 1.0a (RFC 5849) with a static token, none (two-legged), or each end user's
/// (three-legged, `per_user = true` with the three endpoint URLs).
#[derive(Deserialize, Default)]
pub struct OAuth1Keys {
    pub consumer_key: Option<String>,
    pub consumer_secret: Option<ConsumerSecret>,
    pub token: Option<OAuth1Token>,
    pub token_secret: Option<OAuth1TokenSecret>,
    pub signature_method: Option<String>,
    pub private_key: Option<PathBuf>,
    pub realm: Option<String>,
    pub placement: Option<String>,
    pub request_token_url: Option<String>,
    pub authorization_url: Option<String>,
    pub access_token_url: Option<String>,
    /// TLS and time limit of the three token requests (`per_user = true`).
    pub tls: Option<RawTls>,
    pub idp_timeout: Option<Dur>,
    pub allow_insecure_http: Option<bool>,
}

/// Keys of every type that signs requests.
#[derive(Deserialize, Default)]
pub struct SignedBodyKeys {
    pub max_signed_body_bytes: Option<u64>,
}

/// Keys of `oauth2_authorization_code` beyond the OAuth ones.
#[derive(Deserialize, Default)]
pub struct AuthCodeKeys {
    pub authorization_url: Option<String>,
    pub refresh_url: Option<String>,
    pub revocation_url: Option<String>,
    pub pkce: Option<bool>,
}

impl RawProfile {
    /// Reads one `[profiles.NAME]` table, collecting every error (see [`collect`]): the `type`,
    /// each key group of that type, and every key that belongs to none of them. `None` when the
    /// profile cannot be checked further.
    pub fn collect(
        value: toml::Value,
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<RawProfile> {
        let toml::Value::Table(mut table) = value else {
            errors.push(ConfigError::new(
                path,
                "expected a table: [profiles.NAME] with type = \"…\"",
            ));
            return None;
        };
        let ty = match table.remove("type") {
            None => {
                errors.push(ConfigError::new(
                    &join(path, "type"),
                    "required key missing",
                ));
                return None;
            }
            Some(toml::Value::String(name)) => match ProfileType::from_name(&name) {
                Some(t) => t,
                None => {
                    errors.push(ConfigError::new(
                        &join(path, "type"),
                        format!("unknown type \"{name}\"; expected {}", type_list()),
                    ));
                    return None;
                }
            },
            Some(_) => {
                errors.push(ConfigError::new(
                    &join(path, "type"),
                    format!("invalid type; expected a string: {}", type_list()),
                ));
                return None;
            }
        };
        let mut r = Groups {
            table,
            path,
            errors,
            keys: Vec::new(),
            failed: false,
        };
        let kind = match ty {
            ProfileType::None => RawKind::None,
            ProfileType::Basic => RawKind::Basic {
                credentials: r.read(),
                per_user: r.read(),
            },
            ProfileType::ApiKey => RawKind::ApiKey {
                key: r.read(),
                per_user: r.read(),
            },
            ProfileType::ClientCredentials => RawKind::ClientCredentials {
                oauth: Box::new(r.read()),
            },
            ProfileType::Password => RawKind::Password {
                oauth: Box::new(r.read()),
                credentials: r.read(),
                per_user: r.read(),
            },
            ProfileType::AuthorizationCode => RawKind::AuthorizationCode {
                oauth: Box::new(r.read()),
                code: r.read(),
                per_user: r.read(),
            },
            ProfileType::JwtBearer => RawKind::JwtBearer {
                oauth: Box::new(r.read()),
                bearer: Box::new(r.read()),
            },
            ProfileType::AwsSigV4 => RawKind::AwsSigV4 {
                keys: Box::new(r.read()),
                body: r.read(),
            },
            ProfileType::Hmac => RawKind::Hmac {
                keys: Box::new(r.read()),
                body: r.read(),
            },
            ProfileType::OAuth1 => RawKind::OAuth1 {
                keys: Box::new(r.read()),
                body: r.read(),
                per_user: r.read(),
            },
        };
        let common = r.read();
        r.refuse_others(ty);
        (!r.failed).then_some(RawProfile { ty, common, kind })
    }
}

/// The keys an OAuth 2.0 profile of type `ty` takes (with `type`); empty for other types.
pub fn oauth_keys_of(ty: ProfileType) -> Vec<&'static str> {
    let mut keys = vec!["type"];
    keys.extend_from_slice(keys_of::<OAuthKeys>());
    match ty {
        ProfileType::ClientCredentials => {}
        ProfileType::Password => {
            keys.extend_from_slice(keys_of::<CredentialKeys>());
            keys.extend_from_slice(keys_of::<PerUserKeys>());
        }
        ProfileType::AuthorizationCode => {
            keys.extend_from_slice(keys_of::<AuthCodeKeys>());
            keys.extend_from_slice(keys_of::<PerUserKeys>());
        }
        ProfileType::JwtBearer => keys.extend_from_slice(keys_of::<JwtBearerKeys>()),
        _ => return Vec::new(),
    }
    keys.extend_from_slice(keys_of::<CommonKeys>());
    keys
}

fn type_list() -> String {
    let names: Vec<&str> = ProfileType::ALL.iter().map(|t| t.name()).collect();
    match names.split_last() {
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The key groups of one profile, read from its table one by one.
struct Groups<'a> {
    table: toml::Table,
    path: &'a str,
    errors: &'a mut Vec<ConfigError>,
    /// Every key the groups read so far take, in order.
    keys: Vec<&'static str>,
    failed: bool,
}

impl Groups<'_> {
    /// Reads one group's keys (the group ignores the others); its errors are collected.
    fn read<G: DeserializeOwned + Default>(&mut self) -> G {
        self.keys.extend_from_slice(keys_of::<G>());
        let group = collect::<G>(
            toml::Value::Table(self.table.clone()),
            self.path,
            self.errors,
        );
        group.unwrap_or_else(|| {
            self.failed = true;
            G::default()
        })
    }

    /// Every key no group of the type takes is an error (the profile is still checked further:
    /// every error at once).
    fn refuse_others(&mut self, ty: ProfileType) {
        for key in self.table.keys() {
            if !self.keys.contains(&key.as_str()) {
                self.errors.push(ConfigError::new(
                    &join(self.path, key),
                    format!(
                        "unknown key for type \"{}\"; this type takes: {}",
                        ty.name(),
                        self.keys.join(", ")
                    ),
                ));
            }
        }
    }
}

/// The keys a struct takes, as serde names them: the field list its derived `Deserialize` hands
/// to the deserializer.
pub fn keys_of<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut keys: &'static [&'static str] = &[];
    let _ = T::deserialize(KeyProbe(&mut keys));
    keys
}

/// A deserializer that only notes the field list of the struct asked for.
struct KeyProbe<'a>(&'a mut &'static [&'static str]);

#[derive(Debug)]
struct ProbeDone;

impl std::fmt::Display for ProbeDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("key probe")
    }
}

impl std::error::Error for ProbeDone {}

impl serde::de::Error for ProbeDone {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        ProbeDone
    }
}

impl<'de> Deserializer<'de> for KeyProbe<'_> {
    type Error = ProbeDone;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, ProbeDone> {
        Err(ProbeDone)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, ProbeDone> {
        *self.0 = fields;
        Err(ProbeDone)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUserField {
    pub key: String,
    pub label: Option<String>,
    #[serde(default)]
    pub secret: bool,
    pub pattern: Option<String>,
    pub max_length: Option<usize>,
}

/// Deserializes one item, collecting as many errors as serde lets us find: after an unknown key or a
/// value of the wrong type, that key is removed and the item is tried again, so one pass reports every
/// bad key of the item (a missing key is reported once, unless it is one we removed). Returns the
/// item when it parses once the bad keys are gone, so its contents can still be checked.
pub fn collect<T: DeserializeOwned>(
    value: toml::Value,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let mut value = value;
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..64 {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            // With bad keys removed the item may parse: return it so deeper checks still run (the
            // recorded errors fail the config anyway).
            Ok(t) => return Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                // toml's value deserializer appends "\nin `key`"; the path already says where.
                let full = e.inner().to_string();
                let msg = full.lines().next().unwrap_or("").to_string();
                let at = if inner == "." { String::new() } else { inner };
                if let Some(name) = between_backticks(&msg, "unknown field `") {
                    // The path may or may not already end with the unknown key.
                    let key = if at == name || at.ends_with(&format!(".{name}")) {
                        at.clone()
                    } else {
                        join(&at, &name)
                    };
                    errors.push(ConfigError::new(
                        &join(path, &key),
                        rewrite_unknown(&msg, &name),
                    ));
                    if !remove(&mut value, &key) {
                        return None;
                    }
                    removed.push(key);
                } else if let Some(name) = between_backticks(&msg, "missing field `") {
                    let key = join(&at, &name);
                    if !removed.contains(&key) {
                        errors.push(ConfigError::new(
                            &join(path, &key),
                            "required key missing".to_string(),
                        ));
                    }
                    return None;
                } else {
                    errors.push(ConfigError::new(&join(path, &at), msg));
                    if at.is_empty() || !remove(&mut value, &at) {
                        return None;
                    }
                    removed.push(at);
                }
            }
        }
    }
    None
}

fn rewrite_unknown(msg: &str, name: &str) -> String {
    // serde: "unknown field `x`, expected one of `a`, `b`" → "unknown key \"x\"; expected one of a, b"
    let expected = msg
        .split_once(", expected ")
        .map(|(_, e)| e.replace('`', ""))
        .unwrap_or_default();
    if expected.is_empty() {
        format!("unknown key \"{name}\"")
    } else {
        format!("unknown key \"{name}\"; expected {expected}")
    }
}

fn between_backticks(msg: &str, prefix: &str) -> Option<String> {
    let rest = msg.strip_prefix(prefix)?;
    Some(rest[..rest.find('`')?].to_string())
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else if b.starts_with('[') {
        format!("{a}{b}")
    } else {
        format!("{a}.{b}")
    }
}

/// Removes the key at a serde_path_to_error path such as `fields[1].in`.
fn remove(value: &mut toml::Value, path: &str) -> bool {
    let mut segs: Vec<Seg> = Vec::new();
    for part in path.split('.') {
        let (name, mut idx) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            segs.push(Seg::Key(name.to_string()));
        }
        while let Some(rest) = idx.strip_prefix('[') {
            let Some(end) = rest.find(']') else {
                return false;
            };
            let Ok(n) = rest[..end].parse() else {
                return false;
            };
            segs.push(Seg::Index(n));
            idx = &rest[end + 1..];
        }
    }
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut cur = value;
    for s in parents {
        cur = match (s, cur) {
            (Seg::Key(k), toml::Value::Table(t)) => match t.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Seg::Index(i), toml::Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        (Seg::Key(k), toml::Value::Table(t)) => t.remove(k).is_some(),
        // An array element of the wrong type cannot be removed without shifting the indexes of
        // the others; stop here.
        _ => false,
    }
}

enum Seg {
    Key(String),
    Index(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs_of<T: DeserializeOwned>(src: &str) -> Vec<String> {
        let v: toml::Value = toml::Value::Table(src.parse().unwrap());
        let mut errors = Vec::new();
        let _ = collect::<T>(v, "profiles.p", &mut errors);
        errors.iter().map(|e| e.to_string()).collect()
    }

    fn profile_errs(src: &str) -> Vec<String> {
        let v: toml::Value = toml::Value::Table(src.parse().unwrap());
        let mut errors = Vec::new();
        let _ = RawProfile::collect(v, "profiles.p", &mut errors);
        errors.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn collects_every_bad_key_of_one_item() {
        let errs = profile_errs(
            "type = \"basic\"\ntenancy = \"yes\"\nusernme = \"u\"\n[[fields]]\nin = \"header\"\nkye = \"x\"\n",
        );
        let all = errs.join("\n");
        assert!(all.contains("profiles.p.tenancy: invalid type"), "{all}");
        assert!(
            all.contains("profiles.p.usernme: unknown key for type \"basic\"; this type takes: username, password, per_user, user_fields, on_authorized, webhooks, keep_alive, identity_provider, tenancy, tenant_pattern, fields, connector"),
            "{all}"
        );
        assert!(
            all.contains("profiles.p.fields[0].kye: unknown key"),
            "{all}"
        );
        assert!(
            all.contains("profiles.p.fields[0].key: required key missing"),
            "{all}"
        );
        assert_eq!(errs.len(), 4, "{all}");
    }

    #[test]
    fn a_key_of_another_type_is_refused_with_the_keys_this_type_takes() {
        let errs = profile_errs(
            "type = \"api_key\"\napi_key = \"k\"\ntoken_url = \"https://idp/token\"\npkce = true\n",
        );
        let takes = "this type takes: api_key, per_user, user_fields, on_authorized, webhooks, keep_alive, identity_provider, tenancy, tenant_pattern, fields, connector";
        assert_eq!(
            errs,
            vec![
                format!("profiles.p.token_url: unknown key for type \"api_key\"; {takes}"),
                format!("profiles.p.pkce: unknown key for type \"api_key\"; {takes}"),
            ]
        );
        let errs = profile_errs("type = \"oauth2_client_credentials\"\nper_user = true\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("profiles.p.per_user: unknown key for type \"oauth2_client_credentials\"; this type takes: token_url, issuer, client_id, client_secret,"),
            "{errs:?}"
        );
    }

    #[test]
    fn every_type_reads_its_own_keys() {
        for ty in ProfileType::ALL {
            let v = toml::Value::Table(format!("type = \"{}\"\n", ty.name()).parse().unwrap());
            let mut errors = Vec::new();
            let p = RawProfile::collect(v, "profiles.p", &mut errors).unwrap();
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(p.ty, ty);
        }
        assert_eq!(keys_of::<ApiKeyKeys>(), ["api_key"]);
        assert_eq!(
            keys_of::<RawField>(),
            ["in", "key", "value", "payload_format"]
        );
    }

    #[test]
    fn missing_or_unknown_type_is_reported_with_its_path() {
        assert_eq!(
            profile_errs("identity_provider = \"x\"\n"),
            vec!["profiles.p.type: required key missing".to_string()]
        );
        assert_eq!(
            profile_errs("type = \"oauth3\"\n"),
            vec!["profiles.p.type: unknown type \"oauth3\"; expected none, basic, api_key, oauth2_client_credentials, oauth2_password, oauth2_authorization_code, oauth2_jwt_bearer, aws_sigv4, hmac or oauth1".to_string()]
        );
    }

    #[test]
    fn durations_are_text() {
        let errs = errs_of::<RawRoute>(
            "prefix = \"/a/\"\nupstream = \"http://x/\"\nprofiles = [\"p\"]\ntimeout = 5\n",
        );
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("profiles.p.timeout: "), "{errs:?}");
        assert!(errs[0].contains("\"10s\""), "{errs:?}");
    }
}
