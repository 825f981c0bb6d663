//! Forwarding: streamed bodies, redirects passed back, HTTP/2, upstream failures, graceful shutdown.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::*;

const ROUTE: &str = r#"
[[routes]]
prefix = "/e/"
upstream = "http://{echo}/echo/base/"
profiles = ["k"]
timeout = "400ms"

[[routes]]
prefix = "/e/deeper/"
upstream = "http://{echo}/echo/deep/"
profiles = ["k"]

[profiles.k]
type = "api_key"
api_key = "kk"
[[profiles.k.fields]]
in = "header"
key = "X-Key"
value = "{{api_key}}"
"#;

#[tokio::test]
async fn longest_prefix_wins_and_the_rest_of_the_path_is_appended() {
    let h = Harness::start(ROUTE).await;
    assert_eq!(
        get(&h.url("/e/a/b"), &[]).await.json()["path"],
        "/echo/base/a/b"
    );
    assert_eq!(
        get(&h.url("/e/deeper/c"), &[]).await.json()["path"],
        "/echo/deep/c"
    );
}

#[tokio::test]
async fn streamed_body_arrives_unchanged() {
    let h = Harness::start(ROUTE).await;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let r = send(
        Method::PUT,
        &h.url("/e/up"),
        &[("content-type", "application/octet-stream")],
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 200);
    use base64::Engine;
    let echoed = base64::engine::general_purpose::STANDARD
        .decode(r.json()["body_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(echoed, body);
}

#[tokio::test]
async fn redirects_are_passed_back_not_followed() {
    // A26: no status makes the sidecar follow a redirect, 307/308 (which would re-send the body and
    // the credential) included.
    let h = Harness::start(ROUTE).await;
    for (i, status) in ["301", "302", "303", "307", "308"].into_iter().enumerate() {
        let r = get(
            &h.url("/e/r"),
            &[
                ("X-Mock-Status", status),
                ("X-Mock-Location", "http://elsewhere.example/"),
            ],
        )
        .await;
        assert_eq!(r.status.as_str(), status);
        assert_eq!(r.headers["location"], "http://elsewhere.example/");
        assert_eq!(h.echo.echo_count(), i as u64 + 1);
    }
}

#[tokio::test]
async fn http2_cleartext_is_served() {
    let h = Harness::start(ROUTE).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = Request::get(h.url("/e/two"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["path"], "/echo/base/two");
    let key: Vec<_> = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == "x-key")
        .collect();
    assert_eq!(key.len(), 1);
}

#[tokio::test]
async fn upstream_refusing_connections_is_upstream_unavailable() {
    // A port held by a socket that never listens: connections are refused.
    let up = refused();
    let h =
        Harness::start(&ROUTE.replace("http://{echo}/echo/base/", &format!("http://{}/", up.addr)))
            .await;
    let r = get(&h.url("/e/x"), &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (502, "upstream_unavailable")
    );
    assert_eq!(r.json()["error"]["profile"], "k");
}

#[tokio::test]
async fn slow_upstream_is_upstream_timeout() {
    let h = Harness::start(ROUTE).await;
    let started = Instant::now();
    let r = get(&h.url("/e/slow"), &[("X-Mock-Delay-Ms", "3000")]).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (504, "upstream_timeout")
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let h = Harness::start(&ROUTE.replace("timeout = \"400ms\"", "timeout = \"10s\"")).await;
    let url = h.url("/e/slow");
    let in_flight = tokio::spawn(async move { get(&url, &[("X-Mock-Delay-Ms", "600")]).await });
    wait_until(
        "the request to reach the upstream",
        Duration::from_secs(5),
        || async { h.echo.echo_count() > 0 },
    )
    .await;
    let addr = h.server.proxy_addr;
    let drained = h.server.shutdown().await;
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request completed");
    assert!(drained);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// Names that differ from a control, hop-by-hop or framing header only by `_` for `-` are dropped
/// on both request paths (a GET takes the fast path, a POST the general one); other names with `_`
/// pass.
#[tokio::test]
async fn underscore_lookalikes_of_control_and_framing_headers_are_dropped() {
    let h = Harness::start(ROUTE).await;
    for (method, body) in [("GET", ""), ("POST", "x=1")] {
        let req = format!(
            "{method} /e/u HTTP/1.1\r\nHost: x\r\nX_Authsidecar_User: mallory\r\nx_authsidecar_profile: k\r\nTransfer_Encoding: chunked\r\nContent_Length: 9\r\nX_Key: forged\r\nKeep_Alive: 1\r\nX_Trace_Id: t-1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let answer = raw(h.server.proxy_addr, req.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{method}: {answer}");
        let json = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let names: Vec<String> = v["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h[0].as_str().unwrap().to_ascii_lowercase())
            .collect();
        for gone in [
            "x_authsidecar_user",
            "x_authsidecar_profile",
            "transfer_encoding",
            "content_length",
            "keep_alive",
        ] {
            assert!(
                !names.iter().any(|n| n == gone),
                "{method}: {gone} in {names:?}"
            );
        }
        assert!(
            names.iter().any(|n| n == "x_trace_id"),
            "{method}: {names:?}"
        );
        assert!(!answer.contains("forged"), "{method}: {answer}");
    }
}
