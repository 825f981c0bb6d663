//! `[store]`: where tokens, grants, tickets and `state` are kept.

use super::*;

pub(super) fn store_config(s: Option<RawStore>, v: &mut V) -> StoreConfig {
    let Some(s) = s else {
        return StoreConfig::Memory;
    };
    match s.kind.as_str() {
        "memory" => {
            for (k, set) in [
                ("path", s.path.is_some()),
                ("key", s.key.is_some()),
                ("previous_key", s.previous_key.is_some()),
                ("url", s.url.is_some()),
                ("cluster", s.cluster.is_some()),
                ("prefix", s.prefix.is_some()),
                ("timeout", s.timeout.is_some()),
            ] {
                if set {
                    v.err(&format!("store.{k}"), "not used by kind \"memory\"");
                }
            }
            StoreConfig::Memory
        }
        "file" => {
            for (k, set) in [
                ("url", s.url.is_some()),
                ("cluster", s.cluster.is_some()),
                ("prefix", s.prefix.is_some()),
                ("timeout", s.timeout.is_some()),
            ] {
                if set {
                    v.err(&format!("store.{k}"), "not used by kind \"file\"");
                }
            }
            // A key that did not parse is reported already (and removed from the section).
            if s.key.is_none() && !v.has_error("store.key") {
                v.err(
                    "store.key",
                    "required for kind \"file\": records are encrypted; `authsidecar keygen` prints a key",
                );
            }
            let (key, previous_key) = (s.key, s.previous_key);
            let path = s.path.unwrap_or_else(|| DEFAULT_STORE_PATH.into());
            let path = if path.is_relative() {
                v.env_base().join(path)
            } else {
                path
            };
            match key {
                Some(key) => StoreConfig::File {
                    path,
                    key,
                    previous_key,
                },
                None => StoreConfig::Memory,
            }
        }
        "redis" => {
            if s.path.is_some() {
                v.err("store.path", "not used by kind \"redis\"");
            }
            if s.key.is_none() && !v.has_error("store.key") {
                v.err(
                    "store.key",
                    "required for kind \"redis\": records are encrypted; `authsidecar keygen` prints a key",
                );
            }
            let (key, previous_key) = (s.key, s.previous_key);
            let valid = |u: &crate::secret::StoreUrl| {
                (u.expose().starts_with("redis://") || u.expose().starts_with("rediss://"))
                    && redis::parse_redis_url(u.expose()).is_some()
            };
            // Never echo a URL: it may hold the password.
            let url_form = "expected redis://[user:password@]host:port[/db] or rediss://… (TLS)";
            let (urls, cluster) = match (s.url, s.cluster) {
                (Some(u), None) => {
                    if !valid(&u) {
                        v.err("store.url", url_form);
                    }
                    (vec![u], false)
                }
                (None, Some(nodes)) => {
                    if nodes.is_empty() {
                        v.err("store.cluster", "expected at least one seed node URL");
                    }
                    for (i, u) in nodes.iter().enumerate() {
                        if !valid(u) {
                            v.err(&format!("store.cluster[{i}]"), url_form);
                        }
                    }
                    (nodes, true)
                }
                (Some(_), Some(_)) => {
                    v.err(
                        "store.cluster",
                        "set either url (one Redis) or cluster (Redis Cluster seed nodes), not both",
                    );
                    (Vec::new(), false)
                }
                (None, None) => {
                    v.err(
                        "store.url",
                        "required for kind \"redis\" (or cluster = [seed node URLs])",
                    );
                    (Vec::new(), false)
                }
            };
            let timeout = s.timeout.map_or(DEFAULT_REDIS_TIMEOUT, |d| d.0);
            if timeout.is_zero() || timeout > std::time::Duration::from_secs(30) {
                v.err("store.timeout", "expected a duration from 1ms to 30s");
            }
            let prefix = s.prefix.unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_string());
            if prefix.contains(['*', '?', '[', ']', '\\', '{', '}']) {
                v.err("store.prefix", "must not contain * ? [ ] \\ { }");
            }
            match key {
                Some(key) if !urls.is_empty() => StoreConfig::Redis {
                    urls,
                    cluster,
                    prefix,
                    key,
                    previous_key,
                    timeout,
                },
                _ => StoreConfig::Memory,
            }
        }
        other => {
            v.err(
                "store.kind",
                format!("unknown kind \"{other}\"; expected memory, file or redis"),
            );
            StoreConfig::Memory
        }
    }
}
