//! Hot reload under steady load: valid configs swap in without a failed request; invalid ones are
//! refused with every error and its key path; what needs a restart is refused whole.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use authsidecar::config::Config;
use authsidecar::mock::MockProvider;
use authsidecar::Server;
use bytes::Bytes;
use http::Method;

use crate::support::*;

fn config_text(mock: std::net::SocketAddr, client: &str, secret: &str, extra: &str) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[[routes]]
prefix = "/api/"
upstream = "http://{mock}/protected/"
profiles = ["cc"]

[profiles.cc]
type = "oauth2_client_credentials"
token_url = "http://{mock}/oauth/token"
client_id = "{client}"
client_secret = "{secret}"
{extra}
"#
    )
}

const EXTRA_ROUTE: &str = r#"
[[routes]]
prefix = "/extra/"
upstream = "http://{mock}/echo/"
profiles = ["none"]

[profiles.none]
type = "none"
"#;

async fn reload(admin: std::net::SocketAddr) -> Resp {
    send(
        Method::POST,
        &format!("http://{admin}/admin/reload"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        Bytes::new(),
    )
    .await
}

#[tokio::test]
async fn reloads_under_load_lose_no_request() {
    let mock = MockProvider::start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    mock.state.add_client("second-client", "second-secret");
    let dir = TempDir::new("reload");
    let path = dir.join("sidecar.toml");
    let extra = EXTRA_ROUTE.replace("{mock}", &mock.addr.to_string());
    std::fs::write(
        &path,
        config_text(mock.addr, "demo-client", "demo-secret", &extra),
    )
    .unwrap();
    let s = Server::start_with_path(Config::load(&path).unwrap(), Some(path.clone()))
        .await
        .unwrap();
    let (api, admin) = (format!("http://{}/api/x", s.proxy_addr), s.admin_addr);
    assert_eq!(get(&api, &[]).await.status, 200);
    assert_eq!(
        get(&format!("http://{}/extra/x", s.proxy_addr), &[])
            .await
            .status,
        200
    );

    // Steady load: 8 callers, 60 requests each, while the config changes underneath.
    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (api, failures, done) = (api.clone(), failures.clone(), done.clone());
        load.push(tokio::spawn(async move {
            for _ in 0..60 {
                if get(&api, &[]).await.status != 200 {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                done.fetch_add(1, Ordering::SeqCst);
                // Pacing, not waiting for anything: steady load over the reloads below.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    wait_until(
        "the load to be running (8 requests answered)",
        Duration::from_secs(10),
        || async { done.load(Ordering::SeqCst) >= 8 },
    )
    .await;

    // 1. Invalid: refused with the key paths; the old config stays.
    std::fs::write(
        &path,
        config_text(
            mock.addr,
            "demo-client",
            "demo-secret",
            "colour = \"red\"\n[profiles.bad]\ntype = \"nope\"",
        ),
    )
    .unwrap();
    let r = reload(admin).await;
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    let body = String::from_utf8_lossy(&r.body).to_string();
    assert!(body.contains("profiles.cc.colour: unknown key"), "{body}");
    assert!(body.contains("profiles.bad.type: unknown type"), "{body}");

    // 2. What needs a restart is refused whole.
    std::fs::write(
        &path,
        config_text(mock.addr, "demo-client", "demo-secret", &extra).replace(
            "[proxy]\nlisten = \"127.0.0.1:0\"",
            "[proxy]\nlisten = \"127.0.0.1:1\"\nworker_scheduling = \"normal\"",
        ),
    )
    .unwrap();
    let r = reload(admin).await;
    assert_eq!(r.status, 422);
    let body = String::from_utf8_lossy(&r.body).to_string();
    assert!(body.contains("proxy.listen: changed; restart"), "{body}");
    assert!(
        body.contains("proxy.worker_scheduling: changed; restart"),
        "{body}"
    );

    // 3. Valid: another client and secret (a new token), and the extra route removed.
    let before = mock.counters().client_credentials.load(Ordering::SeqCst);
    std::fs::write(
        &path,
        config_text(mock.addr, "second-client", "second-secret", ""),
    )
    .unwrap();
    let r = reload(admin).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    for t in load {
        t.await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 480);
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "a request failed during the reloads"
    );
    assert_eq!(get(&api, &[]).await.status, 200);
    assert_eq!(
        mock.counters().client_credentials.load(Ordering::SeqCst) - before,
        1,
        "the changed client got one new token"
    );
    let r = get(&format!("http://{}/extra/x", s.proxy_addr), &[]).await;
    assert_eq!(r.error_code(), "no_route");

    // 4. Token settings unchanged (only a route added back): the cached token stays.
    let before = mock.counters().client_credentials.load(Ordering::SeqCst);
    std::fs::write(
        &path,
        config_text(mock.addr, "second-client", "second-secret", &extra),
    )
    .unwrap();
    let r = reload(admin).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("0 cached tokens dropped"));
    assert_eq!(get(&api, &[]).await.status, 200);
    assert_eq!(
        get(&format!("http://{}/extra/x", s.proxy_addr), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        mock.counters().client_credentials.load(Ordering::SeqCst),
        before,
        "an unchanged profile keeps its cached token"
    );

    let m = String::from_utf8_lossy(&get(&format!("http://{admin}/metrics"), &[]).await.body)
        .to_string();
    assert!(
        m.contains("authsidecar_config_reloads_total{result=\"ok\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("authsidecar_config_reloads_total{result=\"invalid\"} 2"),
        "{m}"
    );
    // GET is refused; so is a call without the token.
    let r = get(
        &format!("http://{admin}/admin/reload"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    )
    .await;
    assert_eq!(r.status, 405);
    let r = send(
        Method::POST,
        &format!("http://{admin}/admin/reload"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 401);
    s.shutdown().await;
}

#[tokio::test]
async fn sighup_reloads_the_file_in_a_running_process() {
    let mock = MockProvider::start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let dir = TempDir::new("sighup");
    let text = |extra: &str| {
        config_text(mock.addr, "demo-client", "demo-secret", extra).replacen(
            "[proxy]\nlisten = \"127.0.0.1:0\"",
            "[proxy]\nlisten = \"127.0.0.1:0\"\nworkers = 2",
            1,
        )
    };
    let path = dir.join("sidecar.toml");
    std::fs::write(&path, text("")).unwrap();
    let log = dir.join("sidecar.log");
    let mut child = Proc::spawn(
        "authsidecar",
        std::process::Command::new(env!("CARGO_BIN_EXE_authsidecar"))
            .args(["run", "-c"])
            .arg(&path)
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    let proxy = crate::support::fleet::started(&mut child, &log, Duration::from_secs(20))
        .await
        .proxy;
    let extra_url = format!("http://{proxy}/extra/x");
    assert_eq!(get(&extra_url, &[]).await.error_code(), "no_route");
    let hup = || {
        std::process::Command::new("kill")
            .args(["-s", "HUP", &child.id().to_string()])
            .status()
            .unwrap()
    };
    // An invalid file: the process keeps running on the old config and logs the key path.
    std::fs::write(&path, text("colour = 1")).unwrap();
    assert!(hup().success());
    wait_until(
        "the reload error (profiles.cc.colour: unknown key) in the log",
        Duration::from_secs(10),
        || async {
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("profiles.cc.colour: unknown key")
        },
    )
    .await;
    assert_eq!(get(&format!("http://{proxy}/api/x"), &[]).await.status, 200);
    // A valid file with a new route: served after the signal, on every worker.
    std::fs::write(
        &path,
        text(&EXTRA_ROUTE.replace("{mock}", &mock.addr.to_string())),
    )
    .unwrap();
    assert!(hup().success());
    wait_until(
        "the new route to be served after SIGHUP",
        Duration::from_secs(10),
        || async { get(&extra_url, &[]).await.status == 200 },
    )
    .await;
    for _ in 0..20 {
        assert_eq!(get(&extra_url, &[]).await.status, 200);
    }
}
