//! authsidecar: a reverse-proxy sidecar that injects authorization into outgoing HTTP calls.
//!
//! Data flows one way (DESIGN.md §10): `config` turns TOML into a validated [`config::Config`]; `lib`
//! (this file) is the only place that wires listeners together; `proxy` runs the request path and
//! calls `inject` (the placement engine), which uses `credential` (values per profile type). `admin`
//! and `mock` are the other two listeners. `secret`, `error`, `template` and `tls` are leaves.

pub mod admin;
pub mod auth;
pub mod config;
pub mod credential;
pub mod egress;
pub mod error;
pub mod fuzzing;
pub mod http_util;
pub mod inject;
pub mod logging;
pub mod metrics;
pub mod mock;
pub mod oauth;
pub mod proxy;
pub mod redact;
pub mod secret;
pub mod serve;
pub mod sign;
pub mod store;
pub mod template;
pub mod tls;
pub mod token;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;

use config::Config;
use serve::{Limits, Shutdown};

#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("upstream TLS setup: {0}")]
    Tls(String),
    #[error("{0}")]
    Store(#[from] store::StoreError),
}

/// A running sidecar: its listeners' addresses and the handle to stop it.
pub struct Server {
    stats: Arc<proxy::ProxyStats>,
    pub proxy_addr: SocketAddr,
    pub auth_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub mock_addr: Option<SocketAddr>,
    shutdown: Shutdown,
    drain_timeout: Duration,
    /// Stops the store's event listener (Redis pub/sub thread).
    events_stop: Arc<std::sync::atomic::AtomicBool>,
    reloader: Arc<Reloader>,
}

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
    /// Reads the config file again and applies it.
    pub fn reload_from_file(&self) -> Result<String, Vec<String>> {
        let Some(path) = &self.path else {
            return Err(vec![
                "no config file to read again (started without one)".into()
            ]);
        };
        match Config::load(path) {
            Ok(c) => self.apply(c),
            Err(e) => {
                self.metrics.reload(false);
                Err(e.0.iter().map(|e| e.to_string()).collect())
            }
        }
    }

    /// Applies `config`: new snapshots for every worker and the admin/auth listeners, swapped at
    /// once; requests in flight finish on the snapshot they started with. Cached tokens stay for
    /// profiles whose OAuth settings did not change (their cache keys are the same); changed
    /// profiles get new tokens.
    pub fn apply(&self, config: Config) -> Result<String, Vec<String>> {
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

/// A listening socket with SO_REUSEPORT, so every proxy worker can have its own on one address.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    listener.into_std()
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

impl Server {
    /// Binds every listener and starts serving. Listeners on port 0 get a free port; the chosen
    /// addresses are in the returned [`Server`].
    pub async fn start(config: Config) -> Result<Server, StartError> {
        Self::start_with_path(config, None).await
    }

    /// Like [`Server::start`]; `path` is the config file a reload (SIGHUP, `POST /admin/reload`)
    /// reads again.
    pub async fn start_with_path(
        config: Config,
        path: Option<std::path::PathBuf>,
    ) -> Result<Server, StartError> {
        let config = Arc::new(config);
        let shutdown = Shutdown::new();
        let ready = Arc::new(AtomicBool::new(false));

        let mock_addr = match &config.mock_provider {
            Some(m) => {
                let l = bind("mock provider", m.listen).await?;
                let local = l.local_addr().unwrap_or(m.listen);
                let settings = mock::MockSettings {
                    clients: vec![(m.client_id.clone(), m.client_secret.expose().to_string())],
                    users: vec![(m.username.clone(), m.password.expose().to_string())],
                    token_lifetime: m.token_lifetime,
                    ..mock::MockSettings::default()
                };
                let state = Arc::new(mock::MockState::new(settings));
                state.set_issuer(format!("http://{local}"));
                mock::spawn(l, state, shutdown.subscribe());
                Some(local)
            }
            None => None,
        };

        let (store, cache) = match &config.store {
            config::StoreConfig::Memory => {
                (Arc::new(store::Store::memory()), token::TokenCache::new())
            }
            config::StoreConfig::File {
                path,
                key,
                previous_key,
            } => {
                let (path, key, previous) = (path.clone(), *key, *previous_key);
                let store = Arc::new(
                    tokio::task::spawn_blocking(move || {
                        store::Store::open_file(&path, key, previous)
                    })
                    .await
                    .map_err(|e| store::StoreError::Io(e.to_string()))??,
                );
                let cache =
                    token::TokenCache::with_persist(Arc::new(token::StorePersist(store.clone())));
                (store, cache)
            }
            config::StoreConfig::Redis {
                urls,
                cluster,
                prefix,
                key,
                previous_key,
                timeout,
            } => {
                let urls: Vec<&str> = urls.iter().map(|u| u.expose()).collect();
                let store = Arc::new(store::Store::open_redis(
                    &urls,
                    *cluster,
                    prefix,
                    *key,
                    *previous_key,
                    *timeout,
                )?);
                if let Err(e) = store.ping() {
                    tracing::warn!("store: Redis is not reachable yet ({e}); requests that need it get token_store_unavailable until it is");
                }
                let cache =
                    token::TokenCache::with_persist(Arc::new(token::StorePersist(store.clone())));
                (store, cache)
            }
        };
        let cache = cache.with_max_entries(config.proxy.max_cached_tokens);
        let metrics = metrics::Metrics::new();
        let snapshot = Arc::new(
            proxy::Snapshot::build(config.clone(), store.clone(), metrics.clone())
                .map_err(StartError::Tls)?,
        );
        // Replicas tell each other to forget cached tokens (revocations, refused refreshes).
        let events_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if store.shared().is_some() {
            let (store, snapshot, cache, stop) = (
                store.clone(),
                snapshot.clone(),
                cache.clone(),
                events_stop.clone(),
            );
            let _ = std::thread::Builder::new()
                .name("authsidecar-events".into())
                .spawn(move || {
                    let Some(r) = store.shared() else {
                        return;
                    };
                    r.subscribe(
                        |msg| {
                            let Some((profile, tenant, user)) =
                                oauth::grants::parse_invalidation(msg)
                            else {
                                return;
                            };
                            if let Some((name, o)) = snapshot
                                .profiles
                                .get_key_value(profile)
                                .and_then(|(n, p)| p.oauth.as_ref().map(|o| (n, o)))
                            {
                                if cache.remove(&o.key(name, tenant, user)) {
                                    tracing::debug!(
                                        profile,
                                        "cached token dropped (another replica)"
                                    );
                                }
                            }
                        },
                        || stop.load(Ordering::Relaxed),
                    );
                });
        }
        // Login tickets and authorization states expire unread when users never finish: sweep
        // them every few minutes so the store does not grow.
        if config.auth.is_some() {
            let (store, mut stop) = (store.clone(), shutdown.subscribe());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(300));
                loop {
                    tokio::select! {
                        _ = every.tick() => {}
                        _ = stop.changed() => break,
                    }
                    let s = store.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        let _ = s.sweep("ticket:");
                        let _ = s.sweep("state:");
                        let _ = s.sweep("attempts:");
                    })
                    .await;
                }
            });
        }
        let server_tls = |t: &Option<config::ServerTls>| {
            t.as_ref()
                .map(tls::server_config)
                .transpose()
                .map_err(StartError::Tls)
        };
        let (proxy_tls, auth_tls, admin_tls) = (
            server_tls(&config.proxy.tls)?,
            server_tls(&config.auth.as_ref().and_then(|a| a.tls.clone()))?,
            server_tls(&config.admin.tls)?,
        );
        // Certificates changed on disk are picked up within CERT_CHECK_INTERVAL (and at once on
        // SIGHUP or POST /admin/certificates/reload).
        let mut cert_rx = shutdown.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CERT_CHECK_INTERVAL);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let _ = tokio::task::spawn_blocking(|| tls::reload_all(false)).await;
                    }
                    _ = cert_rx.changed() => break,
                }
            }
        });
        let stats = Arc::new(proxy::ProxyStats::default());
        let proxy_gate = serve::ConnGate::new(config.proxy.max_connections);
        metrics.add_source(Arc::new(Counted {
            cache: cache.clone(),
            store: store.clone(),
            stats: stats.clone(),
            gate: proxy_gate.clone(),
        }));
        record_cert_expiry(&metrics, &config);
        let limits = Limits {
            header_read_timeout: config.proxy.header_read_timeout,
            idle_timeout: config.proxy.idle_timeout,
            max_headers: config.proxy.max_headers,
            max_head_bytes: config.proxy.max_header_bytes,
            gate: Some(proxy_gate.clone()),
            half_close: true,
        };
        // Thread per core, like nginx's workers: each worker has its own single-threaded event
        // loop, its own listening socket on the same address (SO_REUSEPORT: the kernel spreads
        // connections) and its own upstream pool, so a request never crosses threads. The token
        // cache and counters are shared.
        let first = reuseport_listener(config.proxy.listen).map_err(|source| StartError::Bind {
            what: "proxy",
            addr: config.proxy.listen,
            source,
        })?;
        let proxy_addr = first.local_addr().unwrap_or(config.proxy.listen);
        let mut listener = Some(first);
        let live = Arc::new(arc_swap::ArcSwap::new(snapshot.clone()));
        let mut proxies = Vec::with_capacity(config.proxy.workers);
        for i in 0..config.proxy.workers {
            let l = match listener.take() {
                Some(l) => l,
                None => reuseport_listener(proxy_addr).map_err(|source| StartError::Bind {
                    what: "proxy",
                    addr: proxy_addr,
                    source,
                })?,
            };
            let worker_snapshot = if i == 0 {
                snapshot.clone()
            } else {
                Arc::new(
                    proxy::Snapshot::build(config.clone(), store.clone(), metrics.clone())
                        .map_err(StartError::Tls)?,
                )
            };
            let proxy = proxy::Proxy::new(worker_snapshot, cache.clone(), stats.clone());
            proxies.push(proxy.clone());
            let rx = shutdown.subscribe();
            let tls = proxy_tls.clone();
            let limits = limits.clone();
            std::thread::Builder::new()
                .name(format!("authsidecar-w{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::error!(error = %e, "proxy worker could not start");
                            return;
                        }
                    };
                    rt.block_on(async move {
                        let listener = match TcpListener::from_std(l) {
                            Ok(l) => l,
                            Err(e) => {
                                tracing::error!(error = %e, "proxy worker could not listen");
                                return;
                            }
                        };
                        serve::serve(listener, limits, tls, rx, move |c| proxy.handler(c)).await;
                    });
                })
                .map_err(|source| StartError::Bind {
                    what: "proxy worker thread",
                    addr: proxy_addr,
                    source,
                })?;
        }

        let auth_addr = match &config.auth {
            Some(a) => {
                let l = bind("auth", a.listen).await?;
                let local = l.local_addr().unwrap_or(a.listen);
                let auth = auth::Auth::new(live.clone(), a.clone());
                // The auth listener faces end users' browsers: same limits, its own cap.
                let auth_limits = Limits {
                    gate: Some(serve::ConnGate::new(config.proxy.max_connections)),
                    half_close: false,
                    ..limits.clone()
                };
                tokio::spawn(serve::serve(
                    l,
                    auth_limits,
                    auth_tls,
                    shutdown.subscribe(),
                    move |c| auth.handler(c),
                ));
                Some(local)
            }
            None => None,
        };
        let reloader = Arc::new(Reloader {
            path,
            current: std::sync::Mutex::new(config.clone()),
            store: store.clone(),
            metrics: metrics.clone(),
            cache: cache.clone(),
            live: live.clone(),
            proxies,
        });
        let reload_fn: admin::ReloadFn = {
            let r = reloader.clone();
            Arc::new(move || r.reload_from_file())
        };
        let admin = admin::Admin::new(live, cache, ready.clone(), Some(reload_fn));
        let al = bind("admin", config.admin.listen).await?;
        let admin_addr = al.local_addr().unwrap_or(config.admin.listen);
        let admin_limits = Limits {
            gate: Some(serve::ConnGate::new(ADMIN_MAX_CONNECTIONS)),
            half_close: false,
            ..limits
        };
        tokio::spawn(serve::serve(
            al,
            admin_limits,
            admin_tls,
            shutdown.subscribe(),
            move |c| admin.handler(c),
        ));

        for w in &config.warnings {
            tracing::warn!("config: {w}");
        }
        ready.store(true, Ordering::Release);
        tracing::info!(%proxy_addr, %admin_addr, auth_addr = ?auth_addr, mock = ?mock_addr, routes = config.routes.len(), profiles = config.profiles.len(), "authsidecar started");
        Ok(Server {
            stats,
            proxy_addr,
            auth_addr,
            admin_addr,
            mock_addr,
            shutdown,
            drain_timeout: config.proxy.drain_timeout,
            events_stop,
            reloader,
        })
    }

    /// Applies a new config now (what `POST /admin/reload` and SIGHUP do with the file).
    pub fn reload(&self, config: Config) -> Result<String, Vec<String>> {
        self.reloader.apply(config)
    }

    /// Counters of the request path (replays, …).
    pub fn proxy_stats(&self) -> &proxy::ProxyStats {
        &self.stats
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout). Returns false when
    /// some connections were still open at the deadline.
    pub async fn shutdown(self) -> bool {
        self.events_stop.store(true, Ordering::Relaxed);
        self.shutdown.drain(self.drain_timeout).await
    }
}

