//! Provider presets (`preset = "NAME"`, `presets_file`): the shipped catalog, override rules, errors,
//! and each quirk handled end to end against the mock provider imitating it.

use std::process::Command;

use authsidecar::config::presets::Catalog;
use authsidecar::config::{Config, Env, Grant};
use authsidecar::Server;

use crate::support::*;

/// The domain every URL of a shipped preset must be on.
const HOSTS: &[(&str, &str)] = &[
    ("google", "google.com|googleapis.com"),
    ("microsoft", "login.microsoftonline.com"),
    ("salesforce", "salesforce.com"),
    ("salesforce-my-domain", "salesforce.com"),
    ("slack", "slack.com"),
    ("slack-user", "slack.com"),
    ("github", "github.com"),
    ("gitlab", "gitlab.com"),
    ("atlassian", "auth.atlassian.com"),
    ("hubspot", "hubspot.com|hubapi.com"),
    ("zoom", "zoom.us"),
    ("servicenow", "service-now.com"),
    ("zendesk", "zendesk.com"),
    ("dropbox", "dropbox.com|dropboxapi.com"),
    ("box", "box.com"),
    ("docusign", "account.docusign.com"),
    ("docusign-demo", "account-d.docusign.com"),
    ("okta", "okta.com"),
    ("auth0", "auth0.com"),
];

fn on_domain(host: &str, domains: &str) -> bool {
    domains
        .split('|')
        .any(|d| host == d || host.ends_with(&format!(".{d}")))
}

/// Loads `text` with the test listeners; a `presets_file = …` line goes first, as a top-level key
/// must (before any table).
fn load(text: &str, env: Env) -> Result<Config, Vec<String>> {
    let (top, rest): (Vec<&str>, Vec<&str>) =
        text.lines().partition(|l| l.starts_with("presets_file"));
    let text = format!("{}\n{}", top.join("\n"), with_listeners(&rest.join("\n")));
    Config::from_str_with_env(&text, &env).map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
}

const AUTH: &str = "[auth]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:0\"\n";

