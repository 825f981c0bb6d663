//! Custom token requests and responses (`token_request`, `token_response`) and per-grant
//! upstreams (`{{grant.NAME}}` with `upstream_hosts`), against the mock provider's JSON-login
//! imitation and its Salesforce-like `instance_url`.

use std::time::Duration;

use authsidecar::config::{Config, Env};
use authsidecar::mock::{MockProvider, MockSettings};
use authsidecar::Server;

use crate::support::*;

/// A JSON-login provider at an odd path: the token at `/data/accessToken`, an RFC 3339 expiry,
/// the type "Token".
const JSON_LOGIN_PROFILE: &str = r#"
[profiles.jl]
type = "oauth2_password"
token_url = "http://{idp}/api/v2/session/json-login"
username = "demo-user"
password = "demo-password"
client_id = "demo-client"
token_request = { encoding = "json", headers = { X-Client = "{{client_id}}" }, body = { login = { user = "{{username}}", password = "{{password}}" }, refreshToken = "{{refresh_token}}" } }
token_response = { access_token = "/data/accessToken", refresh_token = "/data/refreshToken", expires_at = "/data/expiresAt", token_type = "Token" }
"#;

async fn idp(lifetime: Duration, users: &[(&str, &str)]) -> MockProvider {
    idp_at([127, 0, 0, 1], lifetime, users).await
}

async fn idp_at(ip: [u8; 4], lifetime: Duration, users: &[(&str, &str)]) -> MockProvider {
    let mut settings = MockSettings {
        token_lifetime: lifetime,
        ..Default::default()
    };
    for (u, p) in users {
        settings.users.push((u.to_string(), (*p).into()));
    }
    MockProvider::start_with((ip, 0).into(), settings)
        .await
        .unwrap()
}

fn load(text: &str) -> Result<Config, String> {
    Config::from_str_with_env(&with_listeners(text), &Env::default()).map_err(|e| e.to_string())
}

async fn start(text: &str) -> Server {
    Server::start(load(text).unwrap_or_else(|e| panic!("config errors:\n{e}")))
        .await
        .unwrap()
}

fn authorization(r: &Resp) -> String {
    let a = r.echoed("authorization");
    assert_eq!(a.len(), 1, "{a:?}");
    a[0].clone()
}

