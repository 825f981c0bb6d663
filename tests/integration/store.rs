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
    let dir = std::env::temp_dir().join(format!("authsidecar-it-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("tokens.db");
    let key = authsidecar::store::crypto::generate_key();

    let server = Server::start(cfg(echo.addr, &path, &key)).await.unwrap();
    let r = get(&format!("http://{}/api/x", server.proxy_addr), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(echo.token_requests(), 1);
    // The save runs off the request path; give it a moment before stopping.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(server.shutdown().await);

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
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_store_needs_a_valid_key() {
    for (store, expect) in [
        (
            "[store]\nkind = \"file\"\n",
            "store.key: required for kind \"file\"",
        ),
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
