//! authsidecar: a reverse-proxy sidecar that injects authorization into outgoing HTTP calls.
//!
//! Data flows one way (DESIGN.md §10): `config` turns TOML into a validated [`config::Config`]; `lib`
//! (this file) is the only place that wires listeners together at start-up, and `reload` applies a
//! new config to them; `proxy` runs the request path and calls `inject` (the placement engine),
//! which uses `credential` (values per profile type). `auth` and `admin` are the other two
//! listeners. `secret`, `error`, `template` and `tls` are leaves.
//!
//! Features: `mock` adds `mock`, the built-in mock provider, for tests that run it in-process;
//! `fuzzing` adds `fuzzing`, the entry points of the fuzz targets and of the differential and
//! property tests. Neither is in the default build: the tests, benchmarks and fuzz targets turn
//! them on. The `authsidecar` command always has the mock provider (`mock-provider`,
//! `[mock_provider]`): it compiles the same module itself.

pub mod admin;
pub mod auth;
pub mod config;
pub mod credential;
pub mod egress;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod http_util;
pub mod inject;
pub mod logging;
pub mod metrics;
#[cfg(feature = "mock")]
pub mod mock;
pub mod oauth;
pub mod proxy;
pub mod redact;
pub mod reload;
pub mod secret;
pub mod serve;
pub mod sign;
pub mod store;
pub mod template;
pub mod tls;
pub mod token;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;