/// Counters kept elsewhere, read at scrape time.
/// Connection cap of the admin listener (it serves operators and scrapers, not traffic).
const ADMIN_MAX_CONNECTIONS: usize = 256;

struct Counted {
    cache: Arc<token::TokenCache>,
    store: Arc<store::Store>,
    stats: Arc<proxy::ProxyStats>,
    gate: Arc<serve::ConnGate>,
}

impl metrics::Source for Counted {
    fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        let c = &self.cache.stats;
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        vec![
            (
                "token_cache_hits",
                "Token cache lookups answered from the cache",
                g(&c.hits),
            ),
            (
                "token_cache_misses",
                "Token cache lookups that needed a fetch",
                g(&c.misses),
            ),
            (
                "token_early_refreshes",
                "Background refreshes started before expiry",
                g(&c.early_refreshes),
            ),
            (
                "token_fetches",
                "Fetches started by the cache (one per single flight)",
                g(&c.fetches),
            ),
            (
                "token_fetch_failures",
                "Fetches that failed",
                g(&c.fetch_failures),
            ),
            (
                "single_flight_waiters",
                "Requests that waited for a fetch another request started",
                g(&c.waiters),
            ),
            (
                "token_cache_evictions",
                "Keys dropped because the cache held proxy.max_cached_tokens",
                g(&c.evictions),
            ),
            (
                "token_backoff_rejections",
                "Requests refused while a key backs off after failures",
                g(&c.backoff_rejections),
            ),
            (
                "upstream_replays",
                "Requests replayed once after the upstream refused the token",
                g(&self.stats.replays),
            ),
            (
                "upstream_replays_skipped",
                "Refusals passed through because the body could not be replayed",
                g(&self.stats.replays_skipped),
            ),
            (
                "upstream_replays_too_young",
                "Refusals passed through because the token was younger than reauth_min_token_age",
                g(&self.stats.reauth_too_young),
            ),
            (
                "store_errors",
                "Failed calls to the token store",
                self.store.errors(),
            ),
            (
                "connections_refused",
                "Proxy connections closed at accept because max_connections were open",
                self.gate.refused(),
            ),
        ]
    }
}

