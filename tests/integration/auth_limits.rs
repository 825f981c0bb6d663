//! Limits that keep one browser (or one login link) from hurting the others: bodies read within
//! deadlines on every listener, credential checks per link and per user, one live `state` per link.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use authsidecar::config::{Config, Env};
use authsidecar::mock::MockProvider;
use authsidecar::Server;

use crate::support::*;

/// The auth listener is on port 0 with `public_url = "http://127.0.0.1:0"`: links carry the port
/// it was given (`server.auth_addr`).
struct Setup {
    idp: MockProvider,
    store: std::path::PathBuf,
    key: String,
    _dir: TempDir,
}

impl Setup {
    async fn new() -> Setup {
        let dir = TempDir::new("limits");
        Setup {
            idp: MockProvider::start(([127, 0, 0, 1], 0).into())
                .await
                .unwrap(),
            store: dir.join("grants.db"),
            key: authsidecar::store::crypto::generate_key(),
            _dir: dir,
        }
    }

    /// A per-user password profile (`/pw/`) and an authorization-code profile (`/code/`), with
    /// `extra` added to `[auth]` and `proxy` as the `[proxy]` section's keys.
    fn config(&self, proxy: &str, extra: &str) -> Config {
        let store = format!(
            "kind = \"file\"\npath = \"{}\"\nkey = \"{}\"",
            self.store.display(),
            self.key
        );
        self.config_with(proxy, extra, &store)
    }

