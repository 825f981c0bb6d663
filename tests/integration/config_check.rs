//! Config validation: every error at once, each with its key path, never a secret value; and the
//! `check` command on the shipped configs.

use std::path::Path;
use std::process::Command;

use authsidecar::config::{Config, Env};

use crate::support::has;

const SECRET: &str = "canary-secret-4c1d";

fn errors(text: &str) -> Vec<String> {
    let env = Env::from_pairs([("PRESENT", SECRET)]);
    match Config::from_str_with_env(text, &env) {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(e) => {
            let all: Vec<String> = e.0.iter().map(|e| e.to_string()).collect();
            for line in &all {
                assert!(!line.contains(SECRET), "secret in: {line}");
            }
            all
        }
    }
}

#[test]
fn every_error_is_reported_at_once_with_its_key_path() {
    let all = errors(
        r#"
[proxy]
listen = "nowhere"
header_read_timeout = 10
tls_mode = true
worker_scheduling = "fifo"

[[routes]]
prefix = "api/"
upstream = "ftp://x/"
profiles = ["ghost"]

[[routes]]
upstream = "http://127.0.0.1:1/"
profiles = ["k"]

[profiles.k]
type = "api_key"
api_key = "${PRESENT}"
tenancy = "yes"
[[profiles.k.fields]]
in = "heder"
key = "X-Key"
value = "{{api_key}}"
[[profiles.k.fields]]
in = "header"
key = "X-Other"
value = "{{api_key"
[[profiles.k.fields]]
in = "query"
key = "q"
value = "{{nonsense}}"

[profiles.b]
type = "basic"
username = "u"
password = "${MISSING_PASSWORD}"
"#,
    );
    has(
        &all,
        "proxy.listen: invalid address \"nowhere\"; expected IP:port",
    );
    has(&all, "proxy.header_read_timeout: ");
    has(&all, "proxy.tls_mode: unknown key \"tls_mode\"");
    has(
        &all,
        "proxy.worker_scheduling: expected \"batch\" or \"normal\"",
    );
    has(&all, "routes[0].prefix: \"api/\" must start with '/'");
    has(&all, "routes[0].upstream: not an absolute URL");
    has(&all, "routes[0].profiles[0]: unknown profile \"ghost\"");
    has(&all, "routes[1].prefix: required key missing");
    has(&all, "profiles.k.tenancy: invalid type");
    has(
        &all,
        "profiles.b.password: environment variable MISSING_PASSWORD is not set",
    );
    assert!(all.len() >= 9, "{}", all.join("\n"));
}

#[test]
fn field_errors_name_the_field() {
    let all = errors(
        r#"
[[routes]]
prefix = "/a/"
upstream = "http://127.0.0.1:1/"
profiles = ["k"]

[profiles.k]
type = "api_key"
api_key = "${PRESENT}"
[[profiles.k.fields]]
in = "heder"
key = "X-Key"
value = "{{api_key}}"
[[profiles.k.fields]]
in = "header"
key = "X-Other"
value = "{{api_key"
[[profiles.k.fields]]
in = "query"
key = "q"
value = "{{nonsense}}"
[[profiles.k.fields]]
in = "header"
key = "Host"
value = "x"
[[profiles.k.fields]]
in = "header"
key = "X-U"
value = "{{access_token}}"
"#,
    );
    has(&all, "profiles.k.fields[0].in: unknown location \"heder\"; expected header, query, payload or path");
    has(&all, "profiles.k.fields[1].value: unclosed \"{{\"");
    has(
        &all,
        "profiles.k.fields[2].value: unknown variable \"nonsense\"",
    );
    has(
        &all,
        "profiles.k.fields[3].key: header \"Host\" cannot be set by a profile",
    );
    has(&all, "profiles.k.fields[4].value: variable {{access_token}} is not available for type \"api_key\"");
}

