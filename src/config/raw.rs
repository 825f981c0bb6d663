//! The file shapes of the config (serde), and a deserializer that collects every error of an item.
//!
//! These types never leave the `config` module: `validate` turns them into the typed [`super::Config`].

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::ConfigError;
use crate::secret::{AdminToken, ApiKey, ClientSecret, Password, StoreKey, StoreUrl, Username};

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
}

/// `tls = { cert, key, client_ca }` of a listener.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    #[serde(rename = "type")]
    pub kind: String,
    pub identity_provider: Option<String>,
    pub username: Option<Username>,
    pub password: Option<Password>,
    pub api_key: Option<ApiKey>,
    #[serde(default)]
    pub tenancy: bool,
    pub fields: Option<Vec<RawField>>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<ClientSecret>,
    pub client_auth: Option<String>,
    pub scope: Option<indexmap::IndexMap<String, String>>,
    pub token_params: Option<indexmap::IndexMap<String, String>>,
    pub tls: Option<RawTls>,
    pub idp_timeout: Option<Dur>,
    pub default_token_lifetime: Option<Dur>,
    pub refresh_before: Option<Dur>,
    pub reauth_on: Option<Vec<u16>>,
    pub reauth_min_token_age: Option<Dur>,
    pub replay_max_body_bytes: Option<u64>,
    pub allow_insecure_http: Option<bool>,
    pub authorization_url: Option<String>,
    pub refresh_url: Option<String>,
    pub revocation_url: Option<String>,
    pub issuer: Option<String>,
    pub pkce: Option<bool>,
    pub on_authorized: Option<String>,
    pub user_fields: Option<Vec<RawUserField>>,
    pub per_user: Option<bool>,
    pub connector: Option<String>,
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

    #[test]
    fn collects_every_bad_key_of_one_item() {
        let errs = errs_of::<RawProfile>(
            "type = \"basic\"\ntenancy = \"yes\"\nusernme = \"u\"\n[[fields]]\nin = \"header\"\nkye = \"x\"\n",
        );
        let all = errs.join("\n");
        assert!(all.contains("profiles.p.tenancy: invalid type"), "{all}");
        assert!(
            all.contains("profiles.p.usernme: unknown key \"usernme\""),
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
    fn missing_type_is_reported_with_its_path() {
        let errs = errs_of::<RawProfile>("identity_provider = \"x\"\n");
        assert_eq!(
            errs,
            vec!["profiles.p.type: required key missing".to_string()]
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