    fn config_with(&self, proxy: &str, extra: &str, store: &str) -> Config {
        let idp = self.idp.addr;
        let text = format!(
            r#"
[proxy]
{proxy}

[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"
{extra}

[store]
{store}

[[routes]]
prefix = "/pw/"
upstream = "http://{idp}/protected/"
profiles = ["pw"]

[[routes]]
prefix = "/code/"
upstream = "http://{idp}/protected/"
profiles = ["code"]

[[routes]]
prefix = "/plain/"
upstream = "http://{idp}/echo/"
profiles = ["open"]

[profiles.open]
type = "none"

[profiles.pw]
type = "oauth2_password"
per_user = true
token_url = "http://{idp}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"

[profiles.code]
type = "oauth2_authorization_code"
authorization_url = "http://{idp}/oauth/authorize"
token_url = "http://{idp}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
"#,
        );
        Config::from_str_with_env(&with_listeners(&text), &Env::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn open_store(&self) -> authsidecar::store::Store {
        let key = authsidecar::store::crypto::parse_key(&self.key).unwrap();
        authsidecar::store::Store::open_file(&self.store, &key, None).unwrap()
    }
}

async fn login_link(proxy: SocketAddr, path: &str, user: &str) -> String {
    let r = get(
        &format!("http://{proxy}{path}"),
        &[("X-Authsidecar-User", user)],
    )
    .await;
    assert_eq!(r.error_code(), "authorization_required");
    r.json()["error"]["login_url"].as_str().unwrap().to_string()
}

async fn post_form(url: &str, form: &str) -> Resp {
    send(
        Method::POST,
        url,
        &[("content-type", "application/x-www-form-urlencoded")],
        form.to_string(),
    )
    .await
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Reads until the server closes; panics if it is still open after `limit`.
async fn until_closed(s: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let r = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    assert!(
        r.is_ok(),
        "connection still open after {limit:?}; got {:?}",
        String::from_utf8_lossy(&out)
    );
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

/// Sends `head`, then one body byte every `every` (at most `bytes`), until the server answers;
/// returns the answer (empty if none came) and when it came.
async fn trickle(
    addr: SocketAddr,
    head: String,
    every: Duration,
    bytes: usize,
) -> (String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    for _ in 0..bytes {
        if s.write_all(b"a").await.is_err() {
            break;
        }
        if let Ok(r) = tokio::time::timeout(every, s.read(&mut buf)).await {
            let n = r.unwrap_or(0);
            let mut out = buf[..n].to_vec();
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
            return (
                String::from_utf8_lossy(&out).into_owned(),
                started.elapsed(),
            );
        }
    }
    (String::new(), started.elapsed())
}

#[tokio::test]
async fn a_post_to_an_unknown_login_link_is_answered_without_reading_its_body() {
    let s = Setup::new().await;
    let server = Server::start(s.config("body_read_timeout = \"20s\"", ""))
        .await
        .unwrap();
    let auth = server.auth_addr.unwrap();
    let mut c = TcpStream::connect(auth).await.unwrap();
    c.write_all(b"POST /oauth/start/anything HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10\r\n\r\n")
        .await
        .unwrap();
    // No body: the answer comes at once (the link is checked first) and the connection closes.
    let (out, took) = until_closed(&mut c, Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("This link has expired"), "{out}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn stalled_or_trickling_start_page_forms_get_408_and_free_their_connection_slots() {
    let s = Setup::new().await;
    // Three connections allowed on the auth listener; each form must arrive within 1 s.
    let server = Server::start(s.config("body_read_timeout = \"1s\"\nmax_connections = 3", ""))
        .await
        .unwrap();
    let auth = server.auth_addr.unwrap();
    let login = login_link(server.proxy_addr, "/pw/x", "ann").await;
    let path = login
        .split_once(&auth.port().to_string())
        .unwrap()
        .1
        .to_string();
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n");
    // Two stalled senders (a declared body that never comes) and one that trickles a byte every
    // 300 ms (each within the per-read wait): all three take every slot.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(auth).await.unwrap();
        c.write_all(head.as_bytes()).await.unwrap();
        stalled.push(c);
    }
    let trickled = tokio::spawn(trickle(auth, head.clone(), Duration::from_millis(300), 30));
    for mut c in stalled {
        let (out, took) = until_closed(&mut c, Duration::from_secs(4)).await;
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
    let (out, took) = trickled.await.unwrap();
    assert!(out.starts_with("HTTP/1.1 408"), "trickled: {out:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The slots are free again: the end user's page loads, and the link still works.
    let r = get(&login, &[]).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = post_form(&login, "username=demo-user&password=demo-password").await;
    assert_eq!(r.status, 200, "{}", text(&r));
    server.shutdown().await;
}

#[tokio::test]
async fn a_trickling_admin_sign_in_form_gets_408_and_is_closed() {
    let s = Setup::new().await;
    let server = Server::start(s.config("body_read_timeout = \"1s\"", ""))
        .await
        .unwrap();
    let head = "POST /admin/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n";
    let (out, took) = trickle(
        server.admin_addr,
        head.to_string(),
        Duration::from_millis(300),
        30,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_trickling_proxy_body_ends_at_body_total_timeout() {
    let s = Setup::new().await;
    let server = Server::start(s.config(
        "body_read_timeout = \"1s\"\nbody_total_timeout = \"2s\"",
        "",
    ))
    .await
    .unwrap();
    // Streamed (no payload placement) and buffered (a body under the replay cap is kept) paths
    // both end: one byte every 300 ms never trips the per-read wait.
    let head = "POST /plain/x HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n";
    let (out, took) = trickle(
        server.proxy_addr,
        head.to_string(),
        Duration::from_millis(300),
        30,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out:?}");
    assert!(out.contains("request_timeout"), "{out}");
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(4),
        "{took:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn password_guesses_on_one_link_stop_after_five_and_the_link_is_spent() {
    let s = Setup::new().await;
    let server = Server::start(s.config("", "")).await.unwrap();
    let login = login_link(server.proxy_addr, "/pw/x", "carol").await;
    let password_requests = || s.idp.state.counters.password.load(Ordering::SeqCst);

    let mut statuses = Vec::new();
    for i in 0..50 {
        let r = post_form(&login, &format!("username=demo-user&password=guess{i}")).await;
        assert!(!text(&r).contains(&format!("guess{i}")));
        statuses.push(r.status.as_u16());
        if i == 0 {
            assert!(text(&r).contains("4 attempts left"), "{}", text(&r));
        }
        if i == 4 || i == 10 {
            assert!(text(&r).contains("This link is used up"), "{}", text(&r));
            assert!(
                text(&r).contains("Ask for a new sign-in link"),
                "{}",
                text(&r)
            );
        }
    }
    assert_eq!(statuses[..4], [400; 4]);
    assert!(statuses[4..].iter().all(|s| *s == 403), "{statuses:?}");
    // Five password-grant requests reached the IdP, no more.
    assert_eq!(password_requests(), 5);
    // The right password on the spent link: refused without asking the IdP; the page says why.
    let r = post_form(&login, "username=demo-user&password=demo-password").await;
    assert_eq!(r.status, 403);
    let r = get(&login, &[]).await;
    assert!(text(&r).contains("This link is used up"), "{}", text(&r));
    assert_eq!(password_requests(), 5);
    let r = get(
        &format!("http://{}/pw/x", server.proxy_addr),
        &[("X-Authsidecar-User", "carol")],
    )
    .await;
    assert_eq!(r.error_code(), "authorization_required");

    let metrics = text(&get(&format!("http://{}/metrics", server.admin_addr), &[]).await);
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("authsidecar_sign_in_attempts_refused_total")
                && l.contains("profile=\"pw\"")
                && l.contains("reason=\"link_spent\"")
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(line.ends_with(" 46"), "{line}");
    assert!(!metrics.contains("carol"));

    // A new link (the bot asks again) signs in.
    let login = login_link(server.proxy_addr, "/pw/x", "carol").await;
    let r = post_form(&login, "username=demo-user&password=demo-password").await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(password_requests(), 6);
    server.shutdown().await;
}

#[tokio::test]
async fn password_guesses_per_user_and_profile_are_limited_across_links() {
    let s = Setup::new().await;
    let server = Server::start(s.config("", "max_user_attempts = 3\nuser_attempt_window = \"1h\""))
        .await
        .unwrap();
    let password_requests = || s.idp.state.counters.password.load(Ordering::SeqCst);
    // New links each time: the per-link count never runs out, the user's window does.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let login = login_link(server.proxy_addr, "/pw/x", "dave").await;
        let r = post_form(&login, &format!("username=demo-user&password=guess{i}")).await;
        statuses.push(r.status.as_u16());
        if i >= 3 {
            assert!(
                text(&r).contains("Too many sign-in attempts"),
                "{}",
                text(&r)
            );
            assert!(r.headers.contains_key("retry-after"));
        }
    }
    assert_eq!(statuses, [400, 400, 400, 429, 429, 429]);
    assert_eq!(password_requests(), 3);
    // Another user of the same profile is not held back.
    let login = login_link(server.proxy_addr, "/pw/x", "erin").await;
    let r = post_form(&login, "username=demo-user&password=demo-password").await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let metrics = text(&get(&format!("http://{}/metrics", server.admin_addr), &[]).await);
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "authsidecar_sign_in_attempts_refused_total{profile=\"pw\",reason=\"user_limit\"} 3"
        )),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_login_link_keeps_one_live_state_and_an_earlier_one_fails() {
    let s = Setup::new().await;
    // The links and the callback outlive a restart, which gives the auth listener a new port: one
    // public URL in front of it, as a balancer would be.
    let front = Relay::start().await;
    let config = || {
        let mut c = s.config("", "");
        c.auth.as_mut().unwrap().public_url = format!("http://{}", front.addr);
        c
    };
    let server = Server::start(config()).await.unwrap();
    front.point_to(server.auth_addr.unwrap());
    let login = login_link(server.proxy_addr, "/code/x", "fay").await;
    // The first start, followed to the IdP: a callback URL with the first state.
    let to_idp = get(&login, &[]).await;
    assert_eq!(to_idp.status, 302);
    let first_callback = location(&get(&location(&to_idp), &[]).await);
    // 200 more starts on the same link.
    let mut last = String::new();
    for _ in 0..200 {
        let r = get(&login, &[]).await;
        assert_eq!(r.status, 302);
        last = location(&r);
    }
    // The first state was replaced: its callback is refused without a token request.
    let code_requests = s
        .idp
        .state
        .counters
        .authorization_code
        .load(Ordering::SeqCst);
    let r = get(&first_callback, &[]).await;
    assert_eq!(r.status, 400, "{}", text(&r));
    assert!(text(&r).contains("unknown"), "{}", text(&r));
    assert_eq!(
        s.idp
            .state
            .counters
            .authorization_code
            .load(Ordering::SeqCst),
        code_requests
    );
    assert!(server.shutdown().await);

    // One state record is left in the store for the link, not 201.
    {
        let store = s.open_store();
        let states = store.names("state:").unwrap();
        assert_eq!(states.len(), 1, "{states:?}");
    }
    // The latest start still completes (after a restart: it lives in the store).
    let server = Server::start(config()).await.unwrap();
    front.point_to(server.auth_addr.unwrap());
    let callback = location(&get(&last, &[]).await);
    let r = get(&callback, &[]).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = get(
        &format!("http://{}/code/x", server.proxy_addr),
        &[("X-Authsidecar-User", "fay")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    server.shutdown().await;
}

#[tokio::test]
async fn replicas_sharing_redis_count_one_links_guesses_together_and_keep_one_state() {
    let s = Setup::new().await;
    let redis = crate::support::fleet::Redis::start(&s.store.parent().unwrap().join("redis")).await;
    let store = format!(
        "kind = \"redis\"\nurl = \"{}\"\nkey = \"{}\"\nprefix = \"limits:\"",
        redis.url(),
        s.key
    );
    let a = Server::start(s.config_with("", "", &store)).await.unwrap();
    let b = Server::start(s.config_with("", "", &store)).await.unwrap();
    let (pa, pb) = (a.auth_addr.unwrap().port(), b.auth_addr.unwrap().port());
    let on = |port: u16, link: &str| {
        let path = link.split_once("/oauth/start/").unwrap().1;
        format!("http://127.0.0.1:{port}/oauth/start/{path}")
    };
    let password_requests = || s.idp.state.counters.password.load(Ordering::SeqCst);

    // Guesses on one link, alternating between the replicas: five reach the IdP in all.
    let login = login_link(a.proxy_addr, "/pw/x", "gus").await;
    for i in 0..12 {
        let port = if i % 2 == 0 { pa } else { pb };
        let r = post_form(
            &on(port, &login),
            &format!("username=demo-user&password=g{i}"),
        )
        .await;
        assert!(r.status == 400 || r.status == 403, "{}", text(&r));
    }
    assert_eq!(password_requests(), 5);
    let r = get(&on(pb, &login), &[]).await;
    assert!(text(&r).contains("This link is used up"), "{}", text(&r));

    // Starts of one code link on both replicas leave one state record.
    let login = login_link(b.proxy_addr, "/code/x", "gus").await;
    for i in 0..20 {
        let port = if i % 2 == 0 { pa } else { pb };
        assert_eq!(get(&on(port, &login), &[]).await.status, 302);
    }
    let key = authsidecar::store::crypto::parse_key(&s.key).unwrap();
    let direct = authsidecar::store::Store::open_redis(
        &[&redis.url()],
        false,
        "limits:",
        &key,
        None,
        Duration::from_secs(2),
    )
    .unwrap();
    let states = tokio::task::spawn_blocking(move || direct.names("state:").unwrap())
        .await
        .unwrap();
    assert_eq!(states.len(), 1, "{states:?}");
    a.shutdown().await;
    b.shutdown().await;
    drop(redis);
}