#[test]
fn placeholders_must_match_profiles() {
    let all = errors(
        r#"
[[routes]]
prefix = "/a/"
upstream = "http://{tenant}.example.com/{org}/"
profiles = ["k"]

[[routes]]
prefix = "/b/"
upstream = "http://127.0.0.1:1/"
profiles = ["p"]

[profiles.k]
type = "api_key"
api_key = "x"
[[profiles.k.fields]]
in = "header"
key = "X-T"
value = "{{api_key}}"

[profiles.t]
type = "none"
[[profiles.t.fields]]
in = "header"
key = "X-T"
value = "{{tenant}}"

[profiles.p]
type = "none"
[[profiles.p.fields]]
in = "path"
key = "id"
value = "{{user}}"
"#,
    );
    has(
        &all,
        "routes[0].upstream: uses {tenant} but profile \"k\" has tenancy = false",
    );
    has(
        &all,
        "routes[0].upstream: placeholder {org} has no path field in profile \"k\"",
    );
    has(
        &all,
        "profiles.t.fields[0].value: uses {{tenant}} but the profile has tenancy = false",
    );
    has(&all, "routes[1].profiles[0]: profile \"p\" fields[0] is a path field for {id}, but the upstream URL of routes[1] has no {id}");
}

#[test]
fn missing_required_keys_are_named() {
    let all = errors(
        r#"
[[routes]]
prefix = "/a/"
upstream = "http://127.0.0.1:1/"
profiles = ["k", "b"]

[profiles.k]
type = "api_key"
api_key = "${PRESENT}"

[profiles.b]
type = "basic"
password = "${PRESENT}"

[profiles.n]
identity_provider = "x"
"#,
    );
    has(&all, "profiles.k.fields: required for type \"api_key\"");
    has(&all, "profiles.b.username: required for type \"basic\"");
    has(&all, "profiles.n.type: required key missing");
}

#[test]
fn a_connector_that_does_not_exist_is_a_config_error() {
    let base = r#"
[[routes]]
prefix = "/a/"
upstream = "https://127.0.0.1:1/"
profiles = ["cc"]
connector = "nowhere"

[profiles.cc]
type = "oauth2_client_credentials"
token_url = "https://127.0.0.1:1/token"
client_id = "c"
client_secret = "s-0123456789"
connector = "elsewhere"
"#;
    let all = errors(base);
    has(
        &all,
        "routes[0].connector: unknown connector \"nowhere\"; no [connectors.NAME] section is defined",
    );
    has(
        &all,
        "profiles.cc.connector: unknown connector \"elsewhere\"",
    );
    let all = errors(&format!(
        "[connectors.corp]\nurl = \"http://127.0.0.1:3128\"\n{base}"
    ));
    has(
        &all,
        "routes[0].connector: unknown connector \"nowhere\"; expected one of corp",
    );
}

#[test]
fn a_secret_of_the_wrong_type_is_not_echoed() {
    let all = errors(
        "[[routes]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:1/\"\nprofiles = [\"k\"]\n[profiles.k]\ntype = \"basic\"\nusername = \"u\"\npassword = 9182.73645\n",
    );
    has(&all, "profiles.k.password: invalid type");
    assert!(!all.join("\n").contains("9182"));
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_authsidecar"))
}

fn shipped_configs() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("config/authsidecar.toml")];
    let examples = root.join("config/examples");
    if let Ok(dir) = std::fs::read_dir(&examples) {
        for e in dir.flatten() {
            if e.path().extension().is_some_and(|x| x == "toml") {
                files.push(e.path());
            }
        }
    }
    files
}