use config::Config;
use reload::Reloader;
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
    shutdown: Shutdown,
    drain_timeout: Duration,
    /// Stops the store's event listener (Redis pub/sub thread).
    events_stop: Arc<std::sync::atomic::AtomicBool>,
    reloader: Arc<Reloader>,
    /// Its token saves are awaited on shutdown.
    cache: Arc<token::TokenCache>,
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
    /// addresses are in the returned [`Server`]. `[mock_provider]` is not started here: the
    /// `authsidecar` command starts it beside the sidecar (the library has the mock provider only
    /// with the `mock` feature).
    pub async fn start(config: Config) -> Result<Server, StartError> {
        Self::start_with_path(config, None).await
    }

    /// Like [`Server::start`]; `path` is the config file a reload (SIGHUP, `POST /admin/reload`)
    /// reads again.
    ///
    /// Start-up, in order: the auth listener's socket (first, so that a `public_url` with port 0
    /// can take its port), the store and the token cache, the first snapshot, the background
    /// tasks (replica events, expired-record sweep, certificate watch), the proxy workers, the
    /// auth listener's serving, the admin listener. Ready once all are bound.
    pub async fn start_with_path(
        config: Config,
        path: Option<std::path::PathBuf>,
    ) -> Result<Server, StartError> {
        let mut config = config;
        // The auth listener first: an `auth.public_url` with port 0 takes the port it was given.
        let auth_listener = match &config.auth {
            Some(a) => Some(bind("auth", a.listen).await?),
            None => None,
        };
        let auth_addr = match (&auth_listener, &config.auth) {
            (Some(l), Some(a)) => Some(l.local_addr().unwrap_or(a.listen)),
            _ => None,
        };
        reload::resolve_public_url(&mut config, auth_addr);
        let config = Arc::new(config);
        let shutdown = Shutdown::new();
        let ready = Arc::new(AtomicBool::new(false));

        let (store, cache) = open_store(&config).await?;
        let metrics = metrics::Metrics::new();
        let snapshot = Arc::new(
            proxy::Snapshot::build(config.clone(), store.clone(), metrics.clone())
                .map_err(StartError::Tls)?,
        );
        let tls = ListenerTls::load(&config)?;
        discovery_first_reads(&snapshot).await;
        let events_stop = follow_replica_events(&store, &snapshot, &cache);
        if config.auth.is_some() {
            sweep_expired_records(&store, &shutdown);
        }
        watch_certificates(&shutdown);
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
            gate: Some(proxy_gate),
            half_close: true,
        };
        let workers = Workers {
            config: &config,
            tls: tls.proxy,
            snapshot: &snapshot,
            store: &store,
            metrics: &metrics,
            cache: &cache,
            stats: &stats,
            limits: &limits,
            shutdown: &shutdown,
        };
        let (proxy_addr, proxies) = workers.start()?;
        let live = Arc::new(arc_swap::ArcSwap::new(snapshot));
        webhooks::Webhooks::start(live.clone(), &metrics, shutdown.subscribe());
        if let Some(l) = auth_listener {
            start_auth(&config, l, tls.auth, &live, &limits, &shutdown);
        }
        let reloader = Arc::new(Reloader::new(
            path,
            config.clone(),
            reload::Swappable {
                store,
                metrics,
                cache: cache.clone(),
                live: live.clone(),
                proxies,
                auth_addr,
            },
        ));
        let saves_of = cache.clone();
        let admin = AdminListener {
            tls: tls.admin,
            live,
            cache,
            ready: &ready,
            reloader: &reloader,
            limits,
            shutdown: &shutdown,
        };
        let admin_addr = admin.start(&config).await?;

        for w in &config.warnings {
            tracing::warn!("config: {w}");
        }
        ready.store(true, Ordering::Release);
        tracing::info!(%proxy_addr, %admin_addr, auth_addr = ?auth_addr, routes = config.routes.len(), profiles = config.profiles.len(), "authsidecar started");
        Ok(Server {
            stats,
            proxy_addr,
            auth_addr,
            admin_addr,
            shutdown,
            drain_timeout: config.proxy.drain_timeout,
            events_stop,
            reloader,
            cache: saves_of,
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
    /// some connections were still open, or some token saves unwritten, at the deadline.
    pub async fn shutdown(self) -> bool {
        self.events_stop.store(true, Ordering::Relaxed);
        let drained = self.shutdown.drain(self.drain_timeout).await;
        // Tokens fetched just before the stop are written before it returns.
        let saved = self.cache.saves_done(self.drain_timeout).await;
        drained && saved
    }
}

/// How long start-up waits for the first read of the discovery documents (in parallel): a provider
/// that answers is ready at once; one that is down does not hold the start (its profile is not
/// ready, and `/readyz` says so, until its document is read).
pub const DISCOVERY_START_WAIT: Duration = Duration::from_secs(3);

async fn discovery_first_reads(snapshot: &proxy::Snapshot) {
    let entries: Vec<_> = snapshot
        .profiles
        .values()
        .filter_map(|p| p.oauth.as_ref()?.source.as_ref()?.discovery.clone())
        .collect();
    futures_util::future::join_all(entries.iter().map(|d| d.first_read(DISCOVERY_START_WAIT)))
        .await;
}

/// `[store]`, and the token cache in front of it (which saves machine tokens in a durable store).
async fn open_store(
    config: &Config,
) -> Result<(Arc<store::Store>, Arc<token::TokenCache>), StartError> {
    let c = config.store.clone();
    let store = Arc::new(
        tokio::task::spawn_blocking(move || store::Store::open_config(&c))
            .await
            .map_err(|e| store::StoreError::Io(e.to_string()))??,
    );
    if store.shared().is_some() {
        if let Err(e) = store.ping() {
            tracing::warn!("store: Redis is not reachable yet ({e}); requests that need it get token_store_unavailable until it is");
        }
    }
    let cache = if store.is_durable() {
        token::TokenCache::with_persist(Arc::new(token::StorePersist(store.clone())))
    } else {
        token::TokenCache::new()
    };
    Ok((
        store,
        cache.with_max_entries(config.proxy.max_cached_tokens),
    ))
}

/// Replicas sharing a store tell each other to forget cached tokens (revocations, refused
/// refreshes). Returns the flag that stops the listening thread.
fn follow_replica_events(
    store: &Arc<store::Store>,
    snapshot: &Arc<proxy::Snapshot>,
    cache: &Arc<token::TokenCache>,
) -> Arc<AtomicBool> {
    let events_stop = Arc::new(AtomicBool::new(false));
    if store.shared().is_none() {
        return events_stop;
    }
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
                    let Some((profile, tenant, user)) = oauth::grants::parse_invalidation(msg)
                    else {
                        return;
                    };
                    if let Some((name, o)) = snapshot
                        .profiles
                        .get_key_value(profile)
                        .and_then(|(n, p)| p.oauth.as_ref().map(|o| (n, o)))
                    {
                        if cache.remove(&o.key(name, tenant, user)) {
                            tracing::debug!(profile, "cached token dropped (another replica)");
                        }
                    }
                },
                || stop.load(Ordering::Relaxed),
            );
        });
    events_stop
}

