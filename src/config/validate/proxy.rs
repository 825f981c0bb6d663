//! `[proxy]`: the proxy listener, its timeouts and limits.

use super::tls::server_tls;
use super::*;

pub(super) fn proxy_settings(p: RawProxy, v: &mut V) -> ProxySettings {
    let listen = listen_addr(
        p.listen.as_deref().unwrap_or(DEFAULT_PROXY_LISTEN),
        "proxy.listen",
        v,
    );
    let dur = |d: Option<raw::Dur>, def| d.map(|d| d.0).unwrap_or(def);
    let s = ProxySettings {
        listen: listen.unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
        header_read_timeout: dur(p.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT),
        body_read_timeout: dur(p.body_read_timeout, DEFAULT_BODY_READ_TIMEOUT),
        body_total_timeout: dur(p.body_total_timeout, DEFAULT_BODY_TOTAL_TIMEOUT),
        idle_timeout: dur(p.idle_timeout, DEFAULT_IDLE_TIMEOUT),
        connect_timeout: dur(p.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
        upstream_timeout: dur(p.upstream_timeout, DEFAULT_UPSTREAM_TIMEOUT),
        drain_timeout: dur(p.drain_timeout, DEFAULT_DRAIN_TIMEOUT),
        max_body_bytes: p.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        max_connections: p.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        max_headers: p.max_headers.unwrap_or(DEFAULT_MAX_HEADERS),
        fast_path: p.fast_path.unwrap_or(true),
        max_header_bytes: p.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES),
        max_uri_bytes: p.max_uri_bytes.unwrap_or(DEFAULT_MAX_URI_BYTES),
        max_cached_tokens: p
            .max_cached_tokens
            .unwrap_or(crate::token::DEFAULT_MAX_ENTRIES),
        trusted_proxies: p
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let net = IpNet::parse(t);
                if net.is_none() {
                    v.err(
                        &format!("proxy.trusted_proxies[{i}]"),
                        "expected an IP address or a range like 10.0.0.0/8",
                    );
                }
                net
            })
            .collect(),
        workers: p
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        tls: server_tls(p.tls, "proxy", v),
        access_log: p.access_log.unwrap_or(true),
        worker_scheduling: match p.worker_scheduling.as_deref() {
            None | Some("batch") => WorkerScheduling::Batch,
            Some("normal") => WorkerScheduling::Normal,
            Some(_) => {
                v.err(
                    "proxy.worker_scheduling",
                    "expected \"batch\" or \"normal\"",
                );
                WorkerScheduling::Batch
            }
        },
    };
    if s.workers == 0 || s.workers > 256 {
        v.err("proxy.workers", "expected 1-256 worker threads");
    }
    for (name, d) in [
        ("header_read_timeout", s.header_read_timeout),
        ("body_read_timeout", s.body_read_timeout),
        ("body_total_timeout", s.body_total_timeout),
        ("idle_timeout", s.idle_timeout),
        ("connect_timeout", s.connect_timeout),
        ("upstream_timeout", s.upstream_timeout),
    ] {
        if d.is_zero() {
            v.err(
                &format!("proxy.{name}"),
                "must be greater than zero; expected a duration like \"10s\"",
            );
        }
    }
    if s.max_body_bytes == 0 {
        v.err(
            "proxy.max_body_bytes",
            "must be greater than zero; expected a byte count like 1048576",
        );
    }
    if s.max_connections == 0 {
        v.err(
            "proxy.max_connections",
            "must be greater than zero; expected a count like 16384",
        );
    }
    if s.max_cached_tokens == 0 {
        v.err(
            "proxy.max_cached_tokens",
            "must be greater than zero; expected a count like 100000",
        );
    }
    if !(1..=1000).contains(&s.max_headers) {
        v.err("proxy.max_headers", "expected 1-1000 header fields");
    }
    if !(8192..=1024 * 1024).contains(&s.max_header_bytes) {
        v.err(
            "proxy.max_header_bytes",
            "expected 8192-1048576 bytes (the request line counts too)",
        );
    }
    if s.max_uri_bytes < 256 || s.max_uri_bytes > s.max_header_bytes {
        v.err(
            "proxy.max_uri_bytes",
            "expected at least 256 bytes and no more than proxy.max_header_bytes",
        );
    }
    s
}
