//! Keeping tokens in the store, so a restart does not fetch them again.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{Fetched, TokenKey};
use crate::secret::{AccessToken, EnteredValue, IdToken, RefreshToken};
use crate::store::{Name, Store};

/// Where the cache saves tokens and looks for them on a cold start.
pub trait Persist: Send + Sync + 'static {
    /// A saved token for `key` and the lifetime it has left.
    fn load(&self, key: &TokenKey) -> Option<(Fetched, Duration)>;
    fn save(&self, key: &TokenKey, fetched: &Fetched, lifetime: Duration);
}

/// [`Persist`] over the encrypted store.
pub struct StorePersist(pub Arc<Store>);

/// Store name of a saved machine token.
pub fn name(key: &TokenKey) -> Name {
    // Context values (machine tokens per context) are folded into the fingerprint: each set of
    // values is saved under its own name.
    let fingerprint = match &key.context {
        Some(c) => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.fingerprint.hash(&mut h);
            c.hash(&mut h);
            h.finish()
        }
        None => key.fingerprint,
    };
    Name::token(
        &key.profile,
        fingerprint,
        key.tenant.as_deref(),
        key.user.as_deref(),
    )
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Decodes a saved token: the token and the lifetime it has left (zero when expired).
pub fn decode_record(bytes: &[u8]) -> Option<(Fetched, Duration)> {
    {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        let expires_at = v["expires_at"].as_u64()?;
        let left = expires_at.saturating_sub(now_unix());
        let s = |k: &str| v[k].as_str().map(str::to_string);
        let fetched = Fetched {
            access_token: AccessToken::new(s("access_token")?),
            token_type: s("token_type").unwrap_or_else(|| "Bearer".into()),
            expires_in: Some(Duration::from_secs(left)),
            refresh_token: s("refresh_token").map(RefreshToken::new),
            id_token: s("id_token").map(IdToken::new),
            scope: s("scope"),
            extra: v["extra"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
            refresh_token_refused: false,
            entered: v["entered"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), EnteredValue::new(v.as_str()?))))
                        .collect()
                })
                .unwrap_or_default(),
        };
        Some((fetched, Duration::from_secs(left)))
    }
}

/// When a record's access token expires (Unix seconds).
pub fn record_expires_at(bytes: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Value>(bytes).ok()?["expires_at"].as_u64()
}

/// Encodes a token for the store; returns the bytes and the access token's expiry (Unix seconds).
pub fn encode_record(f: &Fetched, lifetime: Duration) -> (Vec<u8>, u64) {
    {
        let expires_at = now_unix() + lifetime.as_secs();
        let extra: serde_json::Map<String, Value> = f
            .extra
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let entered: serde_json::Map<String, Value> = f
            .entered
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.expose().to_string())))
            .collect();
        // Members without a value are left out (a reader takes a missing one as none): every
        // end user's grant is one record, in memory with the memory store.
        let mut record = serde_json::Map::new();
        let mut put = |k: &str, v: Value| {
            record.insert(k.to_string(), v);
        };
        put("access_token", f.access_token.expose().into());
        if f.token_type != "Bearer" {
            put("token_type", f.token_type.as_str().into());
        }
        if let Some(rt) = &f.refresh_token {
            put("refresh_token", rt.expose().into());
        }
        if let Some(it) = &f.id_token {
            put("id_token", it.expose().into());
        }
        if let Some(scope) = &f.scope {
            put("scope", scope.as_str().into());
        }
        if !extra.is_empty() {
            put("extra", Value::Object(extra));
        }
        if !entered.is_empty() {
            put("entered", Value::Object(entered));
        }
        put("expires_at", expires_at.into());
        (serde_json::to_vec(&record).unwrap_or_default(), expires_at)
    }
}

impl Persist for StorePersist {
    fn load(&self, key: &TokenKey) -> Option<(Fetched, Duration)> {
        let bytes = self.0.get(&name(key)).ok()??;
        decode_record(&bytes).filter(|(_, left)| !left.is_zero())
    }

    fn save(&self, key: &TokenKey, f: &Fetched, lifetime: Duration) {
        let (bytes, expires_at) = encode_record(f, lifetime);
        if let Err(e) = self.0.put(&name(key), &bytes, Some(expires_at)) {
            tracing::warn!(profile = %key.profile, "saving a token: {e}");
        }
    }
}