#[tokio::test]
async fn a_json_login_provider_is_used_cached_and_refreshed_near_expiry() {
    // Time passing is the point: a 4 s token is refreshed in its second half.
    let idp = idp(Duration::from_secs(4), &[]).await;
    let text = format!(
        "[[routes]]\nprefix = \"/j/\"\nupstream = \"http://{a}/echo/\"\nprofiles = [\"jl\"]\n{}",
        JSON_LOGIN_PROFILE.replace("{idp}", &idp.addr.to_string()),
        a = idp.addr
    );
    let server = start(&text).await;
    let url = format!("http://{}/j/items", server.proxy_addr);

    let r = get(&url, &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let first = authorization(&r);
    // The non-Bearer type, as token_response.token_type says (the default field).
    assert!(first.starts_with("Token mock-at-"), "{first}");
    assert_eq!(
        idp.counters()
            .json_logins
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // Exactly what the profile wrote: no grant_type, no client authentication, and the refresh
    // member left out of a login.
    assert_eq!(idp.state.last_json_login(), vec!["login".to_string()]);
    // The admin API shows the request's shape by names and the response's pointers, no value.
    let admin = get(
        &format!("http://{}/admin/profiles/jl", server.admin_addr),
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    )
    .await;
    let v = admin.json();
    let c = &v["credentials"];
    assert_eq!(c["token_request"]["encoding"], "json", "{v}");
    assert_eq!(
        c["token_request"]["headers"],
        serde_json::json!(["x-client"])
    );
    assert_eq!(
        c["token_request"]["body"],
        serde_json::json!(["login", "refreshToken"])
    );
    assert_eq!(c["token_response"]["expires_at"], "/data/expiresAt");
    assert_eq!(c["token_response"]["token_type"], "Token");
    let shown = String::from_utf8_lossy(&admin.body);
    assert!(!shown.contains("demo-password"), "{shown}");

    // Cached.
    let r = get(&url, &[]).await;
    assert_eq!(authorization(&r), first);
    assert_eq!(
        idp.counters()
            .json_logins
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );

    // Near expiry one request starts a refresh with the refresh token; a later one carries the
    // new token.
    let second = wait_for("a refreshed token", Duration::from_secs(15), || {
        let url = url.clone();
        let first = first.clone();
        async move {
            let r = get(&url, &[]).await;
            if r.status != 200 {
                return Err(format!("status {}", r.status));
            }
            let a = authorization(&r);
            if a != first {
                Ok(a)
            } else {
                Err("the first token".to_string())
            }
        }
    })
    .await;
    assert!(second.starts_with("Token mock-at-"));
    assert_eq!(
        idp.counters()
            .json_logins
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    let keys = idp.state.last_json_login();
    assert!(keys.contains(&"refreshToken".to_string()), "{keys:?}");
    assert!(!keys.contains(&"grant_type".to_string()), "{keys:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_token_missing_at_its_pointer_is_an_error_naming_the_key() {
    let idp = idp(Duration::from_secs(3600), &[]).await;
    let profile = JSON_LOGIN_PROFILE
        .replace("{idp}", &idp.addr.to_string())
        .replace("/data/accessToken", "/data/token");
    let text = format!(
        "[[routes]]\nprefix = \"/j/\"\nupstream = \"http://{a}/echo/\"\nprofiles = [\"jl\"]\n{profile}",
        a = idp.addr
    );
    let server = start(&text).await;
    let r = get(&format!("http://{}/j/x", server.proxy_addr), &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), "idp_invalid_response");
    let v = r.json();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("token_response.access_token: /data/token not found in the token response"),
        "{msg}"
    );
    assert!(
        !msg.contains("mock-at-") && !msg.contains("mock-rt-"),
        "{msg}"
    );
    assert_eq!(v["error"]["profile"], "jl");
    assert_eq!(idp.echo_count(), 0);
    server.shutdown().await;
}

#[test]
fn check_refuses_what_cannot_work() {
    let base =
        "[[routes]]\nprefix = \"/j/\"\nupstream = \"http://127.0.0.1:1/\"\nprofiles = [\"jl\"]\n";
    let profile = JSON_LOGIN_PROFILE.replace("{idp}", "127.0.0.1:1");
    assert!(load(&format!("{base}{profile}")).is_ok());
    for (change, expected) in [
        (
            ("encoding = \"json\"", "encoding = \"xml\""),
            "profiles.jl.token_request.encoding: unknown encoding \"xml\"",
        ),
        (
            ("encoding = \"json\",", "encoding = \"json\", method = \"PUT\","),
            "profiles.jl.token_request.method: unknown key",
        ),
        (
            ("access_token = \"/data/accessToken\"", "access_token = \"data.accessToken\""),
            "profiles.jl.token_response.access_token: \"data.accessToken\" is not a JSON Pointer",
        ),
        (
            ("token_type = \"Token\"", "token_type = \"Token x\""),
            "profiles.jl.token_response.token_type: expected an authentication scheme name",
        ),
        (
            ("expires_at = ", "expires_in = \"/x\", expires_at = "),
            "profiles.jl.token_response.expires_at: set together with expires_in",
        ),
        (
            ("client_id = \"demo-client\"\n", ""),
            "profiles.jl.client_id: required: token_request uses {{client_id}}",
        ),
        (
            ("client_id = \"demo-client\"\n", "client_id = \"c\"\nclient_auth = \"post\"\n"),
            "profiles.jl.client_auth: not used with token_request",
        ),
        (
            ("{{client_id}}", "{{client_secret}}"),
            "profiles.jl.client_secret: required: token_request uses {{client_secret}}",
        ),
        (
            ("{{client_id}}", "{{code}}"),
            "profiles.jl.token_request: uses {{code}}, which has no value for type \"oauth2_password\"",
        ),
        (
            ("{{client_id}}", "{{secret}}"),
            "profiles.jl.token_request.headers.X-Client: unknown variable \"secret\"",
        ),
        (
            ("headers = { X-Client", "headers = { Content-Type"),
            "profiles.jl.token_request.headers.Content-Type: set by the sidecar itself",
        ),
    ] {
        let text = format!("{base}{}", profile.replace(change.0, change.1));
        let e = load(&text).expect_err(expected);
        assert!(e.contains(expected), "{expected}\n--- got:\n{e}");
    }
    // A form body takes no tables.
    let form = profile.replace("encoding = \"json\"", "encoding = \"form\"");
    let e = load(&format!("{base}{form}")).unwrap_err();
    assert!(e.contains("profiles.jl.token_request.body.login: a form body takes strings, numbers and booleans only"), "{e}");
    // The default field follows token_type; with fields of its own the profile decides.
    let cfg = load(&format!("{base}{profile}")).unwrap();
    let p = cfg.profile("jl").unwrap();
    assert_eq!(p.fields.len(), 1);
    assert_eq!(p.fields[0].key, "authorization");
}

#[test]
fn check_refuses_a_grant_upstream_without_upstream_hosts() {
    let profile = JSON_LOGIN_PROFILE.replace("{idp}", "127.0.0.1:1");
    let route = |upstream: &str, hosts: &str| {
        format!("[[routes]]\nprefix = \"/s/\"\nupstream = \"{upstream}\"\nprofiles = [\"jl\"]\n{hosts}\n{profile}")
    };
    let ok = route(
        "{{grant.instanceUrl}}/services/data/v60.0/",
        "upstream_hosts = [\"*.my.salesforce.com\", \"127.0.0.1\"]",
    );
    assert!(load(&ok).is_ok(), "{:?}", load(&ok).err());
    for (text, expected) in [
        (
            route("{{grant.instanceUrl}}/services/data/v60.0/", ""),
            "routes[0].upstream_hosts: required: the upstream's origin comes from the grant ({{grant.instanceUrl}})",
        ),
        (
            route("{{grant.instanceUrl}}/x/", "upstream_hosts = []"),
            "routes[0].upstream_hosts: empty",
        ),
        (
            route("{{grant.instanceUrl}}/x/", "upstream_hosts = [\"*.com\"]"),
            "routes[0].upstream_hosts[0]: \"*.com\": *. must be followed by a domain of two or more labels",
        ),
        (
            route("{{grant.instanceUrl}}/x/", "upstream_hosts = [\"x.example.com:443\"]"),
            "routes[0].upstream_hosts[0]: \"x.example.com:443\": expected a host name",
        ),
        (
            route("http://127.0.0.1:1/", "upstream_hosts = [\"x.example.com\"]"),
            "routes[0].upstream_hosts: only for an upstream whose origin comes from the grant",
        ),
        (
            route("https://{{grant.instanceUrl}}/", "upstream_hosts = [\"x.example.com\"]"),
            "routes[0].upstream: {{grant.NAME}} is allowed only at the start",
        ),
    ] {
        let e = load(&text).expect_err(expected);
        assert!(e.contains(expected), "{expected}\n--- got:\n{e}");
    }
    // Only an OAuth profile keeps a grant.
    let text = "[[routes]]\nprefix = \"/s/\"\nupstream = \"{{grant.instance_url}}/\"\nupstream_hosts = [\"x.example.com\"]\nprofiles = [\"k\"]\n[profiles.k]\ntype = \"api_key\"\napi_key = \"k\"\n[[profiles.k.fields]]\nin = \"header\"\nkey = \"X-Key\"\nvalue = \"{{api_key}}\"\n";
    let e = load(text).unwrap_err();
    assert!(
        e.contains("keeps no grant for {{grant.instance_url}}"),
        "{e}"
    );
}

/// A machine token whose response names the upstream (`data.instanceUrl`): a plain origin on an
/// allowed host is used (with its base path); a hostile one is refused with 502
/// `upstream_not_allowed` and nothing is sent.
#[tokio::test]
async fn a_machine_grant_names_its_upstream_and_hostile_values_are_refused() {
    let idp = idp(Duration::from_secs(3600), &[]).await;
    let upstream = idp_at([127, 0, 0, 2], Duration::from_secs(3600), &[]).await;
    let (ip, up) = (idp.addr, upstream.addr);
    let text = format!(
        "[[routes]]\nprefix = \"/s/\"\nupstream = \"{{{{grant.instanceUrl}}}}/services/data/v60.0/\"\nupstream_hosts = [\"127.0.0.2\"]\nprofiles = [\"jl\"]\n{}",
        JSON_LOGIN_PROFILE.replace("{idp}", &ip.to_string())
    );
    let port = up.port();

    idp.state
        .set_instance_url("demo-user", &format!("http://127.0.0.2:{port}/base/"));
    let server = start(&text).await;
    let r = get(
        &format!("http://{}/s/sobjects/Account?q=1", server.proxy_addr),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["path"], "/base/services/data/v60.0/sobjects/Account");
    assert_eq!(v["query"], "q=1");
    assert_eq!(r.echoed("host"), vec![format!("127.0.0.2:{port}")]);
    assert!(authorization(&r).starts_with("Token "));
    // The request path still cannot climb out of the base path.
    let r = get(
        &format!("http://{}/s/..%2f..%2f..%2fadmin", server.proxy_addr),
        &[],
    )
    .await;
    assert_eq!(r.error_code(), "path_invalid");
    server.shutdown().await;
    assert_eq!(upstream.echo_count(), 1);

    for hostile in [
        format!("http://user:pw@127.0.0.2:{port}"),
        format!("http://127.0.0.2:{port}@evil.example"),
        format!("http://evil.example#@127.0.0.2:{port}"),
        format!("http://127.0.0.2:{port}\\@evil.example"),
        format!("http://127.0.0.2:{port}/a/../../admin"),
        format!("http://127.0.0.2:{port}/%2e%2e/admin"),
        format!("http://127.0.0.2:{port}/..;/admin"),
        format!("http://127.0.0.2:{port}/x?y=1"),
        format!("http://127.0.0.2.evil.example:{port}"),
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.20:{port}"),
        format!("ftp://127.0.0.2:{port}"),
        "javascript:alert(1)".to_string(),
        format!("http://127.0.0.2:{port} /x"),
        String::new(),
    ] {
        idp.state.set_instance_url("demo-user", &hostile);
        let server = start(&text).await;
        let r = get(&format!("http://{}/s/sobjects", server.proxy_addr), &[]).await;
        assert_eq!(
            r.status,
            502,
            "{hostile}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.error_code(), "upstream_not_allowed", "{hostile}");
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(!msg.contains("mock-at-") && !msg.contains("pw@"), "{msg}");
        server.shutdown().await;
    }
    assert_eq!(upstream.echo_count(), 1, "a refused origin got a request");
    assert_eq!(idp.echo_count(), 0, "a refused origin got a request");
}

/// Salesforce-like: each end user's grant carries their own `instance_url`; two users go to two
/// hosts, a third user's host outside `upstream_hosts` gets nothing.
#[tokio::test]
async fn per_user_instance_urls_route_each_user_to_their_own_host() {
    let users = [("alice", "a-pw"), ("bob", "b-pw"), ("carol", "c-pw")];
    let idp = idp(Duration::from_secs(3600), &users).await;
    let bobs = idp_at([127, 0, 0, 2], Duration::from_secs(3600), &[]).await;
    let carols = idp_at([127, 0, 0, 3], Duration::from_secs(3600), &[]).await;
    let ip = idp.addr;
    idp.state
        .set_instance_url("alice", &format!("http://127.0.0.1:{}", ip.port()));
    idp.state
        .set_instance_url("bob", &format!("http://127.0.0.2:{}/bob", bobs.addr.port()));
    idp.state
        .set_instance_url("carol", &format!("http://127.0.0.3:{}", carols.addr.port()));
    let text = format!(
        r#"
[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[[routes]]
prefix = "/sf/"
upstream = "{{{{grant.instance_url}}}}/services/data/v60.0/"
upstream_hosts = ["127.0.0.1", "127.0.0.2"]
profiles = ["sf"]

[profiles.sf]
type = "oauth2_authorization_code"
authorization_url = "http://{ip}/oauth/authorize?login_hint={{{{context.who}}}}"
token_url = "http://{ip}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"

[[profiles.sf.fields]]
in = "header"
key = "Authorization"
value = "Bearer {{{{access_token}}}}"
[[profiles.sf.fields]]
in = "header"
key = "X-Instance"
value = "{{{{grant.instance_url}}}}"
"#
    );
    let server = start(&text).await;
    let url = format!("http://{}/sf/sobjects", server.proxy_addr);
    for (user, _) in users {
        let who = [
            ("X-Authsidecar-User", user),
            ("X-Authsidecar-Context-Who", user),
        ];
        let r = get(&url, &who).await;
        assert_eq!(r.error_code(), "authorization_required", "{user}");
        let login = r.json()["error"]["login_url"].as_str().unwrap().to_string();
        let done = sign_in(&login).await;
        assert_eq!(
            done.status,
            200,
            "{user}: {}",
            String::from_utf8_lossy(&done.body)
        );
    }
    let as_user = |user: &'static str| [("X-Authsidecar-User", user)];

    let r = get(&url, &as_user("alice")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["path"], "/services/data/v60.0/sobjects");
    assert_eq!(r.echoed("host"), vec![format!("127.0.0.1:{}", ip.port())]);
    assert_eq!(
        r.echoed("x-instance"),
        vec![format!("http://127.0.0.1:{}", ip.port())]
    );

    let r = get(&url, &as_user("bob")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["path"], "/bob/services/data/v60.0/sobjects");
    assert_eq!(
        r.echoed("host"),
        vec![format!("127.0.0.2:{}", bobs.addr.port())]
    );
    assert_eq!((idp.echo_count(), bobs.echo_count()), (1, 1));

    // Alice again: the pool holds both origins, each request goes to its own.
    let r = get(&url, &as_user("alice")).await;
    assert_eq!(r.echoed("host"), vec![format!("127.0.0.1:{}", ip.port())]);
    assert_eq!((idp.echo_count(), bobs.echo_count()), (2, 1));

    let r = get(&url, &as_user("carol")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), "upstream_not_allowed");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("127.0.0.3") && msg.contains("upstream_hosts"),
        "{msg}"
    );
    assert_eq!(carols.echo_count(), 0);
    server.shutdown().await;
}

/// `tenant_pattern`: a profile may allow dotted tenants (`contoso.onmicrosoft.com`); `/`, `@`, `?`,
/// `#`, `%`, `\`, `:`, whitespace and `..` are refused whatever the pattern says, and nothing is
/// sent.
#[tokio::test]
async fn a_tenant_pattern_allows_dotted_tenants_and_never_the_dangerous_characters() {
    let field = |p: &str| {
        format!("[[profiles.{p}.fields]]\nin = \"header\"\nkey = \"X-Tenant\"\nvalue = \"{{{{tenant}}}}\"\n")
    };
    let text = format!(
        r#"
[[routes]]
prefix = "/t/"
upstream = "http://{{echo}}/echo/{{tenant}}/"
profiles = ["ms", "plain", "any"]

[profiles.ms]
type = "api_key"
api_key = "k"
tenancy = true
tenant_pattern = '[a-z0-9-]+\.onmicrosoft\.com'
{}
[profiles.plain]
type = "api_key"
api_key = "k"
tenancy = true
{}
[profiles.any]
type = "api_key"
api_key = "k"
tenancy = true
tenant_pattern = '.*'
{}"#,
        field("ms"),
        field("plain"),
        field("any")
    );
    let h = Harness::start(&text).await;
    let url = h.url("/t/x");
    let call = |profile: &'static str, tenant: &str| {
        let (url, tenant) = (url.clone(), tenant.to_string());
        async move {
            get(
                &url,
                &[
                    ("X-Authsidecar-Profile", profile),
                    ("X-Authsidecar-Tenant", tenant.as_str()),
                ],
            )
            .await
        }
    };
    let r = call("ms", "Contoso.onmicrosoft.com").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["path"], "/echo/contoso.onmicrosoft.com/x");
    assert_eq!(r.echoed("x-tenant"), vec!["contoso.onmicrosoft.com"]);
    // The default: one DNS label.
    let r = call("plain", "contoso.onmicrosoft.com").await;
    assert_eq!(r.error_code(), "tenant_invalid");
    assert_eq!(call("plain", "contoso").await.status, 200);
    // The pattern is matched against the whole value.
    for bad in [
        "contoso.example.com",
        "x.contoso.onmicrosoft.com.evil",
        "contoso",
    ] {
        assert_eq!(
            call("ms", bad).await.error_code(),
            "tenant_invalid",
            "{bad}"
        );
    }
    for bad in [
        "a/b",
        "evil.com/x",
        "a@evil.com",
        "a?x=1",
        "a#b",
        "%2e%2e",
        "a\\b",
        "a b",
        "..",
        "a..b",
        ".",
        "a:1",
        "-",
    ] {
        let r = call("any", bad).await;
        assert_eq!(r.error_code(), "tenant_invalid", "{bad}");
    }
    assert_eq!(call("any", "weird_but.ok").await.status, 200);
    assert_eq!(h.echo.echo_count(), 3);

    // Load-time checks.
    let e = load("[profiles.p]\ntype = \"api_key\"\napi_key = \"k\"\ntenant_pattern = \"a\"\n[[profiles.p.fields]]\nin = \"header\"\nkey = \"K\"\nvalue = \"{{api_key}}\"\n").unwrap_err();
    assert!(
        e.contains("profiles.p.tenant_pattern: only used with tenancy = true"),
        "{e}"
    );
    let e = load("[profiles.p]\ntype = \"api_key\"\napi_key = \"k\"\ntenancy = true\ntenant_pattern = \"(\"\n[[profiles.p.fields]]\nin = \"header\"\nkey = \"K\"\nvalue = \"{{api_key}}\"\n").unwrap_err();
    assert!(
        e.contains("profiles.p.tenant_pattern: not a valid regular expression"),
        "{e}"
    );
}

