//! The profile form's API and what it writes: `[admin] profiles_dir` (loaded at start and on reload,
//! a clash or a bad file refused), `${store:NAME}` references (read from the encrypted store, a
//! missing one named), and `/admin/profile-form/…` (validate by field, save with the secret in the
//! store and never in the file, delete, read-only main-file profiles, a memory store refusing
//! secrets, concurrent saves). The console's form in a real browser is in `console.rs`.

use std::path::{Path, PathBuf};

use authsidecar::config::Config;
use authsidecar::mock::{MockProvider, MockSettings};
use authsidecar::Server;
use base64::Engine;
use http::Method;
use serde_json::{json, Value};

use crate::support::browser::Browser;
use crate::support::*;

/// The client secret typed into the form: never in a file, an answer or a log line.
const SECRET: &str = "form-secret-Zq8/+&= x";

const AUTH: (&str, &str) = ("authorization", "Bearer test-admin-token-0123456789");

async fn mock() -> MockProvider {
    MockProvider::start_with(
        ([127, 0, 0, 1], 0).into(),
        MockSettings {
            clients: vec![
                ("demo-client".into(), "demo-secret".into()),
                ("form-client".into(), SECRET.into()),
            ],
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// The main config: a file store, `profiles_dir = "profiles"`, one profile of its own (`cc`), and
/// `extra` lines (more profiles or routes).
fn main_text(mock: std::net::SocketAddr, dir: &Path, key: &str, extra: &str) -> String {
    with_profiles_dir(&format!(
        r#"
[store]
kind = "file"
path = "{}"
key = "{key}"

[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[[routes]]
prefix = "/api/"
upstream = "http://{mock}/protected/"
profiles = ["cc"]

[profiles.cc]
type = "oauth2_client_credentials"
token_url = "http://{mock}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
{extra}
"#,
        dir.join("tokens.db").display()
    ))
}

/// `text` with the test listeners and `[admin] profiles_dir = "profiles"`.
fn with_profiles_dir(text: &str) -> String {
    with_listeners(text).replacen(
        &format!("token = \"{ADMIN_TOKEN}\"\n"),
        &format!("token = \"{ADMIN_TOKEN}\"\nprofiles_dir = \"profiles\"\n"),
        1,
    )
}

fn form(mock: std::net::SocketAddr, token_url: &str) -> Value {
    json!({
        "type": "oauth2_client_credentials",
        "identity_provider": "Mock IdP",
        "client_id": "form-client",
        "client_secret": {"value": SECRET},
        "token_url": token_url.replace("{mock}", &mock.to_string()),
        "scope": [{"key": "scope", "value": "demo.read"}],
        "token_params": [{"key": "audience", "value": "api"}],
        "client_auth": "post",
        "fields": [{"in": "header", "key": "Authorization", "value": "Bearer {{access_token}}"}],
    })
}

async fn admin(server: &Server, method: Method, path: &str, body: Option<&Value>) -> Resp {
    send(
        method,
        &format!("http://{}{path}", server.admin_addr),
        &[AUTH, ("content-type", "application/json")],
        body.map(|b| b.to_string()).unwrap_or_default(),
    )
    .await
}

/// `POST /admin/profile-form/validate` with `form` (its `name` in it).
async fn validate_form(server: &Server, form: &Value) -> Resp {
    let r = admin(
        server,
        Method::POST,
        "/admin/profile-form/validate",
        Some(form),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r
}

/// `PUT /admin/profile-form/{name}` with `form`.
async fn put_form(server: &Server, name: &str, form: &Value) -> Resp {
    let path = format!("/admin/profile-form/{name}");
    admin(server, Method::PUT, &path, Some(form)).await
}

/// The secret in every form a file could hold it: as typed, base64, percent-encoded.
fn assert_no_secret(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
    let pct = percent_encoding::utf8_percent_encode(SECRET, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    for (form, needle) in [
        ("raw", SECRET),
        ("base64", b64.as_str()),
        ("base64url", b64url.as_str()),
        ("percent", pct.as_str()),
        ("prefix", &SECRET[..12]),
    ] {
        assert!(!text.contains(needle), "{what} holds the secret ({form})");
    }
}

struct Setup {
    mock: MockProvider,
    dir: TempDir,
    path: PathBuf,
    key: String,
}

impl Setup {
    async fn new(name: &str, extra: &str) -> Setup {
        let mock = mock().await;
        let dir = TempDir::new(name);
        let key = authsidecar::store::crypto::generate_key();
        let path = dir.join("sidecar.toml");
        std::fs::write(&path, main_text(mock.addr, &dir.join(""), &key, extra)).unwrap();
        Setup {
            mock,
            dir,
            path,
            key,
        }
    }

    fn rewrite(&self, extra: &str) {
        std::fs::write(
            &self.path,
            main_text(self.mock.addr, &self.dir.join(""), &self.key, extra),
        )
        .unwrap();
    }

    async fn start(&self) -> Server {
        Server::start_with_path(
            Config::load(&self.path).unwrap_or_else(|e| panic!("{e}")),
            Some(self.path.clone()),
        )
        .await
        .unwrap()
    }

    fn profile_file(&self, name: &str) -> PathBuf {
        self.dir.join("profiles").join(format!("{name}.toml"))
    }
}

/// The form secret of `formcc` as the store file holds it, once the stopped server let go of it.
async fn stored_secret(db: &Path, key: &authsidecar::secret::StoreKey) -> Option<Vec<u8>> {
    stored_secret_of(db, key, "formcc").await
}

/// The form secret of `profile` as the store file holds it, once the stopped server let go of it.
async fn stored_secret_of(
    db: &Path,
    key: &authsidecar::secret::StoreKey,
    profile: &str,
) -> Option<Vec<u8>> {
    let name = authsidecar::store::Name::secret(&format!("{profile}.client_secret"));
    wait_for(
        "the store file released",
        std::time::Duration::from_secs(10),
        || async {
            match authsidecar::store::Store::open_file(db, key, None) {
                Ok(store) => Ok(store.get(&name).unwrap()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await
}

async fn test_ok(server: &Server, profile: &str) {
    let r = admin(
        server,
        Method::POST,
        &format!("/admin/profiles/{profile}/test"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["ok"], true, "{}", String::from_utf8_lossy(&r.body));
    assert_no_secret("a Test report", &r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_saved_through_the_form_keeps_its_secret_in_the_store_and_works() {
    let s = Setup::new("form-save", "").await;
    let server = s.start().await;

    let r = admin(&server, Method::GET, "/admin/profile-form", None).await;
    assert_eq!(r.status, 200);
    let meta = r.json();
    assert_eq!(meta["available"], true, "{meta}");
    assert_eq!(meta["durable_store"], true);
    assert_eq!(meta["read_only"], json!(["cc"]));
    assert_eq!(meta["editable"], json!([]));

    // Checked while typed: a bad token URL is an error on that field, then fixed.
    let mut bad = form(s.mock.addr, "not a url");
    bad["name"] = json!("formcc");
    let r = validate_form(&server, &bad).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["valid"], false, "{v}");
    assert!(
        v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "token_url"),
        "{v}"
    );
    assert_no_secret("a validate answer", &r.body);
    let mut good = form(s.mock.addr, "http://{mock}/oauth/token");
    good["name"] = json!("formcc");
    let r = validate_form(&server, &good).await;
    assert_eq!(r.json()["valid"], true, "{}", r.json());
    // Validating wrote nothing.
    assert!(!s.profile_file("formcc").exists());
    // A preset fills the provider's URLs; an unknown one is an error on its field.
    assert!(meta["presets"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "github"));
    let mut preset = json!({"name": "gh", "type": "oauth2_authorization_code", "preset": "github",
                            "client_id": "x", "client_secret": {"value": "y"}});
    let r = validate_form(&server, &preset).await;
    assert_eq!(r.json()["valid"], true, "{}", r.json());
    preset["preset"] = json!("no-such-provider");
    let r = validate_form(&server, &preset).await;
    assert_eq!(r.json()["errors"][0]["field"], "preset", "{}", r.json());

    // A bad save is refused whole.
    let r = put_form(&server, "formcc", &form(s.mock.addr, "not a url")).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.error_code(), "profile_invalid");
    assert!(r.json()["error"]["errors"][0]
        .as_str()
        .unwrap()
        .starts_with("profiles.formcc.token_url: "));
    assert!(!s.profile_file("formcc").exists());

    // Saved: the file refers to the store, the reload applied it, the profile's Test works with
    // the secret from the store.
    let r = put_form(
        &server,
        "formcc",
        &form(s.mock.addr, "http://{mock}/oauth/token"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["reloaded"], true);
    assert!(v["summary"].as_str().unwrap().contains("2 profiles"), "{v}");
    assert_no_secret("the save's answer", &r.body);
    let file = std::fs::read(s.profile_file("formcc")).unwrap();
    assert_no_secret("the profile file", &file);
    let text = String::from_utf8(file).unwrap();
    assert!(
        text.contains("client_secret = \"${store:formcc.client_secret}\""),
        "{text}"
    );
    assert!(text.contains("token_url = "), "{text}");
    assert!(
        !s.dir.join("profiles").read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")),
        "a temporary file was left"
    );
    test_ok(&server, "formcc").await;

    // Reopened: the secret is only "set".
    let r = admin(&server, Method::GET, "/admin/profile-form/formcc", None).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["client_secret"], json!({"set": true}));
    assert_eq!(v["client_id"], "form-client");
    assert_eq!(v["scope"], json!([{"key": "scope", "value": "demo.read"}]));
    assert_no_secret("the form's values", &r.body);
    assert!(!String::from_utf8_lossy(&r.body).contains("store:"));

    // Saved again keeping the secret: 200, still works; a hand-written key is kept.
    let t = std::fs::read_to_string(s.profile_file("formcc")).unwrap();
    std::fs::write(
        s.profile_file("formcc"),
        format!("idp_timeout = \"5s\"\n{t}"),
    )
    .unwrap();
    let mut kept = form(s.mock.addr, "http://{mock}/oauth/token");
    kept["client_secret"] = json!({"set": true});
    kept["identity_provider"] = json!("Mock IdP (edited)");
    let r = put_form(&server, "formcc", &kept).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let text = std::fs::read_to_string(s.profile_file("formcc")).unwrap();
    assert!(text.contains("idp_timeout = \"5s\""), "{text}");
    assert!(text.contains("Mock IdP (edited)"), "{text}");
    let r = admin(&server, Method::GET, "/admin/profile-form/formcc", None).await;
    assert_eq!(r.json()["other_keys"], json!(["idp_timeout"]));
    test_ok(&server, "formcc").await;

    // The main file's profiles are read-only here.
    for (m, body) in [
        (Method::GET, None),
        (
            Method::PUT,
            Some(form(s.mock.addr, "http://{mock}/oauth/token")),
        ),
        (Method::DELETE, None),
    ] {
        let r = admin(&server, m.clone(), "/admin/profile-form/cc", body.as_ref()).await;
        assert_eq!(r.status, 409, "{m}");
        assert_eq!(r.error_code(), "profile_not_editable");
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sidecar.toml"));
    }

    // `${store:NAME}` in the main file: read from the running store on reload; a missing name is
    // an error naming the key and the name, and the reload is refused.
    s.rewrite(
        "[profiles.ref]\ntype = \"oauth2_client_credentials\"\ntoken_url = \"http://MOCK/oauth/token\"\nclient_id = \"form-client\"\nclient_secret = \"${store:formcc.client_secret}\"\n"
            .replace("MOCK", &s.mock.addr.to_string())
            .as_str(),
    );
    let r = admin(&server, Method::POST, "/admin/reload", None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    test_ok(&server, "ref").await;
    s.rewrite("[profiles.ref]\ntype = \"api_key\"\napi_key = \"${store:nobody.api_key}\"\n");
    let r = admin(&server, Method::POST, "/admin/reload", None).await;
    assert_eq!(r.status, 422);
    let errors = r.json()["error"]["errors"].to_string();
    assert!(
        errors.contains("profiles.ref.api_key: ${store:nobody.api_key}: the store holds no secret named \\\"nobody.api_key\\\""),
        "{errors}"
    );
    s.rewrite(
        "[profiles.ref]\ntype = \"oauth2_client_credentials\"\ntoken_url = \"http://MOCK/oauth/token\"\nclient_id = \"form-client\"\nclient_secret = \"${store:formcc.client_secret}\"\n"
            .replace("MOCK", &s.mock.addr.to_string())
            .as_str(),
    );

    // The store holds the secret sealed: not in the database file, read back after a stop; a
    // restart resolves the references at start.
    assert!(server.shutdown().await);
    let key = authsidecar::store::crypto::parse_key(&s.key).unwrap();
    let db = s.dir.join("tokens.db");
    let held = stored_secret(&db, &key).await;
    assert_eq!(held.as_deref(), Some(SECRET.as_bytes()));
    assert_no_secret("the store's file", &std::fs::read(&db).unwrap());
    let server = s.start().await;
    test_ok(&server, "formcc").await;
    test_ok(&server, "ref").await;

    // Deleted through the form: refused while a route names it; then the file and its secret go.
    s.rewrite("[[routes]]\nprefix = \"/f/\"\nupstream = \"http://127.0.0.1:9/\"\nprofiles = [\"formcc\"]\n");
    let r = admin(&server, Method::POST, "/admin/reload", None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = admin(&server, Method::DELETE, "/admin/profile-form/formcc", None).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.error_code(), "profile_invalid");
    assert!(s.profile_file("formcc").exists());
    s.rewrite("");
    let r = admin(&server, Method::DELETE, "/admin/profile-form/formcc", None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(!s.profile_file("formcc").exists());
    let r = admin(&server, Method::GET, "/admin/profiles/formcc", None).await;
    assert_eq!(r.status, 404);
    let r = admin(&server, Method::GET, "/admin/profile-form/formcc", None).await;
    assert_eq!(r.status, 404);
    assert!(server.shutdown().await);
    let gone = stored_secret(&db, &key).await;
    assert_eq!(gone, None, "the deleted profile's secret left the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_dir_is_loaded_and_a_clash_or_a_bad_file_is_refused() {
    let s = Setup::new("form-dir", "").await;
    let pdir = s.dir.join("profiles");
    std::fs::create_dir_all(&pdir).unwrap();
    let extra = format!(
        "type = \"oauth2_client_credentials\"\ntoken_url = \"http://{}/oauth/token\"\nclient_id = \"demo-client\"\nclient_secret = \"demo-secret\"\n",
        s.mock.addr
    );
    std::fs::write(pdir.join("extra.toml"), &extra).unwrap();
    let config = Config::load(&s.path).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.profile("extra").is_some());
    assert!(config.profile("cc").is_some());

    // At start: a clash names both files; a file that is not TOML names the file; a bad key names
    // its path and the file.
    std::fs::write(pdir.join("cc.toml"), "type = \"none\"\n").unwrap();
    let e = Config::load(&s.path).unwrap_err().to_string();
    assert!(e.contains("profiles.cc: defined twice"), "{e}");
    assert!(e.contains("sidecar.toml") && e.contains("cc.toml"), "{e}");
    std::fs::remove_file(pdir.join("cc.toml")).unwrap();
    std::fs::write(pdir.join("broken.toml"), "client_secret = \"canary-3").unwrap();
    let e = Config::load(&s.path).unwrap_err().to_string();
    assert!(
        e.contains("broken.toml: TOML syntax error at line 1"),
        "{e}"
    );
    assert!(!e.contains("canary-3"), "{e}");
    std::fs::write(
        pdir.join("broken.toml"),
        "type = \"api_key\"\ncolour = \"blue\"\n",
    )
    .unwrap();
    let e = Config::load(&s.path).unwrap_err().to_string();
    assert!(e.contains("profiles.broken.colour: unknown key"), "{e}");
    assert!(e.contains("broken.toml)"), "{e}");
    std::fs::remove_file(pdir.join("broken.toml")).unwrap();

    // On reload: a bad file refuses the reload whole; the old config keeps serving.
    let server = s.start().await;
    test_ok(&server, "extra").await;
    std::fs::write(pdir.join("extra.toml"), extra.replace("demo-secret", "")).unwrap();
    std::fs::write(pdir.join("later.toml"), "type = \"none\"\n").unwrap();
    std::fs::write(pdir.join("bad.toml"), "type = [").unwrap();
    let r = admin(&server, Method::POST, "/admin/reload", None).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.error_code(), "config_invalid");
    let errors = r.json()["error"]["errors"].to_string();
    assert!(errors.contains("bad.toml: TOML syntax error"), "{errors}");
    let r = admin(&server, Method::GET, "/admin/profiles/later", None).await;
    assert_eq!(r.status, 404, "nothing of the refused reload applies");
    test_ok(&server, "extra").await;
    std::fs::remove_file(pdir.join("bad.toml")).unwrap();
    std::fs::write(pdir.join("extra.toml"), &extra).unwrap();
    let r = admin(&server, Method::POST, "/admin/reload", None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = admin(&server, Method::GET, "/admin/profiles/later", None).await;
    assert_eq!(r.status, 200);
    // The form lists the folder's profiles as editable.
    let r = admin(&server, Method::GET, "/admin/profile-form", None).await;
    assert_eq!(r.json()["editable"], json!(["extra", "later"]));
    assert!(server.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_saves_run_one_at_a_time_and_each_is_whole() {
    let s = Setup::new("form-concurrent", "").await;
    let server = s.start().await;
    let mut a = form(s.mock.addr, "http://{mock}/oauth/token");
    a["identity_provider"] = json!("A");
    let mut b = a.clone();
    b["identity_provider"] = json!("B");
    let (ra, rb) = tokio::join!(
        admin(&server, Method::PUT, "/admin/profile-form/both", Some(&a)),
        admin(&server, Method::PUT, "/admin/profile-form/both", Some(&b)),
    );
    let mut statuses = [ra.status.as_u16(), rb.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 201],
        "one created it, the other replaced it"
    );
    let text = std::fs::read_to_string(s.profile_file("both")).unwrap();
    let last = if text.contains("identity_provider = \"A\"") {
        "A"
    } else {
        assert!(text.contains("identity_provider = \"B\""), "{text}");
        "B"
    };
    let r = admin(&server, Method::GET, "/admin/profiles/both", None).await;
    assert_eq!(
        r.json()["identity_provider"],
        last,
        "the running config is the file's"
    );
    test_ok(&server, "both").await;
    assert!(server.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_durable_store_or_a_profiles_dir_the_form_says_why() {
    let mock = mock().await;
    let dir = TempDir::new("form-memory");
    let path = dir.join("sidecar.toml");
    let base = format!(
        "[[routes]]\nprefix = \"/api/\"\nupstream = \"http://{}/protected/\"\nprofiles = [\"cc\"]\n[profiles.cc]\ntype = \"none\"\n",
        mock.addr
    );
    // No profiles_dir: the form is unavailable.
    std::fs::write(&path, with_listeners(&base)).unwrap();
    let server = Server::start_with_path(Config::load(&path).unwrap(), Some(path.clone()))
        .await
        .unwrap();
    let r = admin(&server, Method::GET, "/admin/profile-form", None).await;
    assert_eq!(r.json()["available"], false);
    assert!(r.json()["reason"]
        .as_str()
        .unwrap()
        .contains("profiles_dir"));
    let r = put_form(&server, "x", &form(mock.addr, "http://{mock}/oauth/token")).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_code(), "profile_form_unavailable");
    assert!(server.shutdown().await);

    // The memory store: a typed secret is refused, nothing written; a profile without one saves.
    std::fs::write(&path, with_profiles_dir(&base)).unwrap();
    let server = Server::start_with_path(Config::load(&path).unwrap(), Some(path.clone()))
        .await
        .unwrap();
    let r = put_form(&server, "x", &form(mock.addr, "http://{mock}/oauth/token")).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_code(), "secret_store_not_durable");
    assert!(!dir.join("profiles").join("x.toml").exists());
    let mut public = form(mock.addr, "http://{mock}/oauth/token");
    public["client_secret"] = Value::Null;
    public["client_auth"] = json!("none");
    let r = put_form(&server, "x", &public).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // The reserved name and malformed names are refused.
    for name in ["validate", "a%20b", ".hidden"] {
        let r = admin(
            &server,
            Method::PUT,
            &format!("/admin/profile-form/{name}"),
            Some(&public),
        )
        .await;
        assert!(
            matches!(r.status.as_u16(), 405 | 409),
            "{name}: {}",
            r.status
        );
    }
    assert!(server.shutdown().await);
}

/// A start with `${store:NAME}` and a memory store fails naming the key.
#[test]
fn a_store_reference_needs_a_durable_store_at_start() {
    let dir = TempDir::new("form-ref-memory");
    let path = dir.join("sidecar.toml");
    std::fs::write(
        &path,
        with_listeners(
            "[[routes]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:9/\"\nprofiles = [\"k\"]\n[profiles.k]\ntype = \"api_key\"\napi_key = \"${store:k.api_key}\"\n",
        ),
    )
    .unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("profiles.k.api_key: ${store:k.api_key}: the store could not be read: needs a durable store"),
        "{e}"
    );
}

/// The console's profile form in a real headless Chromium: a new `oauth2_authorization_code`
/// profile typed in (a bad token URL shown on its field while typing, then fixed), saved, signed in
/// through its Test, its file free of the secret, the store holding it, and the form reopened
/// without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_form_in_a_real_browser() {
    let s = Setup::new("form-browser", "").await;
    let server = s.start().await;
    let mock = s.mock.addr;
    let b = Browser::start(&s.dir).await;
    b.goto(&format!("http://{}/admin/", server.admin_addr))
        .await;
    b.type_into("#token", ADMIN_TOKEN).await;
    b.click("#sign-in").await;
    b.find("#profiles tbody tr[data-profile='cc']").await;
    // The main file's profile has no Edit button.
    assert!(!b.exists("button.edit[data-profile='cc']").await);
    b.wait_text("#pf-dir", "profiles").await;

    b.click("#pf-new").await;
    // Shown once the form's choices are read (the title's text is empty while it is hidden).
    b.wait_text("#pf-title", "New profile").await;
    assert!(b.displayed("#profile-form").await);
    b.type_into("#pf-name", "formcode").await;
    let ty = b
        .script("arguments[0](document.getElementById('pf-type').value)")
        .await;
    assert_eq!(ty, "oauth2_authorization_code");
    b.type_into("#pf-identity_provider", "Mock IdP (form)")
        .await;
    b.type_into("#pf-client_id", "form-client").await;
    b.type_into("#pf-client_secret", SECRET).await;
    b.type_into(
        "#pf-authorization_url",
        &format!("http://{mock}/oauth/authorize"),
    )
    .await;
    b.type_into("#pf-token_url", "not a url").await;
    // Checked while typing: the error shows on its field.
    b.wait_text(
        "#profile-form [data-error-for='token_url']",
        "expected an absolute https:// URL",
    )
    .await;
    b.wait_text("#pf-status", "error(s)").await;
    assert!(b.exists("#pf-token_url.invalid").await);
    b.type_into("#pf-token_url", &format!("http://{mock}/oauth/token"))
        .await;
    b.wait_text("#pf-status", "No errors").await;
    assert_eq!(
        b.text("#profile-form [data-error-for='token_url']").await,
        ""
    );
    assert!(!b.exists("#pf-token_url.invalid").await);
    b.click("#pf-scope-add").await;
    b.type_into("#pf-scope .row:last-child .key", "scope").await;
    b.type_into("#pf-scope .row:last-child .value", "read")
        .await;
    b.wait_text("#pf-status", "No errors").await;

    b.click("#pf-save").await;
    b.wait_text("#pf-result", "Saved").await;
    b.wait_text("#pf-result", "2 profiles").await;
    let row = b
        .wait_text(
            "#profiles tbody tr[data-profile='formcode']",
            "Mock IdP (form)",
        )
        .await;
    assert!(row.contains("oauth2_authorization_code"), "{row}");

    // The new profile works: its Test is a sign-in at the mock, with the secret from the store.
    let console = b.window().await;
    b.click("button.test[data-profile='formcode']").await;
    b.wait_text("#test-outcome", "Auth Test Succeeded").await;
    let page = b.source().await;
    assert_no_secret("the console", page.as_bytes());
    for w in b.windows().await {
        if w != console {
            b.switch_to(&w).await;
            assert_no_secret("the sign-in window", b.source().await.as_bytes());
        }
    }
    b.switch_to(&console).await;

    // The file refers to the store; it holds no secret in any form.
    let file = std::fs::read(s.profile_file("formcode")).unwrap();
    assert_no_secret("the profile file", &file);
    let text = String::from_utf8(file).unwrap();
    assert!(text.contains("${store:formcode.client_secret}"), "{text}");
    assert!(text.contains("scope = \"read\""), "{text}");

    // Reopened: the secret is not shown back, only that it is set.
    b.click("button.edit[data-profile='formcode']").await;
    b.wait_text("#pf-title", "Edit profile formcode").await;
    let typed = b
        .script("arguments[0](document.getElementById('pf-client_secret').value)")
        .await;
    assert_eq!(typed, "");
    let placeholder = b
        .script("arguments[0](document.getElementById('pf-client_secret').placeholder)")
        .await;
    assert!(
        placeholder.as_str().unwrap().contains("set"),
        "{placeholder}"
    );
    let client_id = b
        .script("arguments[0](document.getElementById('pf-client_id').value)")
        .await;
    assert_eq!(client_id, "form-client");
    b.wait_text("#pf-status", "No errors").await;
    assert_no_secret("the reopened form", b.source().await.as_bytes());
    b.quit().await;

    // The store holds the secret (sealed: not in its file).
    assert!(server.shutdown().await);
    let key = authsidecar::store::crypto::parse_key(&s.key).unwrap();
    let db = s.dir.join("tokens.db");
    assert_eq!(
        stored_secret_of(&db, &key, "formcode").await.as_deref(),
        Some(SECRET.as_bytes())
    );
    assert_no_secret("the store's file", &std::fs::read(&db).unwrap());
}

/// With the Redis store, the form's secret is in Redis: a second sidecar on the same Redis resolves
/// `${store:formcc.client_secret}` at its start (its own main file refers to it) and its profile
/// works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_store_holds_the_form_secret_for_another_replica() {
    let mock = mock().await;
    let dir = TempDir::new("form-redis");
    let redis = crate::support::fleet::Redis::start(&dir.join("redis")).await;
    let key = authsidecar::store::crypto::generate_key();
    let store = format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\nkey = \"{key}\"\nprefix = \"form-test:\"\n",
        redis.url()
    );
    let route = format!(
        "[[routes]]\nprefix = \"/api/\"\nupstream = \"http://{}/protected/\"\nprofiles = [\"plain\"]\n[profiles.plain]\ntype = \"none\"\n",
        mock.addr
    );
    let a_path = dir.join("a.toml");
    std::fs::write(&a_path, with_profiles_dir(&format!("{store}{route}"))).unwrap();
    let a = Server::start_with_path(Config::load(&a_path).unwrap(), Some(a_path.clone()))
        .await
        .unwrap();
    let r = put_form(&a, "formcc", &form(mock.addr, "http://{mock}/oauth/token")).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    test_ok(&a, "formcc").await;
    assert_no_secret(
        "the profile file",
        &std::fs::read(dir.join("profiles").join("formcc.toml")).unwrap(),
    );

    let b_path = dir.join("b.toml");
    let reference = format!(
        "[profiles.ref]\ntype = \"oauth2_client_credentials\"\ntoken_url = \"http://{}/oauth/token\"\nclient_id = \"form-client\"\nclient_secret = \"${{store:formcc.client_secret}}\"\n",
        mock.addr
    );
    std::fs::write(
        &b_path,
        with_listeners(&format!("{store}{route}{reference}")),
    )
    .unwrap();
    let b = Server::start_with_path(
        Config::load(&b_path).unwrap_or_else(|e| panic!("{e}")),
        Some(b_path.clone()),
    )
    .await
    .unwrap();
    test_ok(&b, "ref").await;
    assert!(a.shutdown().await);
    assert!(b.shutdown().await);
}
