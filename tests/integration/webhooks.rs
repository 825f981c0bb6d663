//! Grant events as Standard Webhooks: verified by a receiver built on the specification's reference
//! library (`tests/verify/webhook_receiver.py`), delivered at least once across a receiver that is
//! down and a sidecar killed in between, listed while pending or failed, and `keep_alive`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use authsidecar::mock::{MockProvider, TokenFault};
use base64::Engine;
use http::Method;
use serde_json::Value;

use crate::support::fleet::{Redis, Replica};
use crate::support::*;

/// 32 random bytes, the secret every test's receiver verifies with.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=";

/// The Python receiver (recording every request it gets in `out`, one JSON line each).
struct Receiver {
    _proc: Proc,
    port: u16,
    out: PathBuf,
}

impl Receiver {
    /// On `port` (0: any), answering 503 to its first `fail_first` verified requests.
    fn start(dir: &Path, port: u16, fail_first: u32) -> Receiver {
        Self::start_slow(dir, port, fail_first, 0)
    }

    /// The same, holding every answer back `delay_ms`.
    fn start_slow(dir: &Path, port: u16, fail_first: u32, delay_ms: u32) -> Receiver {
        let out = dir.join(format!("received-{port}.jsonl"));
        let (port, fail_first, delay_ms) = (
            port.to_string(),
            fail_first.to_string(),
            delay_ms.to_string(),
        );
        let args: Vec<&std::ffi::OsStr> = vec![
            "--secret".as_ref(),
            SECRET.as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
            "--port".as_ref(),
            port.as_ref(),
            "--fail-first".as_ref(),
            fail_first.as_ref(),
            "--delay-ms".as_ref(),
            delay_ms.as_ref(),
        ];
        let (p, port) = crate::support::proc::python_server("webhook_receiver.py", &args);
        Receiver {
            _proc: p,
            port,
            out,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    /// Every request received so far.
    fn received(&self) -> Vec<Value> {
        received(&self.out)
    }

    /// Waits (at most 30 s) until `n` requests verified and were accepted; returns those.
    async fn wait_accepted(&self, n: usize, what: &str) -> Vec<Value> {
        wait_for(what, Duration::from_secs(30), || {
            let all = self.received();
            let a = accepted(&all);
            std::future::ready(if a.len() >= n {
                Ok(a)
            } else {
                // In short: how many arrived, and the last one (with why it was refused).
                Err(format!(
                    "{} requests, {} accepted; the last: {}",
                    all.len(),
                    a.len(),
                    all.last().map_or(String::new(), |r| {
                        format!("{} {} {}", r["status"], r["error"], r["body"])
                    })
                ))
            })
        })
        .await
    }
}

fn received(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The verified, accepted requests: one per delivery when nothing is duplicated.
fn accepted(all: &[Value]) -> Vec<Value> {
    all.iter()
        .filter(|r| r["verified"] == true && r["status"] == 204)
        .cloned()
        .collect()
}

/// A port for a receiver that is down (and started there later): a spare one, below the range
/// port-0 binds draw from, so no other listener of the suite takes it meanwhile (see
/// `support::proc`).
fn free_port() -> u16 {
    crate::support::proc::spare_port(0)
}

/// The per-user profile `user` against the mock, feeding the webhooks named in `hooks`.
fn profile(mock: &MockProvider, hooks: &str, extra: &str) -> String {
    let m = mock.addr;
    format!(
        r#"
[[routes]]
prefix = "/u/"
upstream = "http://{m}/protected/"
profiles = ["user"]

[profiles.user]
type = "oauth2_authorization_code"
authorization_url = "http://{m}/oauth/authorize"
token_url = "http://{m}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
webhooks = [{hooks}]
{extra}
"#
    )
}

fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!(
        "\n[webhooks.{name}]\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nretry_initial = \"200ms\"\nretry_max = \"500ms\"\n{extra}\n"
    )
}

fn bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

/// `PUT /admin/grants/user?user=…`.
async fn import(admin: std::net::SocketAddr, user: &str, grant: &str) {
    let url = format!("http://{admin}/admin/grants/user?user={user}");
    let r = send(
        Method::PUT,
        &url,
        &[("Authorization", &bearer())],
        grant.to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

async fn revoke(admin: std::net::SocketAddr, user: &str) {
    let url = format!("http://{admin}/admin/grants/user?user={user}");
    let r = send(Method::DELETE, &url, &[("Authorization", &bearer())], "").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["grant_deleted"], true);
}

async fn deliveries(admin: std::net::SocketAddr) -> Vec<Value> {
    let url = format!("http://{admin}/admin/webhooks/deliveries");
    let r = get(&url, &[("Authorization", &bearer())]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["deliveries"].as_array().unwrap().clone()
}

async fn metric(admin: std::net::SocketAddr, name: &str) -> f64 {
    let text = get(&format!("http://{admin}/metrics"), &[]).await;
    let text = String::from_utf8_lossy(&text.body).to_string();
    text.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name || n == format!("{name}_total")).then(|| v.parse().unwrap())
        })
        .unwrap_or(0.0)
}

/// `user` signs in to profile `user` through the proxy at `proxy` (login link, mock IdP, callback).
async fn signed_in(proxy: std::net::SocketAddr, user: &str) {
    let r = get(
        &format!("http://{proxy}/u/me"),
        &[("X-Authsidecar-User", user)],
    )
    .await;
    let login = r.json()["error"]["login_url"].as_str().unwrap().to_string();
    assert_eq!(sign_in(&login).await.status, 200);
}

/// Refresh-token requests the mock has answered.
fn refreshes(mock: &MockProvider) -> u64 {
    mock.counters()
        .refresh_token
        .load(std::sync::atomic::Ordering::SeqCst)
}

/// Fails if any of `secrets` appears in `body`, as it is or in base64.
fn assert_holds_none(body: &str, secrets: &[&str]) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    for s in secrets {
        for form in [s.to_string(), b64.encode(s), url.encode(s)] {
            assert!(!body.contains(&form), "a body holds a secret: {body}");
        }
    }
}