/// Login tickets, authorization states and Tests expire unread when users never finish: swept every
/// few minutes so the store does not grow.
fn sweep_expired_records(store: &Arc<store::Store>, shutdown: &Shutdown) {
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
                for kind in [
                    store::Kind::Ticket,
                    store::Kind::State,
                    store::Kind::Attempts,
                    store::Kind::Test,
                ] {
                    let _ = s.sweep(kind.prefix());
                }
            })
            .await;
        }
    });
}

/// Certificates changed on disk are picked up within [`CERT_CHECK_INTERVAL`] (and at once on
/// SIGHUP or `POST /admin/certificates/reload`).
fn watch_certificates(shutdown: &Shutdown) {
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
}

/// The listeners' TLS settings, loaded before any listener is bound.
struct ListenerTls {
    proxy: Option<Arc<rustls::ServerConfig>>,
    auth: Option<Arc<rustls::ServerConfig>>,
    admin: Option<Arc<rustls::ServerConfig>>,
}

impl ListenerTls {
    fn load(config: &Config) -> Result<ListenerTls, StartError> {
        let load = |t: Option<&config::ServerTls>| {
            t.map(tls::server_config)
                .transpose()
                .map_err(StartError::Tls)
        };
        Ok(ListenerTls {
            proxy: load(config.proxy.tls.as_ref())?,
            auth: load(config.auth.as_ref().and_then(|a| a.tls.as_ref()))?,
            admin: load(config.admin.tls.as_ref())?,
        })
    }
}

/// What the proxy workers are started with.
struct Workers<'a> {
    config: &'a Arc<Config>,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The first worker's snapshot (the others build their own, for their own upstream pools).
    snapshot: &'a Arc<proxy::Snapshot>,
    store: &'a Arc<store::Store>,
    metrics: &'a Arc<metrics::Metrics>,
    cache: &'a Arc<token::TokenCache>,
    stats: &'a Arc<proxy::ProxyStats>,
    limits: &'a Limits,
    shutdown: &'a Shutdown,
}

impl Workers<'_> {
    /// Thread per core, like nginx's workers: each worker has its own single-threaded event loop
    /// and its own upstream pool, so a request never crosses threads. One listening socket: the
    /// first worker accepts and hands the connections out in turn ([`serve::hand_out`]), so each
    /// worker serves the same number. The token cache and counters are shared. Returns the
    /// proxy's address and every worker.
    fn start(&self) -> Result<(SocketAddr, Vec<Arc<proxy::Proxy>>), StartError> {
        let config = self.config;
        let first = reuseport_listener(config.proxy.listen).map_err(|source| StartError::Bind {
            what: "proxy",
            addr: config.proxy.listen,
            source,
        })?;
        let proxy_addr = first.local_addr().unwrap_or(config.proxy.listen);
        let mut listener = Some(first);
        // With one worker it accepts on the socket itself; with more, the first hands out.
        let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..config.proxy.workers)
            .map(|_| tokio::sync::mpsc::unbounded_channel())
            .unzip();
        let mut txs = Some(txs);
        let mut proxies = Vec::with_capacity(config.proxy.workers);
        for i in 0..config.proxy.workers {
            let l = listener.take();
            let handed = rxs.remove(0);
            let hand_to = if config.proxy.workers > 1 {
                txs.take()
            } else {
                None
            };
            let worker_snapshot = if i == 0 {
                self.snapshot.clone()
            } else {
                Arc::new(
                    proxy::Snapshot::build(
                        config.clone(),
                        self.store.clone(),
                        self.metrics.clone(),
                    )
                    .map_err(StartError::Tls)?,
                )
            };
            let proxy = proxy::Proxy::new(worker_snapshot, self.cache.clone(), self.stats.clone());
            proxies.push(proxy.clone());
            let rx = self.shutdown.subscribe();
            let tls = self.tls.clone();
            let limits = self.limits.clone();
            let (cache, drain) = (self.cache.clone(), config.proxy.drain_timeout);
            let scheduling = config.proxy.worker_scheduling;
            std::thread::Builder::new()
                .name(format!("authsidecar-w{i}"))
                .spawn(move || {
                    match schedule_worker(scheduling) {
                        Ok(policy) => tracing::debug!(policy, "proxy worker scheduling policy"),
                        Err(e) => tracing::warn!(error = %e, "proxy.worker_scheduling: the worker keeps the scheduling policy it was started with"),
                    }
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
                        let listener = match l.map(TcpListener::from_std).transpose() {
                            Ok(l) => l,
                            Err(e) => {
                                tracing::error!(error = %e, "proxy worker could not listen");
                                return;
                            }
                        };
                        let incoming = match (listener, hand_to) {
                            (Some(l), Some(to)) => {
                                tokio::spawn(serve::hand_out(l, to, rx.clone()));
                                serve::Accepted::Handed(handed)
                            }
                            (Some(l), None) => serve::Accepted::Listener(l),
                            (None, _) => serve::Accepted::Handed(handed),
                        };
                        serve::serve(incoming, limits, tls, rx, move |c| proxy.handler(c)).await;
                        // Token saves queued on this runtime would be dropped with it.
                        cache.saves_done(drain).await;
                    });
                })
                .map_err(|source| StartError::Bind {
                    what: "proxy worker thread",
                    addr: proxy_addr,
                    source,
                })?;
        }
        Ok((proxy_addr, proxies))
    }
}