/// Sets `cert_expiry_seconds` for every configured certificate.
pub fn record_cert_expiry(metrics: &metrics::Metrics, config: &Config) {
    let mut files = Vec::new();
    for t in [
        config.proxy.tls.as_ref(),
        config.admin.tls.as_ref(),
        config.auth.as_ref().and_then(|a| a.tls.as_ref()),
    ]
    .into_iter()
    .flatten()
    {
        files.push(t.cert.clone());
    }
    for r in &config.routes {
        files.extend(r.tls.client_cert.clone());
    }
    for p in config.profiles.values() {
        if let Some(o) = p.kind.oauth() {
            files.extend(o.tls.client_cert.clone());
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for f in files {
        let end = std::fs::read(&f).ok().and_then(|pem| {
            let leaf = rustls_pemfile::certs(&mut pem.as_slice()).next()?.ok()?;
            tls::not_after(&leaf)
        });
        if let Some(end) = end {
            metrics.cert_expiry(&f.display().to_string(), end - now);
        }
    }
}

/// How often certificate and key files are checked for changes.
pub const CERT_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs until SIGINT or SIGTERM, then drains. SIGHUP reloads the config file (when `path` is
/// given) and re-reads every certificate and key.
pub async fn run(config: Config, path: Option<std::path::PathBuf>) -> Result<(), StartError> {
    let server = Server::start_with_path(config, path).await?;
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            let reloader = server.reloader.clone();
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
                    let (n, errors) = tls::reload_all(true);
                    tracing::info!(
                        reloaded = n,
                        failed = errors.len(),
                        "SIGHUP: certificates re-read"
                    );
                }
            });
        }
    }
    wait_for_signal().await;
    tracing::info!("shutting down: letting in-flight requests finish");
    if !server.shutdown().await {
        tracing::warn!("drain timeout reached with connections still open");
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