/// An in-process sidecar (with its auth listener and the `[store]` section `store` makes in the
/// test's folder) whose profile `user` feeds `[webhooks.bot]` (`hook`: its extra keys) at a new
/// receiver; `extra`: more keys of the profile.
struct Hooked {
    /// First: bound first, dropped last (after the receiver that writes in it).
    dir: TempDir,
    server: authsidecar::Server,
    receiver: Receiver,
    mock: MockProvider,
}

/// The `[auth]` section every in-process sidecar here has, then `rest`.
fn with_auth(rest: &str) -> String {
    format!("[auth]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:0\"\n{rest}")
}

impl Hooked {
    async fn start(name: &str, store: impl Fn(&Path) -> String, hook: &str, extra: &str) -> Hooked {
        let dir = TempDir::new(name);
        let receiver = Receiver::start(&dir, 0, 0);
        let mock = mock().await;
        let text = with_auth(&format!(
            "{}{}{}",
            store(&dir),
            webhook("bot", &receiver.url(), hook),
            profile(&mock, "\"bot\"", extra),
        ));
        let server = authsidecar::Server::start(parse(&text)).await.unwrap();
        Hooked {
            dir,
            server,
            receiver,
            mock,
        }
    }
}

#[tokio::test]
async fn every_event_type_verifies_with_the_reference_library_and_holds_no_token() {
    let Hooked {
        dir: _dir,
        server,
        receiver,
        mock,
    } = Hooked::start("hooks-all", |_| String::new(), "", "").await;
    let call = format!("http://{}/u/me", server.proxy_addr);

    // grant.authorized: a user signs in.
    let r = get(&call, &[("X-Authsidecar-User", "alice")]).await;
    let login = r.json()["error"]["login_url"].as_str().unwrap().to_string();
    let done = sign_in(&login).await;
    assert_eq!(done.status, 200);
    let r = get(&call, &[("X-Authsidecar-User", "alice")]).await;
    assert_eq!(r.status, 200);
    let alice_token = r.echoed("authorization")[0]
        .strip_prefix("Bearer ")
        .unwrap()
        .to_string();

    // grant.imported, then grant.revoked by the admin API.
    let (at, rt) = ("imported-access-7f3e9a", "imported-refresh-2b8c1d");
    import(
        server.admin_addr,
        "bob",
        &format!(r#"{{"access_token": "{at}", "refresh_token": "{rt}", "expires_in": 3600}}"#),
    )
    .await;
    revoke(server.admin_addr, "bob").await;

    // grant.refresh_failed (and grant.revoked): the provider refuses an expired grant's refresh.
    let (at2, rt2) = ("expired-access-4d1f", "dead-refresh-9e2a");
    import(
        server.admin_addr,
        "carl",
        &format!(r#"{{"access_token": "{at2}", "refresh_token": "{rt2}", "expires_at": "2020-01-01T00:00:00Z"}}"#),
    )
    .await;
    mock.state
        .set_token_fault(Some(TokenFault::InvalidGrant), Some(1));
    let r = get(&call, &[("X-Authsidecar-User", "carl")]).await;
    assert_eq!(r.error_code(), "authorization_required");

    let got = receiver.wait_accepted(6, "six verified events").await;
    let all = receiver.received();
    assert!(
        all.iter().all(|r| r["verified"] == true),
        "a request did not verify: {all:?}"
    );
    let of = |ty: &str, user: &str| -> Value {
        got.iter()
            .find(|r| r["type"] == ty && r["data"]["user"] == user)
            .unwrap_or_else(|| panic!("no {ty} for {user}: {got:?}"))
            .clone()
    };
    let authorized = of("grant.authorized", "alice");
    assert_eq!(authorized["data"]["profile"], "user");
    assert_eq!(authorized["data"]["tenant"], Value::Null);
    of("grant.imported", "bob");
    assert_eq!(of("grant.revoked", "bob")["data"]["reason"], "admin");
    assert_eq!(
        of("grant.revoked", "carl")["data"]["reason"],
        "invalid_grant"
    );
    let failed = of("grant.refresh_failed", "carl");
    assert_eq!(failed["data"]["error"], "invalid_grant");
    let link = failed["data"]["login_url"].as_str().unwrap().to_string();
    assert!(link.contains("/oauth/start/"), "{link}");
    // The link signs carl in again.
    assert_eq!(sign_in(&link).await.status, 200);
    let r = get(&call, &[("X-Authsidecar-User", "carl")]).await;
    assert_eq!(r.status, 200);

    // The envelope of the specification, and no token or secret in any body, in any form.
    for r in &got {
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'), "{body}");
        assert!(r["id"].as_str().unwrap().starts_with("msg_"));
        assert_holds_none(
            r["body"].as_str().unwrap(),
            &[
                &alice_token,
                at,
                rt,
                at2,
                rt2,
                SECRET,
                SECRET.strip_prefix("whsec_").unwrap(),
                "demo-secret",
            ],
        );
    }
    // The admin API names the profile's webhooks, never their secret.
    let shown = get(
        &format!("http://{}/admin/profiles/user", server.admin_addr),
        &[("Authorization", &bearer())],
    )
    .await;
    assert_eq!(shown.json()["webhooks"], serde_json::json!(["bot"]));
    assert_holds_none(&String::from_utf8_lossy(&shown.body), &[SECRET]);
    // Carl's new sign-in is the seventh event; the metric counts each accepted delivery.
    let again = receiver.wait_accepted(7, "carl's grant.authorized").await;
    assert_eq!(again[6]["type"], "grant.authorized");
    assert_eq!(again[6]["data"]["user"], "carl");
    let admin = server.admin_addr;
    wait_until(
        "seven deliveries counted",
        Duration::from_secs(10),
        || async move { metric(admin, "authsidecar_webhook_deliveries_sent").await == 7.0 },
    )
    .await;
    server.shutdown().await;
}

/// A receiver that is down, and a sidecar SIGKILLed and restarted meanwhile (file store): once the
/// receiver is up every event arrives, exactly once after de-duplication by `webhook-id`, with the
/// ids the deliveries had before the kill.
#[tokio::test]
async fn a_receiver_down_and_a_killed_sidecar_lose_no_event() {
    let dir = TempDir::new("hooks-kill");
    let mock = mock().await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hooks");
    let key = authsidecar::store::crypto::generate_key();
    let body = format!(
        "[store]\nkind = \"file\"\npath = \"{}\"\nkey = \"{key}\"\n{}{}",
        dir.join("grants.db").display(),
        webhook("bot", &url, ""),
        profile(&mock, "\"bot\"", ""),
    );
    let mut sidecar = Replica::start(&dir, "s", &body, None).await;
    for user in ["u1", "u2", "u3"] {
        import(
            sidecar.admin,
            user,
            r#"{"access_token": "a", "refresh_token": "r", "expires_in": 3600}"#,
        )
        .await;
    }
    revoke(sidecar.admin, "u2").await;
    let admin = sidecar.admin;
    let before = wait_for(
        "four deliveries attempted and failing",
        Duration::from_secs(20),
        || async move {
            let d = deliveries(admin).await;
            if d.len() == 4
                && d.iter()
                    .all(|d| d["attempts"].as_u64() >= Some(1) && d["state"] == "pending")
            {
                Ok(d)
            } else {
                Err(format!("{d:?}"))
            }
        },
    )
    .await;
    assert!(
        before.iter().all(|d| d["last_error"] == "connect error"),
        "{before:?}"
    );
    let ids: HashSet<String> = before
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();

    // SIGKILL, the receiver comes up (refusing its first two requests), the sidecar restarts.
    sidecar.kill();
    let receiver = Receiver::start(&dir, port, 2);
    let sidecar = Replica::start(&dir, "s", &body, None).await;
    let got = receiver
        .wait_accepted(4, "every event after the restart")
        .await;
    let all = receiver.received();
    let seen: HashSet<String> = all
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, ids, "the same webhook-id on every attempt");
    let unique: HashMap<String, String> = got
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(unique.len(), 4, "{got:?}");
    let mut types: Vec<&str> = unique.values().map(String::as_str).collect();
    types.sort();
    assert_eq!(
        types,
        [
            "grant.imported",
            "grant.imported",
            "grant.imported",
            "grant.revoked"
        ]
    );
    assert!(all.iter().any(|r| r["status"] == 503), "{all:?}");
    let admin = sidecar.admin;
    wait_until("no delivery left", Duration::from_secs(10), || async move {
        deliveries(admin).await.is_empty()
    })
    .await;
    assert_eq!(
        metric(admin, "authsidecar_webhook_deliveries_sent").await,
        4.0
    );
}

/// `GET /admin/webhooks/deliveries`: one delivery still retried, one given up after `max_age`;
/// the metrics follow.
#[tokio::test]
async fn deliveries_show_pending_and_failed_and_the_metrics_move() {
    let mock = mock().await;
    let url = format!("http://127.0.0.1:{}/hooks", free_port());
    let text = with_auth(&format!(
        "{}{}{}",
        webhook("patient", &url, "max_age = \"1h\""),
        webhook("hasty", &url, "max_age = \"1s\""),
        profile(&mock, "\"patient\", \"hasty\"", ""),
    ));
    let server = authsidecar::Server::start(parse(&text)).await.unwrap();
    import(
        server.admin_addr,
        "dora",
        r#"{"access_token": "a", "refresh_token": "r", "expires_in": 3600}"#,
    )
    .await;
    let admin = server.admin_addr;
    let list = wait_for(
        "one failed and one pending delivery",
        Duration::from_secs(20),
        || async move {
            let d = deliveries(admin).await;
            let state = |s: &str| d.iter().filter(|x| x["state"] == s).count();
            if state("failed") == 1 && state("pending") == 1 {
                Ok(d)
            } else {
                Err(format!("{d:?}"))
            }
        },
    )
    .await;
    for d in &list {
        assert_eq!(d["type"], "grant.imported");
        assert!(d["id"].as_str().unwrap().starts_with("msg_"));
        assert!(d["attempts"].as_u64().unwrap() >= 1, "{d}");
        assert_eq!(d["last_error"], "connect error");
        match d["state"].as_str().unwrap() {
            "failed" => {
                assert_eq!(d["webhook"], "hasty");
                assert_eq!(d["next_attempt_at"], Value::Null);
            }
            _ => {
                assert_eq!(d["webhook"], "patient");
                assert!(d["next_attempt_at"].as_str().unwrap().ends_with('Z'));
            }
        }
    }
    assert_eq!(
        metric(admin, "authsidecar_webhook_deliveries_failed").await,
        1.0
    );
    wait_until(
        "the pending gauge",
        Duration::from_secs(10),
        || async move { metric(admin, "authsidecar_webhook_deliveries_pending").await == 1.0 },
    )
    .await;
    // Without the admin token: refused.
    let r = get(&format!("http://{admin}/admin/webhooks/deliveries"), &[]).await;
    assert_eq!(r.status, 401);
    server.shutdown().await;
}

/// `keep_alive`: an idle grant is refreshed in the background without any call; one the provider
/// refuses emits `grant.refresh_failed` with a login link. Memory store.
#[tokio::test]
async fn keep_alive_refreshes_idle_grants_and_reports_a_refused_one() {
    keep_alive_on(|_| String::new()).await;
}

/// The same with the file store.
#[tokio::test]
async fn keep_alive_works_on_the_file_store() {
    keep_alive_on(|dir| {
        format!(
            "[store]\nkind = \"file\"\npath = \"{}\"\nkey = \"{}\"\n",
            dir.join("grants.db").display(),
            authsidecar::store::crypto::generate_key()
        )
    })
    .await;
}

/// The `keep_alive` scenario with the `[store]` section `store` makes (in the test's folder).
async fn keep_alive_on(store: impl Fn(&Path) -> String) {
    let Hooked {
        dir: _dir,
        server,
        receiver,
        mock,
    } = Hooked::start(
        "hooks-keep",
        store,
        "events = [\"grant.refresh_failed\"]",
        "keep_alive = \"2s\"",
    )
    .await;
    let call = format!("http://{}/u/me", server.proxy_addr);
    signed_in(server.proxy_addr, "erin").await;
    let start = refreshes(&mock);
    wait_until(
        "two background refreshes of the idle grant",
        Duration::from_secs(20),
        || std::future::ready(refreshes(&mock) >= start + 2),
    )
    .await;
    // The grant still serves the user.
    let r = get(&call, &[("X-Authsidecar-User", "erin")]).await;
    assert_eq!(r.status, 200);

    mock.state
        .set_token_fault(Some(TokenFault::InvalidGrant), Some(1));
    let got = receiver
        .wait_accepted(1, "grant.refresh_failed from keep_alive")
        .await;
    assert_eq!(got.len(), 1, "only the types the webhook takes: {got:?}");
    assert_eq!(got[0]["type"], "grant.refresh_failed");
    assert_eq!(got[0]["data"]["user"], "erin");
    assert!(got[0]["data"]["login_url"]
        .as_str()
        .unwrap()
        .contains("/oauth/start/"));
    // The link signs erin in again (the refused grant was deleted).
    let link = got[0]["data"]["login_url"].as_str().unwrap().to_string();
    assert_eq!(sign_in(&link).await.status, 200);
    server.shutdown().await;
}

/// Two sidecars on one Redis: each delivery is attempted by one of them at a time, and delivered
/// once, whichever replica wrote it.
#[tokio::test]
async fn two_replicas_on_one_redis_deliver_each_event_once() {
    let dir = TempDir::new("hooks-redis");
    let redis = Redis::start(&dir.join("redis")).await;
    let mock = mock().await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hooks");
    let key = authsidecar::store::crypto::generate_key();
    let body = format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\nkey = \"{key}\"\n{}{}",
        redis.url(),
        webhook("bot", &url, ""),
        profile(&mock, "\"bot\"", ""),
    );
    let mut a = Replica::start(&dir, "a", &body, None).await;
    let b = Replica::start(&dir, "b", &body, None).await;
    for i in 0..6 {
        import(
            a.admin,
            &format!("user{i}"),
            r#"{"access_token": "a", "refresh_token": "r", "expires_in": 3600}"#,
        )
        .await;
    }
    // Both replicas see the same deliveries; the writer is killed before the receiver is up.
    let badmin = b.admin;
    wait_until(
        "six deliveries retried",
        Duration::from_secs(20),
        || async move {
            let d = deliveries(badmin).await;
            d.len() == 6 && d.iter().all(|d| d["attempts"].as_u64() >= Some(1))
        },
    )
    .await;
    a.kill();
    let receiver = Receiver::start(&dir, port, 0);
    let got = receiver
        .wait_accepted(6, "six events through the other replica")
        .await;
    let a2 = Replica::start(&dir, "a", &body, None).await;
    wait_until("no delivery left", Duration::from_secs(10), || async move {
        deliveries(badmin).await.is_empty()
    })
    .await;
    // Let the restarted replica scan once more: it must not send any of them again.
    let aadmin = a2.admin;
    wait_until(
        "the restarted replica's scan",
        Duration::from_secs(10),
        || async move { metric(aadmin, "authsidecar_webhook_deliveries_pending").await == 0.0 },
    )
    .await;
    let all = receiver.received();
    let ids: HashSet<&str> = all.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 6, "{all:?}");
    assert_eq!(all.len(), 6, "a delivery was sent twice: {all:?}");
    assert_eq!(got.len(), 6);
}

