//! A small load generator for `bench/compare.sh`: what wrk cannot do.

//!
//! ```text
//! loadgen rate  --url URL --rps 1000 --seconds 10 [--connections 32]   # open loop, fixed rate
//! loadgen burst --url URL --n 1000                                     # n concurrent requests
//! loadgen keys  --url URL --n 100000 [--concurrency 64]                # distinct tenants t{i}
//! loadgen idle  --addr HOST:PORT --n 10000 --hold 10                   # idle keep-alive connections
//! loadgen users --url URL --n 10000 [--concurrency 64] [--from 0]     # end users u{from+i} log in, then call
//! loadgen slowloris --addr HOST:PORT --n 1000 --every 5 --seconds 30   # heads trickled 1 byte at a time
//! ```
//! Each prints one JSON object on stdout. Latencies are measured from the scheduled send time (open
//! loop), so a stalled server shows up as latency, not as a lower rate.

// A benchmark tool: a panic ends the run with a message, which is what we want.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(args: &[String], name: &str, default: u64) -> u64 {
    arg(args, name)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn client(max_idle: usize) -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max_idle)
        .build_http()
}

async fn one(c: &Client<HttpConnector, Full<Bytes>>, url: &str) -> Option<u16> {
    one_with(c, url, None).await
}

async fn one_with(
    c: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    tenant: Option<&str>,
) -> Option<u16> {
    let mut b = Request::get(url);
    if let Some(t) = tenant {
        b = b.header("x-authsidecar-tenant", t);
    }
    let req = b.body(Full::new(Bytes::new())).ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(30), c.request(req))
        .await
        .ok()?
        .ok()?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await.ok()?;
    Some(status)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn rate(url: String, rps: u64, seconds: u64, conns: usize) {
    let c = client(conns);
    let lat = Arc::new(Mutex::new(Vec::with_capacity((rps * seconds) as usize)));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let total = rps * seconds;
    let interval = Duration::from_secs_f64(1.0 / rps as f64);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (c, url, lat, errors) = (c.clone(), url.clone(), lat.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            match one(&c, &url).await {
                Some(s) if s < 400 => lat
                    .lock()
                    .unwrap()
                    .push(due.elapsed().as_secs_f64() * 1000.0),
                _ => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut l = lat.lock().unwrap().clone();
    l.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{{\"mode\":\"rate\",\"rps\":{rps},\"sent\":{total},\"ok\":{},\"errors\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3},\"achieved_rps\":{:.1}}}",
        l.len(),
        errors.load(Ordering::Relaxed),
        pct(&l, 0.5),
        pct(&l, 0.99),
        pct(&l, 0.999),
        l.last().copied().unwrap_or(0.0),
        total as f64 / start.elapsed().as_secs_f64()
    );
}

async fn burst(url: String, n: usize) {
    let c = client(0);
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { one(&c, &url).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if matches!(t.await, Ok(Some(s)) if s < 400) {
            ok += 1;
        }
    }
    println!(
        "{{\"mode\":\"burst\",\"n\":{n},\"ok\":{ok},\"elapsed_ms\":{:.1}}}",
        start.elapsed().as_secs_f64() * 1000.0
    );
}

/// Runs `job(i)` for i in 0..n on `concurrency` workers; prints `{"mode","n","ok","elapsed_ms"}`
/// where `ok` counts the jobs that returned true.
async fn spread<F, Fut>(mode: &str, n: u64, concurrency: u64, job: F)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, ok, job) = (next.clone(), ok.clone(), job.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    if job(i).await {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    println!(
        "{{\"mode\":\"{mode}\",\"n\":{n},\"ok\":{},\"elapsed_ms\":{:.1}}}",
        ok.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64() * 1000.0
    );
}

async fn keys(url: String, n: u64, concurrency: u64) {
    let c = client(concurrency as usize);
    spread("keys", n, concurrency, move |i| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            // Each request names its own tenant, so each needs its own cached token.
            let tenant = format!("t{i}");
            matches!(one_with(&c, &url, Some(&tenant)).await, Some(s) if s < 400)
        }
    })
    .await
}

/// GET `url` (absolute), optionally as end user `user`; returns the status, the Location header and
/// the body.
async fn fetch(
    c: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    user: Option<&str>,
) -> Option<(u16, Option<String>, Bytes)> {
    let mut b = Request::get(url);
    if let Some(u) = user {
        b = b.header("x-authsidecar-user", u);
    }
    let req = b.body(Full::new(Bytes::new())).ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(30), c.request(req))
        .await
        .ok()?
        .ok()?;
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, location, body))
}