#[test]
fn check_passes_on_every_shipped_config() {
    for file in shipped_configs() {
        // Offline: an example that reads a real provider's discovery document needs no network.
        let out = bin()
            .arg("check")
            .arg("--offline")
            .arg("-c")
            .arg(&file)
            .env_remove("AUTHSIDECAR_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("routes (") && stdout.contains("profiles ("),
            "{stdout}"
        );
    }
}

#[test]
fn check_fails_with_every_error_and_no_secret() {
    let dir = crate::support::TempDir::new("check");
    let file = dir.join("broken.toml");
    std::fs::write(
        &file,
        "[[routes]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:1/\"\nprofiles = [\"k\"]\n[profiles.k]\ntype = \"api_key\"\napi_key = \"${PRESENT}\"\nunknown_key = 1\n[[profiles.k.fields]]\nin = \"nowhere\"\nkey = \"k\"\nvalue = \"{{api_key}}\"\n",
    )
    .unwrap();
    let out = bin()
        .arg("check")
        .arg("-c")
        .arg(&file)
        .env("PRESENT", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("profiles.k.unknown_key: unknown key"),
        "{stderr}"
    );
    assert!(
        stderr.contains("profiles.k.fields[0].in: unknown location \"nowhere\""),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET));

    // A syntax error reports line and column but not the line's text.
    std::fs::write(&file, format!("[profiles.k]\napi_key = \"{SECRET}\n")).unwrap();
    let out = bin().arg("check").arg("-c").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
}

#[test]
fn check_refuses_a_key_that_does_not_belong_to_the_profile_type() {
    let dir = std::env::temp_dir().join(format!("authsidecar-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[[routes]]
prefix = "/a/"
upstream = "http://127.0.0.1:1/"
profiles = ["k", "n"]

[profiles.k]
type = "api_key"
api_key = "{SECRET}"
token_url = "https://idp.example.com/token"
[[profiles.k.fields]]
in = "header"
key = "X-Api-Key"
value = "{{{{api_key}}}}"

[profiles.n]
type = "none"
client_secret = "{SECRET}"
"#
        ),
    )
    .unwrap();
    let out = bin().arg("check").arg("-c").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("profiles.k.token_url: unknown key for type \"api_key\"; this type takes: api_key, per_user, user_fields, on_authorized, webhooks, keep_alive, identity_provider, tenancy, tenant_pattern, fields, connector\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("profiles.n.client_secret: unknown key for type \"none\"; this type takes: identity_provider, tenancy, tenant_pattern, fields, connector\n"),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_file_and_listen_address_come_from_the_environment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = bin()
        .arg("check")
        .env("AUTHSIDECAR_CONFIG", root.join("config/authsidecar.toml"))
        .env("AUTHSIDECAR__PROXY__LISTEN", "127.0.0.1:18181")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("proxy listen: 127.0.0.1:18181"));
}

#[test]
fn load_time_checks_catch_configs_that_would_fail_every_request() {
    let all = errors(
        r#"
[proxy]
listen = "127.0.0.1:18080"
[admin]
listen = "127.0.0.1:18080"
token = "${MISSING_ADMIN_TOKEN}"

[[routes]]
prefix = "/a/"
upstream = "http://127.0.0.1:1/{id}?api_key=fixed"
profiles = ["b", "q"]
timeout = "0s"

[profiles.b]
type = "basic"
username = "u"
password = "p"
fields = []

[profiles.q]
type = "api_key"
api_key = "."
[[profiles.q.fields]]
in = "query"
key = "api_key"
value = "{{api_key}}"
[[profiles.q.fields]]
in = "path"
key = "id"
value = "{{api_key}}"
[[profiles.q.fields]]
in = "payload"
key = "/a/b"
value = "{{api_key}}"
payload_format = "form"
"#,
    );
    has(&all, "admin.listen: same address as proxy.listen");
    has(
        &all,
        "admin.token: environment variable MISSING_ADMIN_TOKEN is not set",
    );
    assert!(
        !all.iter().any(|e| e.contains("too short")),
        "no follow-on error: {all:?}"
    );
    has(&all, "routes[0].timeout: must be greater than zero");
    has(
        &all,
        "profiles.b.fields: empty: the credential would never be sent",
    );
    has(
        &all,
        "profiles.q.fields[1].value: renders to a path parameter every request would refuse",
    );
    has(
        &all,
        "profiles.q.fields[2].key: a JSON Pointer needs payload_format = \"json\"",
    );
}

#[test]
fn a_query_field_may_not_repeat_a_fixed_upstream_parameter() {
    let all = errors(
        r#"
[[routes]]
prefix = "/a/"
upstream = "http://127.0.0.1:1/x?api_key=fixed"
profiles = ["q"]

[profiles.q]
type = "api_key"
api_key = "k"
[[profiles.q.fields]]
in = "query"
key = "api_key"
value = "{{api_key}}"
"#,
    );
    has(&all, "routes[0].profiles[0]: profile \"q\" fields[0] sets query parameter \"api_key\", which the upstream URL of routes[0] already has");
}