/// `[webhooks.NAME]` and the profile keys that use it: every error names its key path, none shows
/// the secret.
#[test]
fn webhook_config_errors_name_the_key_and_never_the_secret() {
    let bad_secret = "whsec_c2hvcnQ="; // "short": 5 bytes
    let text = format!(
        r#"
[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:1"

[webhooks.ok]
url = "https://bot.example.com/hooks"
secret = "{SECRET}"

[webhooks.short]
url = "http://bot.example.com/hooks"
secret = "{bad_secret}"
events = ["grant.authorized", "grant.exploded"]
retry_initial = "10s"
retry_max = "1s"
colour = "blue"

[webhooks.nosecret]
url = "https://bot.example.com/{{tenant}}"

[webhooks.plain]
url = "https://bot.example.com/hooks"
secret = "not-whsec"
connector = "nope"

[[routes]]
prefix = "/a/"
upstream = "http://127.0.0.1:1/"
profiles = ["u", "k", "m"]

[profiles.u]
type = "oauth2_authorization_code"
authorization_url = "https://idp.example.com/authorize"
token_url = "https://idp.example.com/token"
client_id = "c"
webhooks = ["ok", "missing", "ok"]
keep_alive = "500ms"

[profiles.k]
type = "api_key"
per_user = true
keep_alive = "30d"
[[profiles.k.fields]]
in = "header"
key = "X-Key"
value = "{{{{api_key}}}}"

[profiles.m]
type = "api_key"
api_key = "k"
webhooks = ["ok"]
[[profiles.m.fields]]
in = "header"
key = "X-Key"
value = "{{{{api_key}}}}"
"#
    );
    let all: Vec<String> = match authsidecar::config::Config::from_str_with_env(
        &with_listeners(&text),
        &authsidecar::config::Env::default(),
    ) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    };
    for line in &all {
        assert!(
            !line.contains("c2hvcnQ") && !line.contains("MfKQ9r8") && !line.contains("not-whsec"),
            "a secret in: {line}"
        );
    }
    // Without a durable store, a warning (on a config that loads).
    let warned = parse(&format!(
        "[auth]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:1\"\n[webhooks.ok]\nurl = \"https://bot.example.com/h\"\nsecret = \"{SECRET}\"\n[[routes]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:1/\"\nprofiles = [\"n\"]\n[profiles.n]\ntype = \"none\"\n"
    ));
    assert!(
        warned
            .warnings
            .iter()
            .any(|w| w.starts_with("webhooks: the store is memory")),
        "{:?}",
        warned.warnings
    );
    for want in [
        "webhooks.short.secret: the base64 after \"whsec_\" decodes to 5 bytes; expected 24 to 64",
        "webhooks.short.url: plain http:// is only allowed to loopback hosts",
        "webhooks.short.events[1]: unknown event type \"grant.exploded\"",
        "webhooks.short.retry_max: shorter than retry_initial",
        "webhooks.short.colour: unknown key",
        "webhooks.nosecret.secret: required",
        "webhooks.nosecret.url: a fixed URL is expected",
        "webhooks.plain.secret: expected \"whsec_\" followed by base64",
        "webhooks.plain.connector: unknown connector \"nope\"",
        "profiles.u.webhooks[1]: unknown webhook \"missing\"; expected one of ok",
        "profiles.u.webhooks[2]: \"ok\" is named twice",
        "profiles.u.keep_alive: too short; expected at least 1s",
        "profiles.k.keep_alive: only OAuth 2.0 grants are refreshed",
        "profiles.m.webhooks: only used with per_user = true",
    ] {
        has(&all, want);
    }
}