/// `[auth]`: the listener end users' browsers reach (same limits as the proxy, its own cap).
/// `l` is bound first of all, so that a `public_url` with port 0 can take its port.
fn start_auth(
    config: &Config,
    l: TcpListener,
    auth_tls: Option<Arc<rustls::ServerConfig>>,
    live: &Arc<arc_swap::ArcSwap<proxy::Snapshot>>,
    limits: &Limits,
    shutdown: &Shutdown,
) {
    let Some(a) = &config.auth else {
        return;
    };
    let auth = auth::Auth::new(live.clone(), a.clone());
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
}

/// `[admin]`: health, metrics, the admin API and console (reload goes through `reloader`).
struct AdminListener<'a> {
    tls: Option<Arc<rustls::ServerConfig>>,
    live: Arc<arc_swap::ArcSwap<proxy::Snapshot>>,
    cache: Arc<token::TokenCache>,
    ready: &'a Arc<AtomicBool>,
    reloader: &'a Arc<Reloader>,
    limits: Limits,
    shutdown: &'a Shutdown,
}

impl AdminListener<'_> {
    async fn start(self, config: &Config) -> Result<SocketAddr, StartError> {
        let admin = admin::Admin::new(
            self.live,
            self.cache,
            self.ready.clone(),
            Some(self.reloader.clone()),
        );
        let al = bind("admin", config.admin.listen).await?;
        let admin_addr = al.local_addr().unwrap_or(config.admin.listen);
        let admin_limits = Limits {
            gate: Some(serve::ConnGate::new(ADMIN_MAX_CONNECTIONS)),
            half_close: false,
            ..self.limits
        };
        tokio::spawn(serve::serve(
            al,
            admin_limits,
            self.tls,
            self.shutdown.subscribe(),
            move |c| admin.handler(c),
        ));
        Ok(admin_addr)
    }
}

/// Connection cap of the admin listener (it serves operators and scrapers, not traffic).
const ADMIN_MAX_CONNECTIONS: usize = 256;

/// Counters kept elsewhere, read at scrape time.
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
    reload::reload_on_sighup(server.reloader.clone());
    wait_for_signal().await;
    tracing::info!("shutting down: letting in-flight requests finish");
    if !server.shutdown().await {
        tracing::warn!(
            "drain timeout reached with connections still open or token saves not yet written"
        );
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

/// Applies `proxy.worker_scheduling` to the calling thread (Linux; elsewhere the setting has no
/// effect). `Batch` moves a thread that has the default policy (`SCHED_OTHER`) to `SCHED_BATCH`,
/// which needs no privilege and keeps the nice value: the thread gets the same share of the CPU,
/// but waking up (a socket became readable) does not preempt the task running on its CPU. A policy
/// the process was started with (a service manager's `CPUSchedulingPolicy`, `chrt`) is the
/// operator's and is kept, as it is with `Normal`. Threads the worker starts (its blocking pool)
/// inherit the result. Returns the policy the thread runs with.
#[allow(unsafe_code)]
fn schedule_worker(s: config::WorkerScheduling) -> std::io::Result<i32> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: system calls on the calling thread (pid 0); the parameter is valid, initialised
        // and outlives the call.
        let current = unsafe { libc::sched_getscheduler(0) };
        if current < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if s == config::WorkerScheduling::Normal || current != libc::SCHED_OTHER {
            return Ok(current);
        }
        let param = libc::sched_param { sched_priority: 0 };
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(libc::SCHED_BATCH)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = s;
        Ok(0)
    }
}
