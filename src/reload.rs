//! Reload (SIGHUP, `POST /admin/reload`): a new config is validated and applied to the running
//! listeners, or refused whole with the old one left in force. What only a restart can change
//! (listeners, workers, the store, the auth listener) is refused here; start-up is in `lib.rs`.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::{metrics, proxy, record_cert_expiry, store, token};

/// Applies a new config to a running server: validated first; a config that does not load, or that
/// changes what only a restart can change, is refused whole and the old one stays in force.
pub struct Reloader {
    path: Option<std::path::PathBuf>,
    current: std::sync::Mutex<Arc<Config>>,
    store: Arc<store::Store>,
    metrics: Arc<metrics::Metrics>,
    cache: Arc<token::TokenCache>,
    /// The admin and auth listeners' snapshot.
    live: Arc<arc_swap::ArcSwap<proxy::Snapshot>>,
    /// Every proxy worker (each has its own snapshot, for its own upstream pools).
    proxies: Vec<Arc<proxy::Proxy>>,
    /// Where the auth listener was bound (for an `auth.public_url` with port 0).
    auth_addr: Option<SocketAddr>,
}

/// What a reload swaps: every proxy worker's snapshot and the one the admin and auth listeners
/// share; what it keeps: the store, the counters and the token cache.
pub(crate) struct Swappable {
    pub store: Arc<store::Store>,
    pub metrics: Arc<metrics::Metrics>,
    pub cache: Arc<token::TokenCache>,
    pub live: Arc<arc_swap::ArcSwap<proxy::Snapshot>>,
    pub proxies: Vec<Arc<proxy::Proxy>>,
    pub auth_addr: Option<SocketAddr>,
}

/// What a reload cannot change: listeners, workers, the store, the auth listener.
fn restart_only(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |changed: bool, key: &str| {
        if changed {
            out.push(format!(
                "{key}: changed; restart the process to apply it (nothing was reloaded)"
            ));
        }
    };
    check(old.proxy.listen != new.proxy.listen, "proxy.listen");
    check(old.proxy.workers != new.proxy.workers, "proxy.workers");
    check(
        old.proxy.worker_scheduling != new.proxy.worker_scheduling,
        "proxy.worker_scheduling",
    );
    check(old.proxy.tls != new.proxy.tls, "proxy.tls");
    check(old.admin.listen != new.admin.listen, "admin.listen");
    check(old.admin.tls != new.admin.tls, "admin.tls");
    let auth = |c: &Config| {
        c.auth
            .as_ref()
            .map(|a| (a.listen, a.public_url.clone(), a.ticket_ttl, a.tls.clone()))
    };
    check(auth(old) != auth(new), "auth");
    check(
        std::mem::discriminant(&old.store) != std::mem::discriminant(&new.store),
        "store.kind",
    );
    check(
        old.mock_provider.as_ref().map(|m| m.listen)
            != new.mock_provider.as_ref().map(|m| m.listen),
        "mock_provider.listen",
    );
    out
}

impl Reloader {
    /// `config` is the one in force; `path` the file a reload reads again.
    pub(crate) fn new(
        path: Option<std::path::PathBuf>,
        config: Arc<Config>,
        parts: Swappable,
    ) -> Reloader {
        Reloader {
            path,
            current: std::sync::Mutex::new(config),
            store: parts.store,
            metrics: parts.metrics,
            cache: parts.cache,
            live: parts.live,
            proxies: parts.proxies,
            auth_addr: parts.auth_addr,
        }
    }

    /// Reads the config file again and applies it.
    pub fn reload_from_file(&self) -> Result<String, Vec<String>> {
        let Some(path) = &self.path else {
            return Err(vec![
                "no config file to read again (started without one)".into()
            ]);
        };
        match Config::load_with(path, &self.env(path)) {
            Ok(c) => self.apply(c),
            Err(e) => {
                self.metrics.reload(false);
                Err(e.0.iter().map(|e| e.to_string()).collect())
            }
        }
    }

    /// The config file a reload reads.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// The store the running config uses (`${store:NAME}` is read from it on a reload).
    pub fn store(&self) -> &Arc<store::Store> {
        &self.store
    }