#[test]
fn every_shipped_preset_fills_https_urls_on_its_providers_hosts_and_check_shows_them() {
    let catalog = Catalog::builtin().unwrap();
    let names: Vec<&str> = catalog.names();
    for (name, _) in HOSTS {
        assert!(names.contains(name), "{name} is not in the catalog");
    }
    let dir = TempDir::new("presets-check");
    let mut text = format!("[proxy]\nlisten = \"127.0.0.1:0\"\n{AUTH}");
    for p in catalog.iter() {
        let domains = HOSTS
            .iter()
            .find(|(n, _)| *n == p.name)
            .unwrap_or_else(|| panic!("no expected host for preset {}", p.name))
            .1;
        let mut urls = 0;
        for (key, value) in &p.profile {
            if !key.ends_with("_url") {
                continue;
            }
            let url = value.as_str().unwrap().replace("{tenant}", "acme");
            let rest = url
                .strip_prefix("https://")
                .unwrap_or_else(|| panic!("{}.{key} is not https: {url}", p.name));
            let host = rest.split(['/', '?']).next().unwrap();
            assert!(
                on_domain(host, domains),
                "{}.{key}: {host} is not on {domains}",
                p.name
            );
            urls += 1;
        }
        assert!(urls >= 2, "{}: {urls} URLs", p.name);
        assert!(!p.quirk.is_empty(), "{} names no quirk", p.name);
        text.push_str(&format!(
            "[profiles.{n}]\npreset = \"{n}\"\nclient_id = \"id\"\nclient_secret = \"s\"\n\n[[routes]]\nprefix = \"/{n}/\"\nupstream = \"https://api.example.com/\"\nprofiles = [\"{n}\"]\n\n",
            n = p.name
        ));
    }
    let file = dir.join("all-presets.toml");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_authsidecar"))
        .args(["check", "--offline", "-c"])
        .arg(&file)
        .env_remove("AUTHSIDECAR_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in catalog.iter() {
        assert!(
            stdout.contains(&format!("preset {} ({}) filled:", p.name, p.provider)),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains(
            "authorization_url = \"https://accounts.google.com/o/oauth2/v2/auth?access_type=offline&prompt=consent\""
        ),
        "{stdout}"
    );
    assert!(stdout.contains("hint: route upstream"), "{stdout}");
}

#[test]
fn profile_keys_win_and_a_presets_file_adds_and_overrides() {
    let dir = TempDir::new("presets-file");
    std::fs::write(
        dir.join("mine.toml"),
        r#"
[presets.github]
provider = "GitHub Enterprise"
quirk = "our own host"
[presets.github.profile]
type = "oauth2_authorization_code"
authorization_url = "https://ghe.example.com/login/oauth/authorize"
token_url = "https://ghe.example.com/login/oauth/access_token"

[presets.acme-slack]
provider = "Acme chat"
quirk = "Slack's answer shape on another host"
extends = "slack-user"
[presets.acme-slack.profile]
authorization_url = "https://chat.acme.example/oauth/v2/authorize"
token_url = "https://chat.acme.example/api/oauth.v2.access"
"#,
    )
    .unwrap();
    let text = format!(
        r#"{AUTH}
presets_file = "mine.toml"

[[routes]]
prefix = "/a/"
upstream = "https://api.example.com/"
profiles = ["g", "gh", "chat"]

[profiles.g]
preset = "google"
client_id = "id"
client_secret = "s"
token_url = "https://own.example.com/token"
identity_provider = "My Google"
scope = {{ scope = ["openid", "email"] }}

[profiles.gh]
preset = "github"
client_id = "id"
client_secret = "s"

[profiles.chat]
preset = "acme-slack"
client_id = "id"
client_secret = "s"
scope = {{ user_scope = ["chat:write", "users:read"] }}
"#
    );
    let config = load(&text, Env::default().with_base_dir(dir.path())).unwrap();

    let g = config.profile("g").unwrap();
    let o = g.kind.oauth().unwrap();
    assert_eq!(o.token_url, "https://own.example.com/token");
    assert_eq!(g.identity_provider.as_deref(), Some("My Google"));
    assert_eq!(
        o.scope,
        vec![("scope".to_string(), "openid email".to_string())]
    );
    let Grant::AuthorizationCode(c) = &o.grant else {
        panic!("not an authorization-code profile")
    };
    assert!(c.authorization_url.contains("access_type=offline"));
    let used = config.presets.iter().find(|u| u.profile == "g").unwrap();
    let keys: Vec<&str> = used.filled.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        vec!["type", "authorization_url", "revocation_url"],
        "the profile's own keys are not filled"
    );

    // The file's github replaces the shipped one.
    let gh = config.profile("gh").unwrap();
    assert_eq!(
        gh.kind.oauth().unwrap().token_url,
        "https://ghe.example.com/login/oauth/access_token"
    );
    assert_eq!(gh.identity_provider.as_deref(), Some("GitHub Enterprise"));

    // The file's new preset keeps slack-user's answer pointers and comma separator.
    let chat = config.profile("chat").unwrap().kind.oauth().unwrap();
    assert_eq!(
        chat.token_url,
        "https://chat.acme.example/api/oauth.v2.access"
    );
    assert_eq!(
        chat.scope,
        vec![(
            "user_scope".to_string(),
            "chat:write,users:read".to_string()
        )]
    );
    assert_eq!(
        chat.token_response.as_ref().unwrap().access_token,
        "/authed_user/access_token"
    );
}