/// An `oauth2_authorization_code` profile that writes its own form request (with `{{grant_type}}`):
/// the code is redeemed with it, and the end user's grant is refreshed with it, each request
/// carrying only its own members.
#[tokio::test]
async fn an_authorization_code_profile_redeems_and_refreshes_with_its_own_request() {
    // Time passing is the point: a 4 s token is refreshed in its second half.
    let idp = idp(Duration::from_secs(4), &[]).await;
    let ip = idp.addr;
    let text = format!(
        r#"
[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[[routes]]
prefix = "/u/"
upstream = "http://{ip}/protected/"
profiles = ["u"]

[profiles.u]
type = "oauth2_authorization_code"
authorization_url = "http://{ip}/oauth/authorize"
token_url = "http://{ip}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
token_request = {{ body = {{ grant_type = "{{{{grant_type}}}}", code = "{{{{code}}}}", redirect_uri = "{{{{redirect_uri}}}}", code_verifier = "{{{{code_verifier}}}}", refresh_token = "{{{{refresh_token}}}}", client_id = "{{{{client_id}}}}", client_secret = "{{{{client_secret}}}}" }} }}
"#
    );
    let server = start(&text).await;
    let url = format!("http://{}/u/me", server.proxy_addr);
    let who = [("X-Authsidecar-User", "alice")];
    let r = get(&url, &who).await;
    let login = r.json()["error"]["login_url"].as_str().unwrap().to_string();
    let done = sign_in(&login).await;
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    let c = idp.counters();
    assert_eq!(
        c.authorization_code
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );

    let r = get(&url, &who).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let first = authorization(&r);
    let second = wait_for("a refreshed grant", Duration::from_secs(15), || {
        let (url, first) = (url.clone(), first.clone());
        async move {
            let r = get(&url, &[("X-Authsidecar-User", "alice")]).await;
            if r.status != 200 {
                return Err(format!("status {}", r.status));
            }
            let a = authorization(&r);
            if a != first {
                Ok(a)
            } else {
                Err("the first token".to_string())
            }
        }
    })
    .await;
    assert!(second.starts_with("Bearer mock-at-"));
    assert!(c.refresh_token.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert_eq!(
        c.resource_rejected
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    server.shutdown().await;
}

/// `config/examples/oauth-custom-token.toml` works as its header says (routes and profiles as
/// shipped, pointed at an in-process mock).
#[tokio::test]
async fn the_custom_token_example_runs_as_shipped() {
    let idp = idp(Duration::from_secs(3600), &[]).await;
    let file = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/examples/oauth-custom-token.toml"),
    )
    .unwrap();
    let routes = &file[file.find("[[routes]]").unwrap()..];
    let server = start(&routes.replace("127.0.0.1:9190", &idp.addr.to_string())).await;
    let url = format!("http://{}/acme/items", server.proxy_addr);
    let r = get(&url, &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(authorization(&r).starts_with("Token mock-at-"));
    assert_eq!(r.json()["path"], "/echo/acme/items");
    let r = get(&url, &[("X-Authsidecar-Profile", "acme-form")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(authorization(&r).starts_with("Token mock-at-"));
    assert_eq!(r.echoed("x-token-kind"), vec!["Token"]);
    server.shutdown().await;
}
