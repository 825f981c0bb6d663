//! The encrypted file store: machine tokens survive a restart without a new token request, and the
//! file holds no token in plaintext.

use authsidecar::config::{Config, Env};
use authsidecar::Server;

use crate::support::*;

fn cfg(echo: std::net::SocketAddr, path: &std::path::Path, key: &str) -> Config {
    let text = format!(
        r#"
[store]
kind = "file"
path = "{}"
key = "{key}"

[[routes]]
prefix = "/api/"
upstream = "http://{echo}/protected/"
profiles = ["cc"]

[profiles.cc]
type = "oauth2_client_credentials"
token_url = "http://{echo}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
"#,
        path.display()
    );
    Config::from_str_with_env(&with_listeners(&text), &Env::default()).unwrap()
}

#[tokio::test]
async fn machine_tokens_survive_a_restart_encrypted() {
    let echo = authsidecar::mock::MockProvider::start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let dir = TempDir::new("it-store");
    let path = dir.join("tokens.db");
    let key = authsidecar::store::crypto::generate_key();

    let server = Server::start(cfg(echo.addr, &path, &key)).await.unwrap();
    let r = get(&format!("http://{}/api/x", server.proxy_addr), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(echo.token_requests(), 1);
    assert!(server.shutdown().await);
    // The save runs off the request path, and shutdown waits for it; the worker threads let go of
    // the file a moment after shutdown returns.
    let parsed = authsidecar::store::crypto::parse_key(&key).unwrap();
    wait_for(
        "the fetched token saved in the file, and the file released",
        std::time::Duration::from_secs(10),
        || {
            let seen = match authsidecar::store::Store::open_file(&path, &parsed, None) {
                Ok(store) => match store.names("token:") {
                    Ok(names) if !names.is_empty() => Ok(()),
                    other => Err(format!("token records: {other:?}")),
                },
                Err(e) => Err(format!("the file does not open: {e}")),
            };
            std::future::ready(seen)
        },
    )
    .await;

    let server = Server::start(cfg(echo.addr, &path, &key)).await.unwrap();
    let r = get(&format!("http://{}/api/x", server.proxy_addr), &[]).await;
    assert_eq!(r.status, 200, "the saved token is accepted by the upstream");
    assert_eq!(
        echo.token_requests(),
        1,
        "no new token request after the restart"
    );
    assert!(server.shutdown().await);

    let raw = std::fs::read(&path).unwrap();
    for t in echo.state.issued_tokens() {
        assert!(
            !raw.windows(t.len()).any(|w| w == t.as_bytes()),
            "token in plaintext"
        );
    }
    assert!(!raw.windows(11).any(|w| w == b"demo-secret"));

    // Another key cannot read it: the token is fetched again.
    let server = Server::start(cfg(
        echo.addr,
        &path,
        &authsidecar::store::crypto::generate_key(),
    ))
    .await
    .unwrap();
    assert_eq!(
        get(&format!("http://{}/api/x", server.proxy_addr), &[])
            .await
            .status,
        200
    );
    assert_eq!(echo.token_requests(), 2);
    server.shutdown().await;
}

#[test]
fn a_file_store_needs_a_valid_key() {
    for (store, expect) in [
        (
            "[store]\nkind = \"file\"\n",
            "store.key: required for kind \"file\"",
        ),
        // Without `kind` the section means the embedded file store: it needs a key too.
        ("[store]\n", "store.key: required for kind \"file\""),
        (
            "[store]\nkind = \"file\"\nkey = \"c2hvcnQ=\"\n",
            "store.key: 5 bytes; expected 32",
        ),
        (
            "[store]\nkind = \"disk\"\n",
            "store.kind: unknown kind \"disk\"",
        ),
        (
            "[store]\nkind = \"memory\"\npath = \"x\"\n",
            "store.path: not used by kind \"memory\"",
        ),
    ] {
        let text = format!("{store}[[routes]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:1/\"\nprofiles = [\"n\"]\n[profiles.n]\ntype = \"none\"\n");
        let err = Config::from_str_with_env(&text, &Env::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expect), "{err}");
    }
}

/// Child process of `a_killed_writer_loses_no_committed_record`: writes records until killed,
/// printing each name after its write committed. Run only by that test.
#[test]
#[ignore = "run as a child process by a_killed_writer_loses_no_committed_record"]
fn store_writer_child() {
    use std::io::Write;
    let (Ok(path), Ok(key)) = (
        std::env::var("STORE_CHILD_PATH"),
        std::env::var("STORE_CHILD_KEY"),
    ) else {
        return;
    };
    let key = authsidecar::store::crypto::parse_key(&key).unwrap();
    let store =
        authsidecar::store::Store::open_file(std::path::Path::new(&path), &key, None).unwrap();
    let mut out = std::io::stdout();
    for i in 0u64.. {
        let name = format!("grant:p:-:user{}", i % 50);
        // Each round rewrites a grant with a new (rotated) refresh token, as refreshes do.
        store
            .put(
                &name,
                format!("rt-{i}-{}", "x".repeat(200)).as_bytes(),
                None,
            )
            .unwrap();
        writeln!(out, "{name} {i}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn a_killed_writer_loses_no_committed_record() {
    use std::io::{BufRead, BufReader};
    let dir = TempDir::new("kill");
    let path = dir.join("grants.db");
    let key = authsidecar::store::crypto::generate_key();
    let mut child = Proc::spawn(
        "the store writer (this test binary)",
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "store::store_writer_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("STORE_CHILD_PATH", &path)
            .env("STORE_CHILD_KEY", &key)
            .stdout(std::process::Stdio::piped()),
    );
    let stdout = child.stdout.take().unwrap();
    let mut committed: std::collections::HashMap<String, u64> = Default::default();
    let mut lines = BufReader::new(stdout).lines();
    // Let it write a few hundred records, then SIGKILL it mid-burst.
    while committed.values().count() < 50 || committed.values().max().copied().unwrap_or(0) < 300 {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some((name, i)) = line.split_once(' ') {
            if let Ok(i) = i.parse() {
                committed.insert(name.to_string(), i);
            }
        }
    }
    child.kill();
    assert!(
        committed.len() >= 50,
        "the writer wrote too little: {}",
        committed.len()
    );

    let key = authsidecar::store::crypto::parse_key(&key).unwrap();
    let store = authsidecar::store::Store::open_file(&path, &key, None).unwrap();
    for (name, i) in &committed {
        let v = store
            .get(name)
            .unwrap()
            .unwrap_or_else(|| panic!("{name} lost"));
        let v = String::from_utf8(v).unwrap();
        let n: u64 = v.split('-').nth(1).unwrap().parse().unwrap();
        // The record is whole and at least as new as the last write reported committed.
        assert!(n >= *i, "{name}: {n} < {i}");
        assert!(v.ends_with(&"x".repeat(200)));
    }
    // Every record in the file opens: no half record.
    for name in store.names("").unwrap() {
        assert!(store.get(&name).unwrap().is_some(), "{name} does not open");
    }
    drop(store);
}