/// `keep_alive` on two sidecars sharing one Redis: the idle grant is refreshed again and again in
/// the background, never by both at once. The mock rotates refresh tokens and refuses a used one,
/// so a second refresh with the same token would end the grant with `grant.refresh_failed`.
#[tokio::test]
async fn keep_alive_on_two_replicas_refreshes_each_grant_once_at_a_time() {
    let dir = TempDir::new("hooks-keep-redis");
    let redis = Redis::start(&dir.join("redis")).await;
    let receiver = Receiver::start(&dir, 0, 0);
    let mock = mock().await;
    let key = authsidecar::store::crypto::generate_key();
    let text = with_auth(&format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\nkey = \"{key}\"\n{}{}",
        redis.url(),
        webhook(
            "bot",
            &receiver.url(),
            "events = [\"grant.refresh_failed\", \"grant.revoked\"]"
        ),
        profile(&mock, "\"bot\"", "keep_alive = \"2s\""),
    ));
    let a = authsidecar::Server::start(parse(&text)).await.unwrap();
    let b = authsidecar::Server::start(parse(&text)).await.unwrap();
    signed_in(a.proxy_addr, "finn").await;
    let start = refreshes(&mock);
    wait_until("four background refreshes", Duration::from_secs(30), || {
        std::future::ready(refreshes(&mock) >= start + 4)
    })
    .await;
    assert_eq!(
        receiver.received(),
        Vec::<Value>::new(),
        "a refresh token was used twice"
    );
    for s in [&a, &b] {
        let r = get(
            &format!("http://{}/u/me", s.proxy_addr),
            &[("X-Authsidecar-User", "finn")],
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Two sidecars on one Redis, a slow receiver that refuses every delivery: both replicas retry the
/// same deliveries, and no two attempts of one delivery are ever open at the same time (the lease).
#[tokio::test]
async fn two_replicas_never_attempt_one_delivery_at_the_same_time() {
    let dir = TempDir::new("hooks-lease");
    let redis = Redis::start(&dir.join("redis")).await;
    let mock = mock().await;
    let receiver = Receiver::start_slow(&dir, 0, u32::MAX, 700);
    let key = authsidecar::store::crypto::generate_key();
    let body = format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\nkey = \"{key}\"\n{}{}",
        redis.url(),
        webhook("bot", &receiver.url(), ""),
        profile(&mock, "\"bot\"", ""),
    );
    let a = Replica::start(&dir, "a", &body, None).await;
    let _b = Replica::start(&dir, "b", &body, None).await;
    for i in 0..3 {
        import(
            a.admin,
            &format!("user{i}"),
            r#"{"access_token": "a", "refresh_token": "r", "expires_in": 3600}"#,
        )
        .await;
    }
    // Until the other replica (which scans every 5 s) has attempted some of them too.
    let b_log = dir.join("b.log");
    wait_until("attempts by both replicas", Duration::from_secs(40), || {
        let b_tried = std::fs::read_to_string(&b_log)
            .unwrap_or_default()
            .contains("webhook attempt failed");
        std::future::ready(b_tried && receiver.received().len() >= 12)
    })
    .await;
    let all = receiver.received();
    let a_log = std::fs::read_to_string(dir.join("a.log")).unwrap();
    assert!(a_log.contains("webhook attempt failed"), "{a_log}");
    for (i, x) in all.iter().enumerate() {
        for y in &all[i + 1..] {
            if x["id"] != y["id"] {
                continue;
            }
            let (xs, xe) = (x["start"].as_f64().unwrap(), x["end"].as_f64().unwrap());
            let (ys, ye) = (y["start"].as_f64().unwrap(), y["end"].as_f64().unwrap());
            assert!(
                xe <= ys || ye <= xs,
                "two attempts of {} overlapped: {xs}..{xe} and {ys}..{ye}",
                x["id"]
            );
        }
    }
    assert!(all.iter().all(|r| r["verified"] == true));
}

/// `POST /admin/grants:import`: each grant taken is one `grant.imported`; a refused line is none.
#[tokio::test]
async fn a_bulk_import_sends_one_event_per_grant_taken() {
    let Hooked {
        dir: _dir,
        server,
        receiver,
        mock: _mock,
    } = Hooked::start("hooks-bulk", |_| String::new(), "", "").await;
    let lines = [
        r#"{"profile": "user", "user": "gus", "access_token": "bulk-a1", "refresh_token": "bulk-r1", "expires_in": 3600}"#,
        r#"{"profile": "user", "user": "hana", "access_token": "bulk-a2", "expires_in": 3600}"#,
        r#"{"profile": "nope", "user": "ida", "access_token": "bulk-a3"}"#,
    ]
    .join("\n");
    let r = send(
        Method::POST,
        &format!("http://{}/admin/grants:import", server.admin_addr),
        &[("Authorization", &bearer())],
        lines,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        (r.json()["imported"].as_u64(), r.json()["refused"].as_u64()),
        (Some(2), Some(1))
    );
    let got = receiver.wait_accepted(2, "two grant.imported").await;
    let mut users: Vec<&str> = got
        .iter()
        .map(|g| g["data"]["user"].as_str().unwrap())
        .collect();
    users.sort();
    assert_eq!(users, ["gus", "hana"]);
    assert!(got.iter().all(|g| g["type"] == "grant.imported"));
    for g in &got {
        assert_holds_none(
            g["body"].as_str().unwrap(),
            &["bulk-a1", "bulk-r1", "bulk-a2"],
        );
    }
    server.shutdown().await;
}
