//! Issue 16, defects 6 and 8: secrets in every encoded form are masked in the test report, and X.509 v1
//! client certificates (made by `openssl x509 -req` without an extensions file) are accepted with
//! their own key.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use authsidecar::config::{Config, Env};
use authsidecar::Server;

use crate::support::*;

fn p(path: &Path) -> String {
    path.display().to_string()
}

// ---------------------------------------------------------------------------------------------
// Defect 8: X.509 v1 client certificates.
// ---------------------------------------------------------------------------------------------

/// Certificates made with the real `openssl` CLI in a temporary folder (removed with it).
struct OpenSsl {
    dir: TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(tool("openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl OpenSsl {
    /// A folder with a CA (`ca.pem`, `ca.key`) and a v3 server certificate for localhost.
    fn new(name: &str) -> OpenSsl {
        let dir = TempDir::new(&format!("openssl-{name}"));
        std::fs::write(
            dir.join("ca.cnf"),
            "[req]\ndistinguished_name=dn\nx509_extensions=v3_ca\nprompt=no\n[dn]\nCN=authsidecar openssl test CA\n[v3_ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
                "ca.pem", "-days", "30", "-config", "ca.cnf",
            ],
        );
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let s = OpenSsl { dir };
        s.key("server", "rsa-pkcs8");
        s.sign("server", "localhost", Some("server.ext"));
        s
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Writes `name.key`: "rsa-pkcs1" (BEGIN RSA PRIVATE KEY), "rsa-pkcs8" (BEGIN PRIVATE KEY) or
    /// "ec-sec1" (BEGIN EC PRIVATE KEY).
    fn key(&self, name: &str, kind: &str) {
        let out = format!("{name}.key");
        match kind {
            "rsa-pkcs1" => openssl(&self.dir, &["genrsa", "-traditional", "-out", &out, "2048"]),
            "rsa-pkcs8" => openssl(
                &self.dir,
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                    &out,
                ],
            ),
            "ec-sec1" => openssl(
                &self.dir,
                &[
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                    &out,
                ],
            ),
            _ => unreachable!(),
        }
        let head = std::fs::read_to_string(self.path(&out)).unwrap();
        let expected = match kind {
            "rsa-pkcs1" => "-----BEGIN RSA PRIVATE KEY-----",
            "rsa-pkcs8" => "-----BEGIN PRIVATE KEY-----",
            _ => "-----BEGIN EC PRIVATE KEY-----",
        };
        assert!(head.starts_with(expected), "{kind}: {head}");
    }

    /// Makes `name.pem` from `name.key` the way on-prem guides do: a CSR, then `openssl x509 -req`
    /// signed by the CA; without `ext` that is an X.509 v1 certificate.
    fn sign(&self, name: &str, cn: &str, ext: Option<&str>) -> PathBuf {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-key",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "30",
        ];
        if let Some(e) = ext {
            args.extend(["-extfile", e]);
        }
        openssl(&self.dir, &args);
        let text = Command::new(tool("openssl"))
            .args(["x509", "-noout", "-text", "-in", &pem])
            .current_dir(&self.dir)
            .output()
            .unwrap()
            .stdout;
        let text = String::from_utf8_lossy(&text);
        let version = if ext.is_some() {
            "Version: 3 (0x2)"
        } else {
            "Version: 1 (0x0)"
        };
        assert!(text.contains(version), "{name}: {text}");
        self.path(&pem)
    }

    /// A client certificate with a key of `kind`; `v1` leaves out the extensions file.
    fn client(&self, name: &str, kind: &str, v1: bool) -> (PathBuf, PathBuf) {
        self.key(name, kind);
        let ext = if v1 {
            None
        } else {
            std::fs::write(
                self.path("client.ext"),
                "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
            )
            .unwrap();
            Some("client.ext")
        };
        (
            self.sign(name, "service-node", ext),
            self.path(&format!("{name}.key")),
        )
    }
}