#[test]
fn preset_errors_name_the_preset_and_the_key() {
    let dir = TempDir::new("presets-errors");
    std::fs::write(
        dir.join("bad.toml"),
        "[presets.bad]\nprovider = \"Bad\"\nquirk = \"q\"\n[presets.bad.profile]\ntype = \"oauth2_client_credentials\"\ntoken_url = \"ftp://bad.example/token\"\n",
    )
    .unwrap();
    let text = r#"
presets_file = "bad.toml"

[[routes]]
prefix = "/a/"
upstream = "https://api.example.com/"
profiles = ["typo", "bad", "key"]

[profiles.typo]
preset = "githib"
type = "oauth2_client_credentials"
token_url = "https://idp.example.com/token"
client_id = "id"

[profiles.bad]
preset = "bad"
client_id = "id"

[profiles.key]
preset = "github"
type = "api_key"
api_key = "k"
[[profiles.key.fields]]
in = "header"
key = "X-Key"
value = "{{api_key}}"
"#;
    let all = load(text, Env::default().with_base_dir(dir.path())).unwrap_err();
    has(
        &all,
        "profiles.typo.preset: unknown preset \"githib\"; known presets: google, microsoft, salesforce,",
    );
    has(&all, "github, gitlab");
    has(&all, "(filled by preset \"bad\")");
    assert!(
        all.iter()
            .any(|e| e.starts_with("profiles.bad.token_url: ") && e.contains("preset \"bad\"")),
        "{all:?}"
    );
    has(
        &all,
        "profiles.key.preset: preset \"github\" fills OAuth 2.0 profiles; type \"api_key\" is not one",
    );

    let missing = load(
        "presets_file = \"nowhere.toml\"\n[[routes]]\nprefix = \"/a/\"\nupstream = \"https://api.example.com/\"\nprofiles = []\n",
        Env::default().with_base_dir(dir.path()),
    )
    .unwrap_err();
    has(&missing, "presets_file: cannot read ");
}

#[test]
fn a_preset_with_a_tenant_url_makes_the_profile_need_a_tenant() {
    let text = format!(
        r#"{AUTH}
[[routes]]
prefix = "/a/"
upstream = "https://api.example.com/"
profiles = ["okta", "gh", "entra-app"]

[profiles.okta]
preset = "okta"
client_id = "id"
client_secret = "s"

[profiles.gh]
preset = "github"
client_id = "id"
client_secret = "s"

# An authorization-code preset serves a machine profile with its token URL.
[profiles.entra-app]
preset = "microsoft"
type = "oauth2_client_credentials"
client_id = "id"
client_secret = "s"
scope = {{ scope = "https://graph.microsoft.com/.default" }}
"#
    );
    let config = load(&text, Env::default()).unwrap();
    let needs = |p: &str| {
        let p = config.profile(p).unwrap();
        (p.tenancy, p.kind.oauth().unwrap().needs_tenant())
    };
    assert_eq!(needs("okta"), (true, true));
    assert_eq!(needs("gh"), (false, false));
    assert_eq!(needs("entra-app"), (true, true));
    let entra = config.profile("entra-app").unwrap();
    assert!(entra
        .tenant_pattern
        .as_ref()
        .unwrap()
        .is_match("contoso.onmicrosoft.com"));
}

async fn start(text: &str) -> Server {
    let config = load(text, Env::default()).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    Server::start(config).await.unwrap()
}

/// A user's first call gets a login link; signing in through the mock makes the second call
/// pass to the mock's protected resource (which accepts only tokens it issued).
async fn sign_in_and_call(server: &Server, prefix: &str) -> Resp {
    let url = format!("http://{}{prefix}items", server.proxy_addr);
    let user = [("X-Authsidecar-User", "alice")];
    let r = get(&url, &user).await;
    assert_eq!(r.error_code(), "authorization_required");
    let login = r.json()["error"]["login_url"].as_str().unwrap().to_string();
    let done = sign_in(&login).await;
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    get(&url, &user).await
}