#[test]
fn oauth_profiles_are_checked() {
    let all = errors(
        r#"
[mock_provider]
listen = "127.0.0.1:0"
token_lifetime = "0s"

[[routes]]
prefix = "/a/"
upstream = "http://127.0.0.1:1/"
profiles = ["o", "p", "q"]

[profiles.o]
type = "oauth2_client_credentials"
token_url = "http://idp.example.com/token"
client_id = "c"
client_secret = ""
client_auth = "sideways"
token_params = { grant_type = "x" }
reauth_on = [200]

[profiles.q]
type = "oauth2_client_credentials"
token_url = "https://idp.example.com/token"
client_id = "c"
client_secret = "s"
[[profiles.q.fields]]
in = "header"
key = "X-T"
value = "{{token.refresh_token}}"

[profiles.p]
type = "oauth2_password"
token_url = "https://idp.example.com/{tenant}/token"
client_id = "c"
client_secret = "${PRESENT}"
api_key = "nope"
"#,
    );
    has(
        &all,
        "mock_provider.token_lifetime: must be greater than zero",
    );
    has(
        &all,
        "profiles.o.token_url: plain http:// is only allowed to loopback hosts",
    );
    has(
        &all,
        "profiles.o.client_auth: unknown client_auth \"sideways\"",
    );
    has(
        &all,
        "profiles.o.token_params.grant_type: set by the sidecar itself",
    );
    has(&all, "profiles.o.reauth_on[0]: 200 is not an error status");
    has(
        &all,
        "profiles.q.fields[0].value: {{token.refresh_token}} is not available",
    );
    has(
        &all,
        "profiles.p.api_key: unknown key for type \"oauth2_password\"; this type takes: token_url, issuer, client_id, client_secret, client_auth, client_assertion_key, client_assertion_alg, client_assertion_kid, client_assertion_cert, client_assertion_audience, scope, token_params, token_request, token_response, tls, idp_timeout, default_token_lifetime, refresh_before, reauth_on, reauth_min_token_age, replay_max_body_bytes, allow_insecure_http, username, password, per_user, user_fields, on_authorized, webhooks, keep_alive, identity_provider, tenancy, tenant_pattern, fields, connector",
    );
    has(
        &all,
        "profiles.p.username: required for type \"oauth2_password\"",
    );
    has(
        &all,
        "profiles.p.token_url: uses {tenant} but the profile has tenancy = false",
    );
}