    /// What a reload would load: the config file with its `profiles_dir`, with `env`'s stand-ins
    /// (the profile form's), checked and not applied.
    pub fn load(&self, env: Option<crate::config::Env>) -> Result<Config, Vec<String>> {
        let Some(path) = &self.path else {
            return Err(vec![
                "no config file to read again (started without one)".into()
            ]);
        };
        let env = env.unwrap_or_else(|| self.env(path));
        Config::load_with(path, &env).map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    /// The environment of a reload: the process's, with the running store for `${store:NAME}`.
    pub fn env(&self, path: &std::path::Path) -> crate::config::Env {
        crate::config::Env::for_file(path).with_store(self.store.clone())
    }

    /// Applies `config`: new snapshots for every worker and the admin/auth listeners, swapped at
    /// once; requests in flight finish on the snapshot they started with. Cached tokens stay for
    /// profiles whose OAuth settings did not change (their cache keys are the same); changed
    /// profiles get new tokens.
    pub fn apply(&self, mut config: Config) -> Result<String, Vec<String>> {
        resolve_public_url(&mut config, self.auth_addr);
        let Ok(mut current) = self.current.lock() else {
            return Err(vec!["a reload is already failing; restart".into()]);
        };
        let refused = restart_only(&current, &config);
        if !refused.is_empty() {
            self.metrics.reload(false);
            return Err(refused);
        }
        let config = Arc::new(config);
        let build = || {
            proxy::Snapshot::build(config.clone(), self.store.clone(), self.metrics.clone())
                .map(Arc::new)
        };
        let mut worker_snapshots = Vec::with_capacity(self.proxies.len());
        for _ in &self.proxies {
            match build() {
                Ok(s) => worker_snapshots.push(s),
                Err(e) => {
                    self.metrics.reload(false);
                    return Err(vec![e]);
                }
            }
        }
        let main = match build() {
            Ok(s) => s,
            Err(e) => {
                self.metrics.reload(false);
                return Err(vec![e]);
            }
        };
        for (p, s) in self.proxies.iter().zip(worker_snapshots) {
            p.swap(s);
        }
        // Tokens of removed profiles, or of profiles whose token settings changed, are dropped;
        // the others stay cached (same key).
        let dropped = self.cache.retain(|k| main.has_token_key(k));
        self.live.store(main);
        // Discovery documents are read again on every reload (a document that was read stays in
        // use if the new read fails).
        crate::oauth::discovery::refresh_all();
        record_cert_expiry(&self.metrics, &config);
        for w in &config.warnings {
            tracing::warn!("config: {w}");
        }
        let summary = format!(
            "reloaded: {} routes, {} profiles, {} cached tokens dropped",
            config.routes.len(),
            config.profiles.len(),
            dropped
        );
        *current = config;
        self.metrics.reload(true);
        tracing::info!("{summary}");
        Ok(summary)
    }
}

/// SIGHUP: reads the config file again (when there is one) and re-reads every certificate and key.
#[cfg(unix)]
pub(crate) fn reload_on_sighup(reloader: Arc<Reloader>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let r = reloader.clone();
            match tokio::task::spawn_blocking(move || r.reload_from_file()).await {
                Ok(Ok(summary)) => tracing::info!("SIGHUP: {summary}"),
                Ok(Err(errors)) => {
                    for e in errors {
                        tracing::warn!("SIGHUP: config not reloaded: {e}");
                    }
                }
                Err(_) => {}
            }
            let (n, errors) = crate::tls::reload_all(true);
            tracing::info!(
                reloaded = n,
                failed = errors.len(),
                "SIGHUP: certificates re-read"
            );
        }
    });
}

/// An `auth.public_url` whose port is 0 stands for the auth listener's own port: with `listen` on
/// port 0 (tests, several instances on one host) the links and the callback carry the port the
/// listener was given, so nothing has to choose a free port before the start.
pub(crate) fn resolve_public_url(config: &mut Config, auth_addr: Option<SocketAddr>) {
    let (Some(a), Some(bound)) = (config.auth.as_mut(), auth_addr) else {
        return;
    };
    if let Some(url) = with_port_for_zero(&a.public_url, bound.port()) {
        a.public_url = url;
    }
}

/// `url` with `port` in place of an explicit port 0; None when its port is not 0.
fn with_port_for_zero(url: &str, port: u16) -> Option<String> {
    if url.parse::<http::Uri>().ok()?.port_u16() != Some(0) {
        return None;
    }
    let host_at = url.find("://")? + 3;
    let rest = &url[host_at..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (host, _) = rest[..authority_end].rsplit_once(':')?;
    Some(format!(
        "{}{host}:{port}{}",
        &url[..host_at],
        &rest[authority_end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::with_port_for_zero;

    #[test]
    fn a_public_url_with_port_0_takes_the_listeners_port() {
        let cases = [
            ("http://127.0.0.1:0", Some("http://127.0.0.1:41234")),
            (
                "https://auth.example.com:0/sidecar",
                Some("https://auth.example.com:41234/sidecar"),
            ),
            ("http://[::1]:0", Some("http://[::1]:41234")),
            ("http://127.0.0.1:8080", None),
            ("https://auth.example.com", None),
        ];
        for (url, want) in cases {
            assert_eq!(with_port_for_zero(url, 41234).as_deref(), want, "{url}");
        }
    }
}