/// Google (`access_type=offline`, `prompt=consent`), Atlassian (`audience=api.atlassian.com`,
/// `prompt=consent`) and Dropbox (`token_access_type=offline`): the parameters in the shipped
/// preset's authorization URL reach the provider's authorization endpoint; the profile only moves
/// the URL's origin to the mock.
#[tokio::test]
async fn authorization_parameters_of_a_preset_reach_the_authorization_request() {
    let shipped = Catalog::builtin().unwrap();
    for (preset, expected) in [
        (
            "google",
            &[("access_type", "offline"), ("prompt", "consent")][..],
        ),
        (
            "atlassian",
            &[("audience", "api.atlassian.com"), ("prompt", "consent")][..],
        ),
        ("dropbox", &[("token_access_type", "offline")][..]),
    ] {
        let idp = mock().await;
        let shipped_url = shipped.get(preset).unwrap().profile["authorization_url"]
            .as_str()
            .unwrap()
            .to_string();
        let query = shipped_url.split_once('?').unwrap().1;
        let text = format!(
            r#"{AUTH}
[[routes]]
prefix = "/p/"
upstream = "http://{a}/protected/"
profiles = ["p"]

[profiles.p]
preset = "{preset}"
authorization_url = "http://{a}/oauth/authorize?{query}"
token_url = "http://{a}/oauth/token"
revocation_url = "http://{a}/oauth/revoke"
client_id = "demo-client"
client_secret = "demo-secret"
"#,
            a = idp.addr
        );
        let server = start(&text).await;
        let r = sign_in_and_call(&server, "/p/").await;
        assert_eq!(
            r.status,
            200,
            "{preset}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let sent = idp.state.last_authorize();
        let param = |k: &str| sent.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        for (k, v) in expected {
            assert_eq!(param(k).as_deref(), Some(*v), "{preset}: {sent:?}");
        }
        assert_eq!(param("response_type").as_deref(), Some("code"));
        server.shutdown().await;
    }
}

/// Salesforce: each user's token answer names the user's own `instance_url`; with the preset, a
/// route whose origin is `{{grant.instance_url}}` (the preset's hint) sends the call there.
#[tokio::test]
async fn salesforces_instance_url_routes_each_users_calls() {
    let idp = mock().await;
    let a = idp.addr;
    idp.state
        .set_instance_url("demo-user", &format!("http://127.0.0.1:{}", a.port()));
    let text = format!(
        r#"{AUTH}
[[routes]]
prefix = "/sf/"
upstream = "{{{{grant.instance_url}}}}/protected/services/data/v60.0/"
upstream_hosts = ["127.0.0.1"]
profiles = ["sf"]

[profiles.sf]
preset = "salesforce"
authorization_url = "http://{a}/oauth/authorize"
token_url = "http://{a}/oauth/token"
revocation_url = "http://{a}/oauth/revoke"
client_id = "demo-client"
client_secret = "demo-secret"
"#
    );
    let server = start(&text).await;
    let r = sign_in_and_call(&server, "/sf/").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["path"], "/protected/services/data/v60.0/items");
    server.shutdown().await;
}

/// Slack: the user token is nested under `authed_user`, beside a bot token of type "bot"; the
/// shipped slack-user preset's `token_response` (kept by a `presets_file` preset that only moves
/// the URLs to the mock) reads the nested one, the only one the resource accepts.
#[tokio::test]
async fn slacks_nested_user_token_is_read_by_the_preset() {
    let idp = mock().await;
    let dir = TempDir::new("presets-slack");
    std::fs::write(
        dir.join("mock-presets.toml"),
        format!(
            r#"
[presets.slack-mock]
provider = "Slack (mock)"
quirk = "slack-user on the mock provider"
extends = "slack-user"
[presets.slack-mock.profile]
authorization_url = "http://{a}/slack/oauth/authorize"
token_url = "http://{a}/api/oauth.v2.access"
"#,
            a = idp.addr
        ),
    )
    .unwrap();
    let text = format!(
        r#"{AUTH}
presets_file = "mock-presets.toml"

[[routes]]
prefix = "/s/"
upstream = "http://{a}/protected/"
profiles = ["s"]

[profiles.s]
preset = "slack-mock"
client_id = "demo-client"
client_secret = "demo-secret"
scope = {{ user_scope = ["chat:write", "users:read"] }}
"#,
        a = idp.addr
    );
    let config = load(&text, Env::default().with_base_dir(dir.path()))
        .unwrap_or_else(|e| panic!("{}", e.join("\n")));
    let server = Server::start(config).await.unwrap();
    let r = sign_in_and_call(&server, "/s/").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let auth = r.echoed("authorization");
    assert_eq!(auth.len(), 1);
    assert!(auth[0].starts_with("Bearer mock-at-"), "{auth:?}");
    assert!(!auth[0].contains("xoxb"), "the bot token was used");
    let sent = idp.state.last_authorize();
    assert!(
        sent.iter()
            .any(|(k, v)| k == "user_scope" && v == "chat:write,users:read"),
        "{sent:?}"
    );
    server.shutdown().await;
}