/// One end user's whole first visit: the call is refused with a login link, the link is followed
/// through the start page, the (auto-approving) mock authorization endpoint and the callback, and the
/// call is repeated. True when the repeated call succeeds.
async fn log_in(c: &Client<HttpConnector, Full<Bytes>>, url: &str, user: &str) -> bool {
    let Some((401, _, body)) = fetch(c, url, Some(user)).await else {
        return false;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return false;
    };
    let Some(mut next) = v["error"]["login_url"].as_str().map(str::to_owned) else {
        return false;
    };
    // start page → IdP authorize → callback → success page
    for _ in 0..3 {
        match fetch(c, &next, None).await {
            Some((302 | 303, Some(loc), _)) => next = loc,
            Some((200, _, _)) => break,
            _ => return false,
        }
    }
    matches!(fetch(c, url, Some(user)).await, Some((s, _, _)) if s < 400)
}

async fn users(url: String, n: u64, concurrency: u64, from: u64) {
    let c = client(concurrency as usize);
    spread("users", n, concurrency, move |i| {
        let (c, url) = (c.clone(), url.clone());
        async move { log_in(&c, &url, &format!("u{}", from + i)).await }
    })
    .await
}

async fn idle(addr: String, n: usize, hold: u64, post: bool) {
    let req: &[u8] = if post {
        b"POST /__idle HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"
    } else {
        b"GET /__idle HTTP/1.1\r\nHost: x\r\n\r\n"
    };
    let mut conns = Vec::with_capacity(n);
    let mut ok = 0;
    for _ in 0..n {
        let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
            continue;
        };
        // One request each, so the connection is an idle keep-alive connection, not a fresh one.
        if s.write_all(req).await.is_err() {
            continue;
        }
        let mut buf = [0u8; 1024];
        if s.read(&mut buf).await.unwrap_or(0) > 0 {
            ok += 1;
        }
        conns.push(s);
    }
    println!("{{\"mode\":\"idle\",\"n\":{n},\"open\":{ok}}}");
    tokio::time::sleep(Duration::from_secs(hold)).await;
    drop(conns);
}

/// Slowloris: `n` connections each start a request head and send one more byte every `every`
/// seconds, for at most `seconds`. Prints how many the server closed and when (seconds after the
/// first byte: median and max), and how many were still open at the end.
async fn slowloris(addr: String, n: usize, every: u64, seconds: u64) {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
            let opened = Instant::now();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .ok()?;
            let mut buf = [0u8; 256];
            while opened.elapsed() < Duration::from_secs(seconds) {
                tokio::select! {
                    r = s.read(&mut buf) => {
                        if matches!(r, Ok(0) | Err(_)) {
                            return Some(Some(opened.elapsed().as_secs_f64()));
                        }
                    }
                    _ = tokio::time::sleep(Duration::from_secs(every)) => {
                        if s.write_all(b"a").await.is_err() {
                            return Some(Some(opened.elapsed().as_secs_f64()));
                        }
                    }
                }
            }
            Some(None)
        }));
    }
    let (mut closed, mut open, mut failed) = (Vec::new(), 0, 0);
    for t in tasks {
        match t.await {
            Ok(Some(Some(at))) => closed.push(at),
            Ok(Some(None)) => open += 1,
            _ => failed += 1,
        }
    }
    closed.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{{\"mode\":\"slowloris\",\"n\":{n},\"closed\":{},\"still_open\":{open},\"connect_failed\":{failed},\"closed_after_p50_s\":{:.2},\"closed_after_max_s\":{:.2},\"elapsed_s\":{:.1}}}",
        closed.len(),
        pct(&closed, 0.5),
        closed.last().copied().unwrap_or(0.0),
        start.elapsed().as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).cloned().unwrap_or_default();
    let url = arg(&args, "--url").unwrap_or_default();
    match mode.as_str() {
        "rate" => {
            rate(
                url,
                num(&args, "--rps", 1000),
                num(&args, "--seconds", 10),
                num(&args, "--connections", 32) as usize,
            )
            .await
        }
        "burst" => burst(url, num(&args, "--n", 1000) as usize).await,
        "keys" => {
            keys(
                url,
                num(&args, "--n", 100_000),
                num(&args, "--concurrency", 64),
            )
            .await
        }
        "users" => {
            users(
                url,
                num(&args, "--n", 10_000),
                num(&args, "--concurrency", 64),
                num(&args, "--from", 0),
            )
            .await
        }
        "idle" => {
            idle(
                arg(&args, "--addr").unwrap_or_default(),
                num(&args, "--n", 10_000) as usize,
                num(&args, "--hold", 10),
                args.iter().any(|a| a == "--post"),
            )
            .await
        }
        "slowloris" => {
            slowloris(
                arg(&args, "--addr").unwrap_or_default(),
                num(&args, "--n", 1000) as usize,
                num(&args, "--every", 5),
                num(&args, "--seconds", 30),
            )
            .await
        }
        _ => {
            eprintln!("usage: loadgen rate|burst|keys|users|idle|slowloris …");
            std::process::exit(2);
        }
    }
}
