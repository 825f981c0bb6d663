//! Real TLS with certificates generated at run time: 2-way TLS to upstreams and token endpoints,
//! mTLS from service nodes, certificate rotation, and a real connector (tinyproxy).

use std::sync::Arc;
use std::time::Duration;

use authsidecar::config::{Config, Env};
use authsidecar::mock::MockProvider;
use authsidecar::Server;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::support::pki::{client_config, server_config, tls_front, Pki, Tinyproxy};
use crate::support::*;

fn load(text: &str) -> Config {
    Config::from_str_with_env(&with_listeners(text), &Env::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn p(path: &std::path::Path) -> String {
    path.display().to_string()
}

#[tokio::test]
async fn an_upstream_requiring_a_client_certificate() {
    let pki = Pki::new("upstream");
    let other = Pki::new("other");
    let mock = MockProvider::start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let server = pki.server("upstream");
    let client = pki.client("sidecar");
    let front = tls_front(mock.addr, server_config(&server, Some(&pki.ca()))).await;
    let (ca, cc, ck) = (p(&pki.ca()), p(&client.cert), p(&client.key));
    let text = format!(
        r#"
[[routes]]
prefix = "/ok/"
upstream = "https://127.0.0.1:{port}/echo/"
profiles = ["key"]
tls = {{ ca_file = "{ca}", client_cert = "{cc}", client_key = "{ck}", server_name = "localhost" }}

[[routes]]
prefix = "/nocert/"
upstream = "https://127.0.0.1:{port}/echo/"
profiles = ["key"]
tls = {{ ca_file = "{ca}", server_name = "localhost" }}

[[routes]]
prefix = "/untrusted/"
upstream = "https://127.0.0.1:{port}/echo/"
profiles = ["key"]
tls = {{ ca_file = "{other_ca}", client_cert = "{cc}", client_key = "{ck}", server_name = "localhost" }}

[[routes]]
prefix = "/wrongname/"
upstream = "https://127.0.0.1:{port}/echo/"
profiles = ["key"]
tls = {{ ca_file = "{ca}", client_cert = "{cc}", client_key = "{ck}" }}

[profiles.key]
type = "api_key"
api_key = "k-0123456789abcdef"
[[profiles.key.fields]]
in = "header"
key = "X-Api-Key"
value = "{{{{api_key}}}}"
"#,
        port = front.port(),
        other_ca = p(&other.ca()),
    );
    let s = Server::start(load(&text)).await.unwrap();
    let base = format!("http://{}", s.proxy_addr);

    let r = get(&format!("{base}/ok/x"), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.echoed("x-api-key"), ["k-0123456789abcdef"]);

    for (path, reason) in [
        ("nocert", "CertificateRequired"),
        ("untrusted", "UnknownIssuer"),
        ("wrongname", "certificate not valid for name"),
    ] {
        let r = get(&format!("{base}/{path}/x"), &[]).await;
        assert_eq!(r.status, 502, "{path}");
        assert_eq!(r.error_code(), "upstream_tls_error", "{path}");
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(reason), "{path}: {msg}");
        assert!(!msg.contains("k-0123456789abcdef"));
    }
    s.shutdown().await;
}

#[tokio::test]
async fn a_token_endpoint_behind_mtls() {
    let pki = Pki::new("idp");
    let mock = MockProvider::start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let server = pki.server("idp");
    let client = pki.client("sidecar");
    let front = tls_front(mock.addr, server_config(&server, Some(&pki.ca()))).await;
    let (ca, cc, ck) = (p(&pki.ca()), p(&client.cert), p(&client.key));
    let text = format!(
        r#"
[[routes]]
prefix = "/api/"
upstream = "http://{echo}/protected/"
profiles = ["cc", "nocert"]

[profiles.cc]
type = "oauth2_client_credentials"
token_url = "https://127.0.0.1:{port}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
tls = {{ ca_file = "{ca}", client_cert = "{cc}", client_key = "{ck}", server_name = "localhost" }}

[profiles.nocert]
type = "oauth2_client_credentials"
token_url = "https://127.0.0.1:{port}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
tls = {{ ca_file = "{ca}", server_name = "localhost" }}
"#,
        port = front.port(),
        echo = mock.addr,
    );
    let s = Server::start(load(&text)).await.unwrap();
    let url = format!("http://{}/api/x", s.proxy_addr);
    let r = get(&url, &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(mock.token_requests(), 1);
    let r = get(&url, &[("X-Authsidecar-Profile", "nocert")]).await;
    assert_eq!(r.error_code(), "idp_unavailable");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("TLS"));
    s.shutdown().await;
}

/// GET over TLS with its own connection; `Err` when the handshake or the request fails.
async fn tls_get(url: &str, tls: rustls::ClientConfig) -> Result<(u16, Bytes), String> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
        ))
        .enable_http1()
        .build();
    let c: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(https);
    let req = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), c.request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, body.to_bytes()))
}