/// GitHub: the token endpoint answers form-encoded text unless asked for JSON; the sidecar asks,
/// so a profile with only the preset and moved URLs signs in.
#[tokio::test]
async fn githubs_token_answer_is_json_because_the_sidecar_asks_for_it() {
    let idp = mock().await;
    let token_url = format!("http://{}/login/oauth/access_token", idp.addr);
    // The imitation is faithful: without Accept: application/json the answer is a form.
    let r = send(
        http::Method::POST,
        &token_url,
        &[("content-type", "application/x-www-form-urlencoded")],
        "grant_type=client_credentials&client_id=demo-client&client_secret=demo-secret",
    )
    .await;
    let ct = r.headers["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/x-www-form-urlencoded"), "{ct}");
    assert!(
        String::from_utf8_lossy(&r.body).starts_with("access_token=mock-at-"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );

    let text = format!(
        r#"{AUTH}
[[routes]]
prefix = "/gh/"
upstream = "http://{a}/protected/"
profiles = ["gh"]

[profiles.gh]
preset = "github"
authorization_url = "http://{a}/oauth/authorize"
token_url = "{token_url}"
client_id = "demo-client"
client_secret = "demo-secret"
"#,
        a = idp.addr
    );
    let server = start(&text).await;
    let r = sign_in_and_call(&server, "/gh/").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    server.shutdown().await;
}

/// Microsoft Entra ID: the tenant is a path segment and may be a dotted domain
/// (`contoso.onmicrosoft.com`), as the preset's tenant_pattern allows; one DNS label would refuse
/// it. A machine profile takes the preset's token URL.
#[tokio::test]
async fn entras_dotted_tenant_reaches_the_token_endpoint() {
    let idp = mock().await;
    let text = format!(
        r#"
[[routes]]
prefix = "/m/"
upstream = "http://{a}/protected/"
profiles = ["m"]

[profiles.m]
preset = "microsoft"
type = "oauth2_client_credentials"
token_url = "http://{a}/{{tenant}}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
"#,
        a = idp.addr
    );
    let server = start(&text).await;
    let url = format!("http://{}/m/items", server.proxy_addr);
    let r = get(&url, &[("X-Authsidecar-Tenant", "Contoso.onmicrosoft.com")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.echoed("authorization")[0].starts_with("Bearer mock-at-"));
    for bad in ["contoso.onmicrosoft.com/x", "a..b", "-bad.example"] {
        let r = get(&url, &[("X-Authsidecar-Tenant", bad)]).await;
        assert_eq!(r.error_code(), "tenant_invalid", "{bad}");
    }
    server.shutdown().await;
}

/// Client authentication as each provider documents it: Zoom and DocuSign want a Basic header,
/// HubSpot and Box the credentials in the form body. A machine profile with the preset (only its
/// token URL moved to the mock) authenticates the preset's way.
#[tokio::test]
async fn client_authentication_follows_the_providers_documented_method() {
    use std::sync::atomic::Ordering::SeqCst;
    for (preset, basic) in [
        ("zoom", true),
        ("docusign", true),
        ("hubspot", false),
        ("box", false),
    ] {
        let idp = mock().await;
        let text = format!(
            r#"
[[routes]]
prefix = "/c/"
upstream = "http://{a}/protected/"
profiles = ["c"]

[profiles.c]
preset = "{preset}"
type = "oauth2_client_credentials"
token_url = "http://{a}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
"#,
            a = idp.addr
        );
        let server = start(&text).await;
        let r = get(&format!("http://{}/c/x", server.proxy_addr), &[]).await;
        assert_eq!(
            r.status,
            200,
            "{preset}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let c = idp.counters();
        let seen = (c.client_basic.load(SeqCst), c.client_post.load(SeqCst));
        let want = if basic { (1, 0) } else { (0, 1) };
        assert_eq!(seen, want, "{preset}: (basic, post)");
        server.shutdown().await;
    }
}