#[test]
fn user_fields_on_authorized_and_context_in_the_authorization_url_are_checked() {
    let all = errors(
        r#"
[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:1"

[[routes]]
prefix = "/a/"
upstream = "http://127.0.0.1:1/"
profiles = ["u", "w", "k", "m"]

[profiles.u]
type = "oauth2_authorization_code"
authorization_url = "https://idp.example.com/authorize?u={{user}}"
token_url = "https://idp.example.com/token"
client_id = "c"
client_secret = "${PRESENT}"
on_authorized = "http://bot.example.com/resume"
[[profiles.u.user_fields]]
key = "pin code"
[[profiles.u.user_fields]]
key = "pin"
pattern = "[0-9"
[[profiles.u.user_fields]]
key = "org"
colour = "red"
[[profiles.u.user_fields]]
key = "ok"
max_length = 0

[profiles.m]
type = "oauth2_authorization_code"
authorization_url = "https://idp.example.com/authorize"
token_url = "https://idp.example.com/token"
client_id = "c"
client_secret = "s"
[[profiles.m.user_fields]]
key = "pin"
[[profiles.m.fields]]
in = "header"
key = "X-Pin"
value = "{{user_field.missing}} {{user_field.pin}}"

[profiles.w]
type = "oauth2_authorization_code"
authorization_url = "https://idp.example.com/authorize?org={{context.org}}"
token_url = "https://idp.example.com/token"
client_id = "c"
client_secret = "s"
on_authorized = "https://bot.example.com/{tenant}/resume"
[[profiles.w.user_fields]]
key = "tenant"
[[profiles.w.user_fields]]
key = "a"
[[profiles.w.user_fields]]
key = "a"

[profiles.k]
type = "api_key"
api_key = "${PRESENT}"
[[profiles.k.user_fields]]
key = "pin"
[[profiles.k.fields]]
in = "header"
key = "X-Key"
value = "{{api_key}} {{user_field.pin}}"
"#,
    );
    has(
        &all,
        "profiles.u.authorization_url: unknown variable \"{{user}}\" here; expected {tenant}, {{context.NAME}} or {{user_field.NAME}}",
    );
    has(
        &all,
        "profiles.u.on_authorized: plain http:// is only allowed to loopback hosts",
    );
    has(
        &all,
        "profiles.u.user_fields[0].key: expected 1 to 64 letters, digits, '_' or '-'",
    );
    has(
        &all,
        "profiles.u.user_fields[1].pattern: not a valid regular expression",
    );
    has(&all, "profiles.u.user_fields[2].colour: unknown key");
    has(
        &all,
        "profiles.u.user_fields[3].max_length: expected 1 to 4096",
    );
    has(
        &all,
        "profiles.m.fields[0].value: uses {{user_field.missing}} but the profile has no user field with key \"missing\"",
    );
    has(&all, "profiles.w.on_authorized: a fixed URL is expected");
    has(
        &all,
        "profiles.w.user_fields[0].key: \"tenant\" is asked by the start page itself",
    );
    has(
        &all,
        "profiles.w.user_fields[2].key: \"a\" is already a user field of this profile",
    );
    has(
        &all,
        "profiles.k.user_fields: only used with per_user = true",
    );
    // `{{context.org}}` in w's authorization URL is fine: no error names it.
    assert!(
        !all.iter()
            .any(|e| e.contains("profiles.w.authorization_url")),
        "{all:?}"
    );
}

#[test]
fn per_user_settings_are_checked() {
    let all = errors(
        r#"
[[routes]]
prefix = "/a/"
upstream = "http://127.0.0.1:1/"
profiles = ["b", "c", "a", "p", "k"]

[profiles.b]
type = "basic"
per_user = true
username = "fixed"
password = "${PRESENT}"

[profiles.c]
type = "oauth2_client_credentials"
per_user = true
token_url = "https://idp.example.com/token"
client_id = "c"
client_secret = "s"

[profiles.a]
type = "oauth2_authorization_code"
per_user = false
authorization_url = "https://idp.example.com/authorize"
token_url = "https://idp.example.com/token"
client_id = "c"
client_secret = "s"

[profiles.p]
type = "oauth2_password"
per_user = true
token_url = "https://idp.example.com/token"
client_id = "c"
client_secret = "s"
on_authorized = "https://bot.example.com/resume"

[profiles.k]
type = "api_key"
per_user = true
[[profiles.k.fields]]
in = "query"
key = "key"
value = "{{api_key}}"
"#,
    );
    has(
        &all,
        "profiles.b.username: with per_user = true each end user enters it on the start page; remove it",
    );
    has(
        &all,
        "profiles.b.password: with per_user = true each end user enters it",
    );
    has(
        &all,
        "profiles.c.per_user: unknown key for type \"oauth2_client_credentials\"; this type takes: token_url,",
    );
    has(
        &all,
        "profiles.a.per_user: an authorization-code profile is always per user",
    );
    // Every per-user profile needs the auth listener for its start page.
    for name in ["p", "k"] {
        has(
            &all,
            &format!("profiles.{name}: a per-user profile needs an [auth] section"),
        );
    }
}

/// A5: two routes with the same prefix would make the profile choice depend on file order: refused
/// with both places named. Profiles are chosen per route (its list, then `X-Authsidecar-Profile`
/// among that list), so there is no other matcher that can overlap.
#[test]
fn a5_two_routes_with_the_same_prefix_are_ambiguous() {
    let all = errors(
        r#"
[[routes]]
prefix = "/api/"
upstream = "http://127.0.0.1:9/"
profiles = ["a"]

[[routes]]
prefix = "/other/"
upstream = "http://127.0.0.1:9/"
profiles = ["a"]

[[routes]]
prefix = "/api/"
upstream = "http://127.0.0.1:9/b/"
profiles = ["b"]

[profiles.a]
type = "api_key"
api_key = "k"
[profiles.b]
type = "api_key"
api_key = "k"
"#,
    );
    has(
        &all,
        "routes[2].prefix: ambiguous route: prefix \"/api/\" is also used by routes[0]",
    );
}

/// The edge limits are checked at load with their key paths.
#[test]
fn edge_limits_out_of_range_are_named() {
    let all = errors(
        r#"
[proxy]
max_connections = 0
max_headers = 0
max_header_bytes = 100
max_uri_bytes = 10
"#,
    );
    for key in [
        "proxy.max_connections",
        "proxy.max_headers",
        "proxy.max_header_bytes",
        "proxy.max_uri_bytes",
    ] {
        has(&all, key);
    }
}

#[test]
fn signing_profiles_are_checked_key_by_key_without_showing_key_material() {
    let root = env!("CARGO_MANIFEST_DIR");
    let all = errors(&format!(
        r#"
[[routes]]
prefix = "/a/"
upstream = "http://127.0.0.1:1/"
profiles = ["v4", "mac", "o1", "rsa", "ec", "nofile", "user"]

[profiles.v4]
type = "aws_sigv4"
access_key_id = "AKID"
secret_access_key = "${{PRESENT}}"
service = "execute-api"
payload = "maybe"
token_url = "https://idp.example.com/token"

[profiles.mac]
type = "hmac"
secret = "${{PRESENT}}"
secret_encoding = "hex"
string_to_sign = "{{{{method}}}}{{{{bogus}}}}"
[[profiles.mac.fields]]
in = "payload"
key = "sig"
value = "{{{{signature}}}}"

[profiles.o1]
type = "oauth1"
consumer_key = "ck"
token = "t"
signature_method = "HMAC-SHA512"

[profiles.rsa]
type = "oauth1"
consumer_key = "ck"
consumer_secret = "${{PRESENT}}"
signature_method = "RSA-SHA256"
private_key = "{root}/tests/data/sign/rsa-public.pem"

[profiles.ec]
type = "oauth1"
consumer_key = "ck"
signature_method = "RSA-SHA1"
private_key = "{root}/tests/data/sign/ec-sec1.pem"

[profiles.nofile]
type = "oauth1"
consumer_key = "ck"
signature_method = "RSA-SHA1"
private_key = "no/such/key.pem"

[profiles.user]
type = "oauth1"
consumer_key = "ck"
consumer_secret = "s"
per_user = true
token = "t"
request_token_url = "ftp://idp.example/rt"
authorization_url = "https://idp.example/{{tenant}}/authorize"

[profiles.legs]
type = "oauth1"
consumer_key = "ck"
consumer_secret = "s"
access_token_url = "https://idp.example/at"
"#
    ));
    has(&all, "profiles.v4.region: required for type \"aws_sigv4\"");
    has(
        &all,
        "profiles.v4.payload: unknown value \"maybe\"; expected signed, unsigned",
    );
    has(
        &all,
        "profiles.v4.token_url: unknown key for type \"aws_sigv4\"",
    );
    has(&all, "profiles.mac.secret: is not valid hex");
    has(
        &all,
        "profiles.mac.string_to_sign: unknown variable \"bogus\"",
    );
    has(
        &all,
        "profiles.mac.fields[0].value: {{signature}} goes in a header or the query",
    );
    has(
        &all,
        "profiles.o1.signature_method: unknown value \"HMAC-SHA512\"",
    );
    has(&all, "profiles.o1.token_secret: required with token");
    has(
        &all,
        "profiles.rsa.consumer_secret: not used by signature_method = \"RSA-SHA256\"",
    );
    has(&all, "profiles.rsa.private_key:");
    has(&all, "profiles.ec.private_key:");
    has(&all, "profiles.nofile.private_key: cannot read");
    // Three-legged OAuth 1.0a: the three endpoint URLs, and each user's own token.
    has(
        &all,
        "profiles.user.access_token_url: required with per_user = true",
    );
    has(
        &all,
        "profiles.user.request_token_url: expected an absolute https:// URL",
    );
    has(
        &all,
        "profiles.user.authorization_url: expected an absolute https:// URL without placeholders",
    );
    has(
        &all,
        "profiles.user.token: with per_user = true each end user's token comes from the three-legged flow",
    );
    has(
        &all,
        "profiles.legs.access_token_url: only used with per_user = true",
    );
    let text = all.join("\n");
    for file in ["rsa-public.pem", "ec-sec1.pem"] {
        let pem = std::fs::read_to_string(format!("{root}/tests/data/sign/{file}")).unwrap();
        let material = pem.lines().nth(1).unwrap();
        assert!(!text.contains(&material[..20]), "{text}");
    }
    let ec = all
        .iter()
        .find(|e| e.starts_with("profiles.ec.private_key"))
        .unwrap();
    assert!(ec.contains("RSA"), "{ec}");
}

#[test]
fn an_rsa_oauth1_profile_needs_no_consumer_secret() {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = format!(
        r#"
[[routes]]
prefix = "/a/"
upstream = "http://127.0.0.1:1/"
profiles = ["jira"]

[profiles.jira]
type = "oauth1"
consumer_key = "jira-consumer"
signature_method = "RSA-SHA1"
private_key = "{root}/tests/data/sign/rsa-pkcs1.pem"
token = "t"
token_secret = "s"
"#
    );
    Config::from_str_with_env(&text, &Env::from_pairs([("X", "y")]))
        .unwrap_or_else(|e| panic!("{e}"));
}