/// The certificate the server at `addr` presents in a new handshake.
async fn presented(addr: std::net::SocketAddr, tls: rustls::ClientConfig) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let s = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn service_nodes_must_present_a_certificate_and_rotation_breaks_nothing() {
    let pki = Pki::new("listener");
    let server = pki.server("listener");
    let node = pki.client("node");
    let text = format!(
        r#"
[proxy]
tls = {{ cert = "{cert}", key = "{key}", client_ca = "{ca}" }}

[[routes]]
prefix = "/"
upstream = "http://{{echo}}/echo/"
profiles = ["key"]

[profiles.key]
type = "api_key"
api_key = "k-0123456789abcdef"
[[profiles.key.fields]]
in = "header"
key = "X-Api-Key"
value = "{{{{api_key}}}}"
"#,
        cert = p(&server.cert),
        key = p(&server.key),
        ca = p(&pki.ca()),
    );
    let h = Harness::start(&text).await;
    let url = format!("https://127.0.0.1:{}/x", h.server.proxy_addr.port());
    let with_cert = || client_config(&pki.ca(), Some(&node));

    let (status, body) = tls_get(&url, with_cert()).await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // Without a client certificate the handshake is refused: no HTTP at all, the upstream saw nothing.
    let before = h.echo.echo_count();
    assert!(tls_get(&url, client_config(&pki.ca(), None)).await.is_err());
    // Plain HTTP to a TLS listener gets nowhere either.
    let plain = raw(
        h.server.proxy_addr,
        b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(!plain.contains("HTTP/1.1 200"), "{plain}");
    assert_eq!(h.echo.echo_count(), before);

    // Rotation on disk while requests run: none fails; new connections get the new certificate.
    assert_eq!(
        presented(h.server.proxy_addr, with_cert()).await,
        server.der
    );
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let running = {
        let (url, cfg, done) = (url.clone(), with_cert(), done.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..150 {
                if let Err(e) = tls_get(&url, cfg.clone()).await {
                    failures.push(e);
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            failures
        })
    };
    wait_until(
        "the requests to be running (5 done)",
        Duration::from_secs(10),
        || async { done.load(std::sync::atomic::Ordering::SeqCst) >= 5 },
    )
    .await;
    let renewed = pki.issue_with("listener", &["localhost"], false, false);
    let r = send(
        http::Method::POST,
        &h.admin_url("/admin/certificates/reload"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["reloaded"].as_u64().unwrap() >= 1);
    let failures = running.await.unwrap();
    assert!(failures.is_empty(), "failed during rotation: {failures:?}");
    assert_eq!(
        presented(h.server.proxy_addr, with_cert()).await,
        renewed.der
    );
    assert_ne!(renewed.der, server.der);
}

#[tokio::test]
async fn certificates_are_checked_at_load() {
    let pki = Pki::new("load");
    let good = pki.server("good");
    let other = pki.server("other");
    let expired = pki.issue_with("old", &["localhost"], false, true);
    let text = format!(
        r#"
[proxy]
tls = {{ cert = "{gc}", key = "{ok}" }}

[admin]
tls = {{ cert = "{ec}", key = "{ek}" }}

[[routes]]
prefix = "/"
upstream = "https://127.0.0.1:1/"
profiles = ["none"]
tls = {{ client_cert = "{gc}" }}

[[routes]]
prefix = "/b/"
upstream = "https://127.0.0.1:1/"
profiles = ["none"]
tls = {{ ca_file = "/nonexistent/ca.pem", server_name = "not a name" }}

[profiles.none]
type = "none"
"#,
        gc = p(&good.cert),
        ok = p(&other.key),
        ec = p(&expired.cert),
        ek = p(&expired.key),
    );
    let errors = match Config::from_str_with_env(&text, &Env::default()) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    for needle in [
        "proxy.tls.cert: ",
        "does not belong to the certificate in",
        "admin.tls.cert: ",
        "the certificate has expired",
        "routes[0].tls.client_key: required with client_cert",
        "routes[1].tls.ca_file: cannot read /nonexistent/ca.pem",
        "routes[1].tls.server_name: \"not a name\" is not a valid DNS name",
    ] {
        assert!(errors.contains(needle), "{needle:?} not in:\n{errors}");
    }
    // A certificate that expires within 30 days is accepted with a warning.
    let soon = pki.issue_expiring("soon", 10);
    let text = format!(
        "[proxy]\ntls = {{ cert = \"{}\", key = \"{}\" }}\n[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1/\"\nprofiles = [\"none\"]\n[profiles.none]\ntype = \"none\"\n",
        p(&soon.cert),
        p(&soon.key)
    );
    let c = Config::from_str_with_env(&text, &Env::default()).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("proxy.tls.cert: the certificate in")
                && (w.contains("expires in 9 days") || w.contains("expires in 10 days"))),
        "{:?}",
        c.warnings
    );
    // No key material in the messages.
    let key_pem = std::fs::read_to_string(&other.key).unwrap();
    let body = key_pem.lines().nth(1).unwrap();
    assert!(!errors.contains(body));
}

#[tokio::test]
async fn a_connector_carries_https_upstream_and_idp_traffic_and_sees_no_token() {
    let pki = Pki::new("connector");
    let mock = MockProvider::start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let server = pki.server("upstream");
    let front = tls_front(mock.addr, server_config(&server, None)).await;
    let proxy = Tinyproxy::start(&pki.dir, Some(("corp", "s3cret-pw"))).await;
    // A connector that refuses connections.
    let refusing = refused();
    let dead = refusing.addr;
    // A "proxy" that accepts and closes at once.
    let closer = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((c, _)) = l.accept().await {
                drop(c);
            }
        });
        addr
    };
    let ca = p(&pki.ca());
    let text = format!(
        r#"
[connectors.corp]
url = "http://{proxy}"
username = "corp"
password = "s3cret-pw"

[connectors.badauth]
url = "http://{proxy}"
username = "corp"
password = "wrong"

[connectors.nocreds]
url = "http://{proxy}"

[connectors.down]
url = "http://{dead}"

[connectors.closer]
url = "http://{closer}"

[connectors.bypassed]
url = "http://{dead}"
no_proxy = ["127.0.0.1"]

[[routes]]
prefix = "/tls/"
upstream = "https://127.0.0.1:{port}/protected/"
profiles = ["cc"]
connector = "corp"
tls = {{ ca_file = "{ca}", server_name = "localhost" }}

[[routes]]
prefix = "/badauth/"
upstream = "https://127.0.0.1:{port}/echo/"
profiles = ["key"]
connector = "badauth"
tls = {{ ca_file = "{ca}", server_name = "localhost" }}

[[routes]]
prefix = "/nocreds/"
upstream = "https://127.0.0.1:{port}/echo/"
profiles = ["key"]
connector = "nocreds"
tls = {{ ca_file = "{ca}", server_name = "localhost" }}

[[routes]]
prefix = "/closer/"
upstream = "https://127.0.0.1:{port}/echo/"
profiles = ["key"]
connector = "closer"
tls = {{ ca_file = "{ca}", server_name = "localhost" }}

[[routes]]
prefix = "/bypassed/"
upstream = "https://127.0.0.1:{port}/echo/"
profiles = ["key"]
connector = "bypassed"
tls = {{ ca_file = "{ca}", server_name = "localhost" }}

# Plain http through the connector: absolute form (accepted with a warning).
[[routes]]
prefix = "/plain/"
upstream = "http://{mock}/echo/"
profiles = ["key"]
connector = "corp"

[[routes]]
prefix = "/plain-nocreds/"
upstream = "http://{mock}/echo/"
profiles = ["key"]
connector = "nocreds"

[[routes]]
prefix = "/down/"
upstream = "https://127.0.0.1:{port}/echo/"
profiles = ["key"]
connector = "down"
tls = {{ ca_file = "{ca}", server_name = "localhost" }}

# The IdP is reached through the connector too (a CONNECT tunnel to its https endpoint).
[profiles.cc]
type = "oauth2_client_credentials"
token_url = "https://127.0.0.1:{port}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret-0123456789"
connector = "corp"
tls = {{ ca_file = "{ca}", server_name = "localhost" }}

[profiles.key]
type = "api_key"
api_key = "k-0123456789abcdef"
[[profiles.key.fields]]
in = "header"
key = "X-Api-Key"
value = "{{{{api_key}}}}"
"#,
        proxy = proxy.addr,
        port = front.port(),
        mock = mock.addr,
    );
    mock.state
        .add_client("demo-client", "demo-secret-0123456789");
    let s = Server::start(load(&text)).await.unwrap();
    let base = format!("http://{}", s.proxy_addr);

    let r = get(&format!("{base}/tls/x"), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(mock.token_requests(), 1);

    let config = load(&text);
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("plain http:// upstream through connector corp")),
        "{:?}",
        config.warnings
    );
    let r = get(&format!("{base}/badauth/x"), &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), "egress_proxy_auth_failed");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("check its username and password"), "{msg}");
    assert!(!msg.contains("wrong"));
    let r = get(&format!("{base}/nocreds/x"), &[]).await;
    assert_eq!(r.error_code(), "egress_proxy_auth_failed");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("407 Proxy Authentication Required"), "{msg}");

    let r = get(&format!("{base}/down/x"), &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), "egress_proxy_unavailable");
    let r = get(&format!("{base}/closer/x"), &[]).await;
    assert_eq!(r.error_code(), "egress_proxy_unavailable");
    // no_proxy: the host is reached directly, the dead connector is not used.
    let r = get(&format!("{base}/bypassed/x"), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Plain http through the connector: the credential for the connector never reaches the origin.
    let r = get(&format!("{base}/plain/x?q=1"), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.echoed("x-api-key"), ["k-0123456789abcdef"]);
    assert!(r.echoed("proxy-authorization").is_empty());
    assert_eq!(r.json()["path"], "/echo/x");
    // The connector asks for credentials (407) on a plain http request: reported as the
    // connector's problem, not passed through as the origin's answer.
    let before = mock.echo_count();
    let r = get(&format!("{base}/plain-nocreds/x"), &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), "egress_proxy_auth_failed");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("connector nocreds refused its credentials (407"));
    assert_eq!(mock.echo_count(), before, "nothing reached the origin");
    s.shutdown().await;

    // The connector saw tunnels (upstream and IdP) and the plain request, never a token or a secret.
    // tinyproxy logs each request line as it reads the request; the last one it was sent is the
    // plain request without credentials: once that is in the log, every earlier one is.
    let last = format!("GET http://{}/echo/x HTTP/1.1", mock.addr);
    let log = wait_for(
        "the connector's log to show the last request it was sent",
        Duration::from_secs(10),
        || {
            let log = proxy.log_text();
            std::future::ready(if log.contains(&last) {
                Ok(log)
            } else {
                Err(log)
            })
        },
    )
    .await;
    let tunnels = log
        .matches(&format!("CONNECT 127.0.0.1:{}", front.port()))
        .count();
    assert!(tunnels >= 2, "upstream and IdP tunnels: {log}");
    assert!(!log.contains("/oauth/token"), "{log}");
    assert!(
        log.contains("/echo/x"),
        "the plain-http request went through the connector: {log}"
    );
    for t in mock.state.issued_tokens() {
        assert!(!log.contains(&t), "token in the connector's log");
    }
    for secret in ["demo-secret-0123456789", "s3cret-pw", "ZGVtby1jbGllbnQ6"] {
        assert!(!log.contains(secret), "{secret} in the connector's log");
    }
}
