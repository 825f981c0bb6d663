//! B13: wall-clock jumps. A sidecar process runs under libfaketime with its wall clock moved by
//! hours (the monotonic clock left alone, as on a real clock step): a valid cached token is not
//! dropped, and an expired one does not come back.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use authsidecar::mock::{MockProvider, MockSettings};

use crate::support::fleet::started;
use crate::support::*;

/// libfaketime (Debian's path on x86_64, on arm64, or the upstream default).
fn faketime() -> PathBuf {
    proc::tool_file(
        "libfaketime",
        &[
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
            "/usr/local/lib/faketime/libfaketime.so.1",
        ],
    )
}

fn faked(cmd: &mut Command, offset_file: &Path) {
    cmd.env("LD_PRELOAD", faketime())
        .env("FAKETIME_TIMESTAMP_FILE", offset_file)
        .env("FAKETIME_NO_CACHE", "1")
        .env("DONT_FAKE_MONOTONIC", "1");
}

/// The faked process's wall clock minus the real one, in seconds.
fn skew(offset_file: &Path) -> i64 {
    let mut c = Command::new("date");
    c.arg("+%s");
    faked(&mut c, offset_file);
    let out = c.output().unwrap();
    let faked: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    faked - real
}

async fn mock(lifetime: Duration) -> MockProvider {
    MockProvider::start_with(
        ([127, 0, 0, 1], 0).into(),
        MockSettings {
            token_lifetime: lifetime,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn b13_a_wall_clock_jump_neither_expires_good_tokens_nor_revives_dead_ones() {
    faketime();
    let dir = TempDir::new("clock");
    let offset = dir.join("offset");
    std::fs::write(&offset, "+0\n").unwrap();
    assert!(skew(&offset).abs() < 5);
    std::fs::write(&offset, "+2h\n").unwrap();
    let s = skew(&offset);
    assert!(
        (7190..7210).contains(&s),
        "libfaketime did not move the clock: {s}"
    );
    std::fs::write(&offset, "+0\n").unwrap();

    let long = mock(Duration::from_secs(3600)).await;
    let short = mock(Duration::from_secs(2)).await;
    let config = dir.join("clock.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[proxy]
listen = "127.0.0.1:0"
workers = 1
[admin]
listen = "127.0.0.1:0"

[[routes]]
prefix = "/long/"
upstream = "http://{l}/protected/"
profiles = ["long"]

[[routes]]
prefix = "/short/"
upstream = "http://{s}/protected/"
profiles = ["short"]

[profiles.long]
type = "oauth2_client_credentials"
token_url = "http://{l}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"

[profiles.short]
type = "oauth2_client_credentials"
token_url = "http://{s}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
"#,
            l = long.addr,
            s = short.addr
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_authsidecar"));
    cmd.arg("run")
        .arg("-c")
        .arg(&config)
        .env("RUST_LOG", "warn,authsidecar=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("clock.log")).unwrap());
    faked(&mut cmd, &offset);
    let mut child = Proc::spawn("authsidecar", &mut cmd);
    let addr = started(&mut child, &dir.join("clock.log"), Duration::from_secs(15))
        .await
        .proxy;
    let url = |p: &str| format!("http://{addr}{p}");

    // A one-hour token survives the wall clock jumping two hours ahead, and back.
    assert_eq!(get(&url("/long/a"), &[]).await.status, 200);
    assert_eq!(long.token_requests(), 1);
    for jump in ["+2h", "-2h", "+0"] {
        std::fs::write(&offset, format!("{jump}\n")).unwrap();
        let r = get(&url("/long/a"), &[]).await;
        assert_eq!(r.status, 200, "after {jump}");
        assert_eq!(
            long.token_requests(),
            1,
            "a wall-clock step to {jump} dropped a good token"
        );
    }

    // A two-second token that has expired stays expired when the wall clock steps back an hour.
    assert_eq!(get(&url("/short/a"), &[]).await.status, 200);
    assert_eq!(short.token_requests(), 1);
    // Time passing is the point: the two-second token expires.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    std::fs::write(&offset, "-1h\n").unwrap();
    let r = get(&url("/short/a"), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(short.token_requests(), 2, "an expired token was used again");
}
