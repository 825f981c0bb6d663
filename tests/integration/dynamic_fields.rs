//! Dynamic fields in the identity provider's requests (issue 20 item 7): `{{user_field.NAME}}` and
//! `{{context.NAME}}` in `authorization_url`, `token_url`, `scope` and `token_params`, encoded for
//! where they go, kept with the sign-in for the code exchange and refreshes, part of a machine
//! token's cache key; hostile values refused before the provider is asked; `check` naming what
//! cannot exist.

use http::Method;

use authsidecar::config::{Config, Env};
use authsidecar::mock::IdpRequest;
use authsidecar::Server;

use crate::support::*;

/// A per-user profile whose provider URLs, scope and token parameters use a user field and a
/// context value; and a machine profile whose token URL uses a context value.
fn config(echo: std::net::SocketAddr) -> Config {
    parse(&format!(
        r#"
[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[[routes]]
prefix = "/u/"
upstream = "http://{echo}/protected/"
profiles = ["user"]

[[routes]]
prefix = "/m/"
upstream = "http://{echo}/protected/"
profiles = ["machine"]

[profiles.user]
type = "oauth2_authorization_code"
authorization_url = "http://{echo}/{{{{user_field.org}}}}/{{{{context.region}}}}/oauth/authorize?aud={{{{context.region}}}}"
token_url = "http://{echo}/{{{{user_field.org}}}}/{{{{context.region}}}}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
scope = {{ scope = "read org:{{{{user_field.org}}}} region:{{{{context.region}}}}" }}
token_params = {{ audience = "api-{{{{context.region}}}}" }}
reauth_min_token_age = "0s"
[[profiles.user.user_fields]]
key = "org"
label = "Organization"

[profiles.machine]
type = "oauth2_client_credentials"
token_url = "http://{echo}/{{{{context.region}}}}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
"#
    ))
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

fn param<'a>(r: &'a IdpRequest, name: &str) -> Option<&'a str> {
    r.params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn a_sign_in_and_its_refresh_use_the_values_encoded_for_their_place() {
    let echo = mock().await;
    let server = Server::start(config(echo.addr)).await.unwrap();
    let url = format!("http://{}/u/me", server.proxy_addr);
    let alice = ("X-Authsidecar-User", "alice");

    // The context value comes with the request that needs a sign-in; the link keeps it.
    let r = get(&url, &[alice, ("X-Authsidecar-Context-Region", "eu west")]).await;
    assert_eq!(r.error_code(), "authorization_required");
    let login = r.json()["error"]["login_url"].as_str().unwrap().to_string();
    let form = get(&login, &[]).await;
    assert_eq!(form.status, 200);
    assert!(String::from_utf8_lossy(&form.body).contains("name=\"f.org\""));

    // The user field: '?' and a space are encoded inside one path segment.
    let to_idp = post_form(&login, "f.org=a%3Fb+c").await;
    assert_eq!(
        to_idp.status,
        303,
        "{}",
        String::from_utf8_lossy(&to_idp.body)
    );
    let to_callback = get(&location(&to_idp), &[]).await;
    assert_eq!(to_callback.status, 302);
    let done = get(&location(&to_callback), &[]).await;
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));

    let seen = echo.state.idp_requests();
    let authorize = seen.iter().find(|r| r.kind == "authorize").unwrap();
    assert_eq!(authorize.path, "/a%3Fb%20c/eu%20west/oauth/authorize");
    assert_eq!(param(authorize, "aud"), Some("eu west"));
    assert_eq!(
        param(authorize, "scope"),
        Some("read org:a?b c region:eu west")
    );
    let exchange = seen.iter().find(|r| r.kind == "token").unwrap();
    assert_eq!(exchange.path, "/a%3Fb%20c/eu%20west/oauth/token");
    assert_eq!(param(exchange, "grant_type"), Some("authorization_code"));
    assert_eq!(param(exchange, "audience"), Some("api-eu west"));

    // Later calls need no context header: the grant keeps the values. An upstream 401 makes the
    // sidecar refresh, with the values the sign-in used.
    let r = get(&url, &[alice]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    echo.state.reject_resource(1);
    let r = get(&url, &[alice, ("X-Authsidecar-Context-Region", "us")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = echo.state.idp_requests();
    let refresh = seen
        .iter()
        .find(|r| param(r, "grant_type") == Some("refresh_token"))
        .expect("a refresh reached the provider");
    assert_eq!(refresh.path, "/a%3Fb%20c/eu%20west/oauth/token");
    assert_eq!(param(refresh, "audience"), Some("api-eu west"));
    server.shutdown().await;
}

#[tokio::test]
async fn machine_tokens_are_kept_per_context_value() {
    let echo = mock().await;
    let server = Server::start(config(echo.addr)).await.unwrap();
    let url = format!("http://{}/m/x", server.proxy_addr);
    let call = |region: &'static str| {
        let url = url.clone();
        async move { get(&url, &[("X-Authsidecar-Context-Region", region)]).await }
    };

    let eu = call("eu").await;
    assert_eq!(eu.status, 200, "{}", String::from_utf8_lossy(&eu.body));
    assert_eq!(echo.token_requests(), 1);
    let eu_again = call("eu").await;
    assert_eq!(eu_again.status, 200);
    assert_eq!(echo.token_requests(), 1, "the same region is cached");
    let us = call("us").await;
    assert_eq!(us.status, 200);
    assert_eq!(echo.token_requests(), 2, "another region is another token");
    assert_ne!(eu.echoed("authorization"), us.echoed("authorization"));
    assert_eq!(eu.echoed("authorization"), eu_again.echoed("authorization"));
    assert_eq!(
        call("eu").await.echoed("authorization"),
        eu.echoed("authorization")
    );
    assert_eq!(echo.token_requests(), 2);

    let paths: Vec<String> = echo
        .state
        .idp_requests()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(paths, ["/eu/oauth/token", "/us/oauth/token"]);

    // Without the value: a 400 naming the header, nothing asked of the provider.
    let r = get(&url, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "context_value_invalid");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("X-Authsidecar-Context-region"));
    assert_eq!(echo.token_requests(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn hostile_values_are_refused_before_the_provider_is_asked() {
    let echo = mock().await;
    let port = echo.addr.port();
    // The profiles of `config_text`, and one whose token URL has a context value in its host.
    let full = parse(&format!(
        r#"
[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[[routes]]
prefix = "/h/"
upstream = "http://{echo}/protected/"
profiles = ["host"]

[profiles.host]
type = "oauth2_client_credentials"
token_url = "http://{{{{context.region}}}}.localhost:{port}/oauth/token"
allow_insecure_http = true
client_id = "demo-client"
client_secret = "demo-secret"
{shared}"#,
        echo = echo.addr,
        shared = config_text(echo.addr)
    ));
    let server = Server::start(full).await.unwrap();
    let proxy = server.proxy_addr;
    let alice = ("X-Authsidecar-User", "alice");

    for value in ["../x", "a/b", "%2e%2e", "..", "a\\b", "%2F"] {
        for prefix in ["m", "u"] {
            let r = get(
                &format!("http://{proxy}/{prefix}/x"),
                &[alice, ("X-Authsidecar-Context-Region", value)],
            )
            .await;
            assert_eq!(r.status, 400, "{prefix} {value}");
            assert_eq!(r.error_code(), "context_value_invalid", "{prefix} {value}");
            let message = r.json()["error"]["message"].as_str().unwrap().to_string();
            assert!(message.contains("{{context.region}}"), "{message}");
        }
    }
    for value in ["a?b", "a#b", "a.b", "a_b", "-a", ""] {
        let r = get(
            &format!("http://{proxy}/h/x"),
            &[("X-Authsidecar-Context-Region", value)],
        )
        .await;
        assert_eq!(r.status, 400, "{value}");
        assert_eq!(r.error_code(), "context_value_invalid", "{value}");
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains("DNS label"), "{message}");
    }

    // A user field that cannot be a path segment: the form again (400), no redirect.
    let r = get(
        &format!("http://{proxy}/u/me"),
        &[alice, ("X-Authsidecar-Context-Region", "eu")],
    )
    .await;
    let login = r.json()["error"]["login_url"].as_str().unwrap().to_string();
    for value in ["..%2Fx", "a%2Fb", "%252e%252e", ".."] {
        let r = post_form(&login, &format!("f.org={value}")).await;
        assert_eq!(r.status, 400, "{value}");
        let page = String::from_utf8_lossy(&r.body).to_string();
        assert!(page.contains("user_field.org"), "{page}");
    }
    assert!(echo.state.idp_requests().is_empty());
    assert_eq!(echo.token_requests(), 0);
    server.shutdown().await;
}

fn config_text(echo: std::net::SocketAddr) -> String {
    format!(
        r#"
[[routes]]
prefix = "/u/"
upstream = "http://{echo}/protected/"
profiles = ["user"]

[[routes]]
prefix = "/m/"
upstream = "http://{echo}/protected/"
profiles = ["machine"]

[profiles.user]
type = "oauth2_authorization_code"
authorization_url = "http://{echo}/{{{{user_field.org}}}}/{{{{context.region}}}}/oauth/authorize"
token_url = "http://{echo}/{{{{user_field.org}}}}/{{{{context.region}}}}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
[[profiles.user.user_fields]]
key = "org"
label = "Organization"

[profiles.machine]
type = "oauth2_client_credentials"
token_url = "http://{echo}/{{{{context.region}}}}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
"#
    )
}

fn errors(text: &str) -> Vec<String> {
    match Config::from_str_with_env(&with_listeners(text), &Env::default()) {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn check_refuses_variables_a_profile_cannot_have() {
    let all = errors(
        r#"
[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[profiles.machine]
type = "oauth2_client_credentials"
token_url = "https://idp.example/{{user_field.org}}/token"
client_id = "c"
client_secret = "s"

[profiles.params]
type = "oauth2_client_credentials"
token_url = "https://idp.example/token"
client_id = "c"
client_secret = "s"
token_params = { audience = "{{access_token}}" }

[profiles.user]
type = "oauth2_authorization_code"
authorization_url = "https://idp.example:{{context.port}}/authorize"
token_url = "https://idp.example/token"
refresh_url = "https://idp.example/{tenant}/token"
client_id = "c"
client_secret = "s"

[profiles.fields]
type = "oauth2_authorization_code"
authorization_url = "https://idp.example/authorize"
token_url = "https://idp.example/{{user_field.nope}}/token"
client_id = "c"
client_secret = "s"
scope = { scope = "read {{user_field.nope}}" }
"#,
    );
    let text = all.join("\n");
    has(&all, "profiles.machine.token_url");
    assert!(
        text.contains("user_field.org") && text.contains("not per user"),
        "{text}"
    );
    has(&all, "profiles.params.token_params.audience");
    assert!(
        text.contains("unknown variable \"{{access_token}}\""),
        "{text}"
    );
    has(&all, "profiles.user.authorization_url");
    assert!(text.contains("port"), "{text}");
    has(&all, "profiles.fields.token_url");
    has(&all, "profiles.fields.scope.scope");
    assert!(text.contains("not declared in user_fields"), "{text}");
    has(&all, "profiles.user.refresh_url");
    assert!(text.contains("tenancy = false"), "{text}");
}
