//! `${store:NAME}`: a secret kept in the encrypted store (record `secret:NAME`, see
//! `store::names`) instead of in the config. The profile form writes them (`admin::profile_form`);
//! any string value of the config may use one, and it is read at every load and reload.
//!
//! At start (and in `check`) the store named by `[store]` is opened for the load and closed again
//! before the server opens it; a reload reads the running store. The memory store starts empty, so
//! a reference there is an error, as is a name the store does not hold: both name the key and the
//! store name, never a value.

use std::borrow::Cow;
use std::sync::Arc;

use super::{ConfigError, Env, StoreConfig};
use crate::store::{Name, Store};

/// Reads the secret `NAME` (`None`: the store holds none).
pub type Lookup = Arc<dyn Fn(&str) -> Result<Option<String>, String> + Send + Sync>;

/// Longest `NAME` in `${store:NAME}`.
pub const MAX_NAME_LEN: usize = 128;

/// `${store:NAME}` read from `store`.
pub fn lookup(store: Arc<Store>) -> Lookup {
    Arc::new(move |name| {
        let Some(bytes) = store.get(&Name::secret(name)).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| "the stored value is not UTF-8 text".to_string())
    })
}

/// A store name: 1 to 128 letters, digits, `_`, `-` and `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The value of `${store:NAME}`, or why there is none.
pub(super) fn resolve(name: &str, env: &Env) -> Result<String, String> {
    if !valid_name(name) {
        return Err(format!(
            "invalid ${{store:NAME}}: the name must be 1 to {MAX_NAME_LEN} letters, digits, _, - or ."
        ));
    }
    let Some(lookup) = &env.store else {
        return Err(format!(
            "${{store:{name}}}: no store to read it from here (the running sidecar reads its store on start and reload)"
        ));
    };
    match lookup(name) {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(format!(
            "${{store:{name}}}: the store holds no secret named \"{name}\""
        )),
        Err(e) => Err(format!(
            "${{store:{name}}}: the store could not be read: {e}"
        )),
    }
}

/// The environment to expand `table` with: when it uses `${store:…}` and no store is at hand, the
/// store of its `[store]` section, opened for this load (a real process only; the references fail
/// with the reason when it cannot be opened).
pub(super) fn attach<'a>(
    table: &toml::Table,
    env: &'a Env,
    errors: &mut Vec<ConfigError>,
) -> Cow<'a, Env> {
    if env.store.is_some() || !env.open_store || !uses_store(&toml::Value::Table(table.clone())) {
        return Cow::Borrowed(env);
    }
    let mut env = env.clone();
    match open(table, &env, errors) {
        Ok(store) => env.store = Some(lookup(store)),
        Err(why) => env.store = Some(Arc::new(move |_| Err(why.clone()))),
    }
    Cow::Owned(env)
}

fn uses_store(v: &toml::Value) -> bool {
    match v {
        toml::Value::String(s) => s.contains("${store:"),
        toml::Value::Table(t) => t.values().any(uses_store),
        toml::Value::Array(a) => a.iter().any(uses_store),
        _ => false,
    }
}

/// Opens the store `[store]` describes (its own `${VAR}` references expanded; it may not use
/// `${store:…}` itself).
fn open(
    table: &toml::Table,
    env: &Env,
    errors: &mut Vec<ConfigError>,
) -> Result<Arc<Store>, String> {
    let Some(section) = table.get("store").and_then(toml::Value::as_table) else {
        return Err(not_durable());
    };
    let mut section = section.clone();
    let mut own = Vec::new();
    super::source::expand_table(&mut section, "store", env, &mut own);
    if !own.is_empty() {
        // The main expansion reports the same keys again; `${store:…}` inside `[store]` is named.
        for e in own.into_iter().filter(|e| e.message.contains("${store:")) {
            errors.push(ConfigError::new(
                &e.path,
                "[store] cannot use ${store:…}: the store's own settings must come from the file or the environment",
            ));
        }
        return Err("the [store] section has errors".into());
    }
    let Some(config) = super::validate::store_section(toml::Value::Table(section), env) else {
        return Err("the [store] section has errors".into());
    };
    if matches!(config, StoreConfig::Memory) {
        return Err(not_durable());
    }
    Store::open_config(&config)
        .map(Arc::new)
        .map_err(|e| format!("the store could not be opened: {e}"))
}

fn not_durable() -> String {
    "needs a durable store ([store] kind = \"file\" or \"redis\"); the memory store starts empty"
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with(secrets: &[(&str, &str)]) -> Env {
        let map: std::collections::HashMap<String, String> = secrets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut env = Env::default();
        env.store = Some(Arc::new(move |n| Ok(map.get(n).cloned())));
        env
    }

    #[test]
    fn a_store_reference_reads_the_secret_or_names_what_is_missing() {
        let env = env_with(&[("okta.client_secret", "s3cret")]);
        assert_eq!(
            super::super::source::expand_str("${store:okta.client_secret}", &env).unwrap(),
            "s3cret"
        );
        let e = super::super::source::expand_str("${store:other}", &env).unwrap_err();
        assert!(e.contains("no secret named \"other\""), "{e}");
        let e = super::super::source::expand_str("${store:a b}", &env).unwrap_err();
        assert!(e.contains("invalid ${store:NAME}"), "{e}");
        let e = super::super::source::expand_str("${store:x}", &Env::default()).unwrap_err();
        assert!(e.contains("no store to read it from"), "{e}");
    }

    #[test]
    fn a_memory_store_cannot_hold_referenced_secrets() {
        let text = "[profiles.p]\ntype = \"api_key\"\napi_key = \"${store:p.api_key}\"\n";
        let mut env = Env::from_pairs::<[(&str, &str); 0], _, _>([]);
        env.open_store = true;
        let (_, errors, _) = super::super::source::resolve(text, &env).unwrap();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "profiles.p.api_key");
        assert!(
            errors[0].message.contains("needs a durable store"),
            "{errors:?}"
        );
    }
}