/// `authsidecar check` on a config with one route presenting `cert` + `key`: (success, output).
fn check_client_cert(dir: &Path, cert: &Path, key: &Path) -> (bool, String) {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = dir.join(format!("check-{n}.toml"));
    std::fs::write(
        &file,
        format!(
            "[[routes]]\nprefix = \"/\"\nupstream = \"https://127.0.0.1:1/\"\nprofiles = [\"none\"]\ntls = {{ client_cert = \"{}\", client_key = \"{}\" }}\n[profiles.none]\ntype = \"none\"\n",
            p(cert),
            p(key)
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_authsidecar"))
        .arg("check")
        .arg("-c")
        .arg(&file)
        .env_remove("AUTHSIDECAR_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn v1_client_certificates_are_matched_with_their_key_by_check() {
    let o = OpenSsl::new("check");
    // v1 and v3, RSA (PKCS#1 and PKCS#8) and EC (SEC1): each with its own key is accepted.
    let mut pairs = Vec::new();
    for (name, kind, v1) in [
        ("v1-rsa1", "rsa-pkcs1", true),
        ("v1-rsa8", "rsa-pkcs8", true),
        ("v1-ec", "ec-sec1", true),
        ("v3-rsa1", "rsa-pkcs1", false),
        ("v3-ec", "ec-sec1", false),
    ] {
        let (cert, key) = o.client(name, kind, v1);
        authsidecar::tls::load_certified_key(&cert, &key).unwrap_or_else(|e| panic!("{name}: {e}"));
        pairs.push((name, cert, key));
    }
    let (ok, out) = check_client_cert(&o.dir, &pairs[0].1, &pairs[0].2);
    assert!(ok, "check refused a v1 certificate with its own key: {out}");
    let (ok, out) = check_client_cert(&o.dir, &pairs[2].1, &pairs[2].2);
    assert!(
        ok,
        "check refused a v1 EC certificate with its own key: {out}"
    );

    // Another key (same type, and another type) is refused with "does not belong".
    for (cert, key) in [
        (&pairs[0].1, &pairs[1].2),
        (&pairs[0].1, &pairs[2].2),
        (&pairs[2].1, &pairs[4].2),
        (&pairs[3].1, &pairs[0].2),
    ] {
        let (ok, out) = check_client_cert(&o.dir, cert, key);
        assert!(!ok, "accepted {} with {}", p(cert), p(key));
        assert!(
            out.contains(&format!(
                "{} does not belong to the certificate in {}",
                p(key),
                p(cert)
            )),
            "{out}"
        );
    }

    // A certificate that cannot be parsed says so, rather than blaming the key.
    let garbage = o.path("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydGlmaWNhdGUgYXQgYWxsLCBqdXN0IHRleHQu\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (ok, out) = check_client_cert(&o.dir, &garbage, &pairs[0].2);
    assert!(!ok);
    assert!(
        out.contains(&format!("cannot read the certificate in {}", p(&garbage))),
        "{out}"
    );
    assert!(!out.contains("does not belong"), "{out}");
}

/// `openssl s_server -www` requiring a client certificate from the CA (`-Verify 1`): an upstream
/// that, unlike webpki, accepts X.509 v1 client certificates as many on-prem servers do. It binds
/// port 0 and prints the address it got (`ACCEPT 127.0.0.1:PORT`); killed when dropped.
struct SServer {
    port: u16,
    _child: Proc,
}

impl SServer {
    async fn start(o: &OpenSsl) -> SServer {
        let out = o.path("s_server.out");
        let mut child = Proc::spawn(
            "openssl",
            Command::new(tool("openssl"))
                .args([
                    "s_server",
                    "-accept",
                    "127.0.0.1:0",
                    "-cert",
                    "server.pem",
                    "-key",
                    "server.key",
                    "-CAfile",
                    "ca.pem",
                    "-Verify",
                    "1",
                    "-verify_return_error",
                    "-www",
                ])
                .current_dir(&*o.dir)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(Stdio::null()),
        );
        // s_server prints `ACCEPT` once it listens.
        let addr = proc::printed_after(&mut child, &out, "ACCEPT ", Duration::from_secs(15)).await;
        let port = addr
            .trim()
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in s_server's ACCEPT line: {addr:?}"));
        SServer {
            port,
            _child: child,
        }
    }
}

#[tokio::test]
async fn a_v1_client_certificate_completes_a_real_mtls_handshake() {
    let o = OpenSsl::new("mtls");
    let (cert, key) = o.client("v1-client", "rsa-pkcs1", true);
    let upstream = SServer::start(&o).await;
    let text = format!(
        r#"
[[routes]]
prefix = "/v1/"
upstream = "https://127.0.0.1:{port}/"
profiles = ["none"]
tls = {{ ca_file = "{ca}", client_cert = "{cc}", client_key = "{ck}", server_name = "localhost" }}

[[routes]]
prefix = "/nocert/"
upstream = "https://127.0.0.1:{port}/"
profiles = ["none"]
tls = {{ ca_file = "{ca}", server_name = "localhost" }}

[profiles.none]
type = "none"
"#,
        port = upstream.port,
        ca = p(&o.path("ca.pem")),
        cc = p(&cert),
        ck = p(&key),
    );
    let config = Config::from_str_with_env(&with_listeners(&text), &Env::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let s = Server::start(config).await.unwrap();
    let base = format!("http://{}", s.proxy_addr);
    // The server requires a certificate: without one the handshake fails.
    let r = get(&format!("{base}/nocert/"), &[]).await;
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    // With the v1 certificate it succeeds, and the server saw it.
    let r = get(&format!("{base}/v1/"), &[]).await;
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, 200, "{body}");
    assert!(body.contains("service-node"), "{body}");
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Defect 6: the test report masks every encoded form of the profile's secrets.
// ---------------------------------------------------------------------------------------------

use std::sync::{Arc, Mutex};

use base64::Engine;
use http::Method;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENT_ID: &str = "mask client";
const CLIENT_SECRET: &str = "cs~ a+b/c&d=e-é€😀";
const USERNAME: &str = "svc user~ø+/&=";
const PASSWORD: &str = "pw~ x+y/z&q=r-ü中";

/// `s` with every non-ASCII character as `\uXXXX` (lower or upper hex) and `/` as `\/`.
fn json_escape(s: &str, upper: bool) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '/' => out.push_str("\\/"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if c.is_ascii() => out.push(c),
            c => {
                for u in c.encode_utf16(&mut [0; 2]).iter() {
                    if upper {
                        out.push_str(&format!("\\u{u:04X}"));
                    } else {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
            }
        }
    }
    out
}

/// `s` with a line fold (`fold`) after every 7 characters.
fn fold_every_7(s: &str, fold: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && i % 7 == 0 {
            out.push_str(fold);
        }
        out.push(c);
    }
    out
}

/// A token endpoint that answers with the request it got (head and body), in several forms: as
/// received, JSON-escaped (lower- and upper-case `\u` hex, `\/`), and split by line folds, raw and
/// JSON-escaped. `/raw/…` answers 200 text/plain with all of them; `/json/…` answers 400 with a
/// valid JSON OAuth error whose description and members hold the escaped request. The
/// `Authorization` value and the body are also echoed in response headers.
async fn echo_token_endpoint() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = l.accept().await {
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                    if buf.len() > 1 << 20 {
                        return;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let len = declared_length(&head);
                while buf.len() < head_end + len {
                    match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                let request = String::from_utf8_lossy(&buf[..head_end + len]).to_string();
                let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
                seen.lock().unwrap().push(request.clone());
                let auth = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("authorization")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                // The parameters decoded (the body's, and the id and secret inside Basic), as an
                // endpoint that parses the request would show them: JSON-escaped.
                let mut decoded: Vec<(String, String)> = body
                    .split('&')
                    .filter_map(|p| p.split_once('='))
                    .map(|(n, v)| (form_decode(n), form_decode(v)))
                    .collect();
                if let Some(b) = auth.strip_prefix("Basic ") {
                    let pair = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
                    let pair = String::from_utf8(pair).unwrap();
                    let (id, secret) = pair.split_once(':').unwrap();
                    decoded.push(("basic_id".into(), form_decode(id)));
                    decoded.push(("basic_pw".into(), form_decode(secret)));
                }
                let decoded_json = |upper: bool| {
                    decoded
                        .iter()
                        .map(|(n, v)| format!("[\"{n}\", \"{}\"]", json_escape(v, upper)))
                        .collect::<Vec<_>>()
                        .join(",\n")
                };
                let (status, ctype, answer) = if head.contains("/json/") {
                    let lower = json_escape(&request, false);
                    let upper = json_escape(&request, true);
                    let folded = json_escape(&fold_every_7(&request, "\r\n "), false);
                    (
                        "400 Bad Request",
                        "application/json",
                        format!(
                            r#"{{"error":"invalid_request","error_description":"{}","lower":"{lower}","upper":"{upper}","folded":"{folded}"}}"#,
                            json_escape(&body, false)
                        ),
                    )
                } else {
                    (
                        "200 OK",
                        "text/plain; charset=utf-8",
                        format!(
                            "{request}\n--json-lower--\n{}\n--json-upper--\n{}\n--folded--\n{}\n--json-folded--\n{}\n--decoded--\n{}\n{}\n{}\n",
                            json_escape(&request, false),
                            json_escape(&request, true),
                            fold_every_7(&request, "\r\n "),
                            fold_every_7(&json_escape(&request, false), "\\r\\n\\t"),
                            decoded_json(false),
                            decoded_json(true),
                            fold_every_7(&decoded_json(false), "\\r\\n "),
                        ),
                    )
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\nx-echo-authorization: {auth}\r\nx-echo-body: {body}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = tcp.write_all(answer.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    (addr, seen)
}

/// `application/x-www-form-urlencoded` as the `oauth2` crate writes it: `*-._` raw, space `+`.
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');
/// RFC 3986 unreserved characters raw.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn form_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn form(s: &str) -> String {
    utf8_percent_encode(s, FORM).to_string().replace("%20", "+")
}

/// Every form of `secret` that must not appear in a report (computed here, independently of the
/// product's redactor).
fn forms(secret: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = vec![
        secret.to_string(),
        form(secret),
        form(secret).to_lowercase(),
        utf8_percent_encode(secret, UNRESERVED).to_string(),
        utf8_percent_encode(secret, UNRESERVED)
            .to_string()
            .to_lowercase(),
        utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string(),
        json_escape(secret, false),
        json_escape(secret, true),
        b64.encode(secret),
        b64.encode(format!("{}:{}", form(CLIENT_ID), form(secret))),
    ];
    out.sort();
    out.dedup();
    out
}

fn assert_masked(what: &str, report: &str, secrets: &[&str]) {
    // Folds taken out, so a secret split by one would show here.
    let unfolded = report
        .replace("\r\n ", "")
        .replace("\\r\\n\\t", "")
        .replace("\\r\\n ", "");
    for s in secrets {
        for f in forms(s) {
            assert!(!report.contains(&f), "{what}: {f:?} leaked in:\n{report}");
            assert!(
                !unfolded.contains(&f),
                "{what}: {f:?} leaked split by a fold in:\n{report}"
            );
        }
    }
}

#[tokio::test]
async fn the_test_report_masks_secrets_in_every_encoded_form() {
    let (idp, seen) = echo_token_endpoint().await;
    let mut text = String::new();
    for mode in ["raw", "json"] {
        for auth in ["basic", "post"] {
            text.push_str(&format!(
                r#"
[profiles.cc-{auth}-{mode}]
type = "oauth2_client_credentials"
token_url = "http://{idp}/{mode}/oauth/token"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
client_auth = "{auth}"
allow_insecure_http = true

[profiles.pw-{auth}-{mode}]
type = "oauth2_password"
token_url = "http://{idp}/{mode}/oauth/token"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
client_auth = "{auth}"
username = "{USERNAME}"
password = "{PASSWORD}"
allow_insecure_http = true
"#
            ));
        }
    }
    text.push_str(
        "[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1/\"\nprofiles = [\"cc-basic-raw\"]\n",
    );
    let config = Config::from_str_with_env(&with_listeners(&text), &Env::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let s = Server::start(config).await.unwrap();
    let auth = format!("Bearer {ADMIN_TOKEN}");
    for mode in ["raw", "json"] {
        for client_auth in ["basic", "post"] {
            for kind in ["cc", "pw"] {
                let name = format!("{kind}-{client_auth}-{mode}");
                let before = seen.lock().unwrap().len();
                let r = send(
                    Method::POST,
                    &format!("http://{}/admin/profiles/{name}/test", s.admin_addr),
                    &[("Authorization", &auth)],
                    "",
                )
                .await;
                assert_eq!(r.status, 200, "{name}");
                let report = String::from_utf8_lossy(&r.body).to_string();
                let v = r.json();
                // The endpoint got the secrets, and echoed them: the report had them to mask.
                let request = seen.lock().unwrap()[before].clone();
                let sent = if client_auth == "basic" {
                    base64::engine::general_purpose::STANDARD.encode(format!(
                        "{}:{}",
                        form(CLIENT_ID),
                        form(CLIENT_SECRET)
                    ))
                } else {
                    form(CLIENT_SECRET)
                };
                assert!(request.contains(&sent), "{name}: {request}");
                if client_auth == "post" || kind == "pw" {
                    assert!(request.contains("%7E"), "{name}: {request}");
                }
                if kind == "pw" {
                    assert!(request.contains(&form(PASSWORD)), "{name}: {request}");
                    assert!(request.contains(&form(USERNAME)), "{name}: {request}");
                }
                let secrets: &[&str] = if kind == "pw" {
                    &[CLIENT_SECRET, USERNAME, PASSWORD]
                } else {
                    &[CLIENT_SECRET]
                };
                // The report as sent (JSON) and its decoded texts.
                assert_masked(&name, &report, secrets);
                let body = v["body"].as_str().unwrap();
                assert_masked(&name, body, secrets);
                assert_masked(&name, &v["error"]["message"].to_string(), secrets);
                for h in v["headers"].as_array().unwrap() {
                    assert_masked(&name, h[1].as_str().unwrap(), secrets);
                }
                // What is not secret is still shown.
                assert!(body.contains("grant_type"), "{name}: {body}");
                assert!(body.contains("[redacted len="), "{name}: {body}");
                if mode == "raw" {
                    assert!(body.contains("POST /raw/oauth/token"), "{name}: {body}");
                }
            }
        }
    }
    s.shutdown().await;

    // `authsidecar test-auth` prints the same masked report.
    let dir = TempDir::new("mask");
    let file = dir.join("mask.toml");
    std::fs::write(&file, &text).unwrap();
    for name in ["pw-basic-raw", "cc-post-json"] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_authsidecar"));
        cmd.arg("test-auth")
            .arg(name)
            .arg("-c")
            .arg(&file)
            .env_remove("AUTHSIDECAR_CONFIG");
        // Off this thread: the echo endpoint runs on this test's runtime.
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let status = if name.ends_with("json") { 400 } else { 200 };
        assert!(
            printed.contains(&format!("Status:    {status}")),
            "{printed}"
        );
        assert!(printed.contains("grant_type"), "{printed}");
        assert!(printed.contains("[redacted len="), "{printed}");
        assert_masked(name, &printed, &[CLIENT_SECRET, USERNAME, PASSWORD]);
    }
}
