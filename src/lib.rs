//! authsidecar: a reverse-proxy sidecar that injects authorization into outgoing HTTP calls.
//!
//! Data flows one way (DESIGN.md §10): `config` turns TOML into a validated [`config::Config`]; `lib`
//! (this file) is the only place that wires listeners together; `proxy` runs the request path and
//! calls `inject` (the placement engine), which uses `credential` (values per profile type). `admin`
//! and `mock` are the other two listeners. `secret`, `error`, `template` and `tls` are leaves.

pub mod admin;
pub mod config;
pub mod credential;
pub mod error;
pub mod inject;
pub mod mock;
pub mod oauth;
pub mod proxy;
pub mod secret;
pub mod serve;
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
}

/// A running sidecar: its listeners' addresses and the handle to stop it.
pub struct Server {
    proxy: Arc<proxy::Proxy>,
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub mock_addr: Option<SocketAddr>,
    shutdown: Shutdown,
    drain_timeout: Duration,
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
                mock::spawn(
                    l,
                    Arc::new(mock::MockState::new(settings)),
                    shutdown.subscribe(),
                );
                Some(local)
            }
            None => None,
        };

        let snapshot = Arc::new(proxy::Snapshot::build(config.clone()).map_err(StartError::Tls)?);
        let cache = token::TokenCache::new();
        let proxy = proxy::Proxy::new(snapshot.clone(), cache.clone());
        let limits = Limits {
            header_read_timeout: config.proxy.header_read_timeout,
            idle_timeout: config.proxy.idle_timeout,
        };
        let pl = bind("proxy", config.proxy.listen).await?;
        let proxy_addr = pl.local_addr().unwrap_or(config.proxy.listen);
        let handler_proxy = proxy.clone();
        tokio::spawn(serve::serve(pl, limits, shutdown.subscribe(), move |c| {
            handler_proxy.handler(c)
        }));

        let admin = admin::Admin::new(snapshot, cache, ready.clone());
        let al = bind("admin", config.admin.listen).await?;
        let admin_addr = al.local_addr().unwrap_or(config.admin.listen);
        tokio::spawn(serve::serve(al, limits, shutdown.subscribe(), move |c| {
            admin.handler(c)
        }));

        for w in &config.warnings {
            tracing::warn!("config: {w}");
        }
        ready.store(true, Ordering::Release);
        tracing::info!(%proxy_addr, %admin_addr, mock = ?mock_addr, routes = config.routes.len(), profiles = config.profiles.len(), "authsidecar started");
        Ok(Server {
            proxy,
            proxy_addr,
            admin_addr,
            mock_addr,
            shutdown,
            drain_timeout: config.proxy.drain_timeout,
        })
    }

    /// Counters of the request path (replays, …).
    pub fn proxy_stats(&self) -> &proxy::ProxyStats {
        &self.proxy.stats
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout). Returns false when
    /// some connections were still open at the deadline.
    pub async fn shutdown(self) -> bool {
        self.shutdown.drain(self.drain_timeout).await
    }
}

/// Runs until SIGINT or SIGTERM, then drains.
pub async fn run(config: Config) -> Result<(), StartError> {
    let server = Server::start(config).await?;
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
