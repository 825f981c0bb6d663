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

/// Certificates made with the real `openssl` CLI in a temporary folder.
struct OpenSsl {
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is not installed: run scripts/setup.sh");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl OpenSsl {
    /// A folder with a CA (`ca.pem`, `ca.key`) and a v3 server certificate for localhost.
    fn new(name: &str) -> OpenSsl {
        let dir = std::env::temp_dir().join(format!(
            "authsidecar-openssl-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
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
            "rsa-pkcs1" => openssl(
                &self.dir,
                &["genrsa", "-traditional", "-out", &out, "2048"],
            ),
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
        let text = Command::new("openssl")
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
        (self.sign(name, "service-node", ext), self.path(&format!("{name}.key")))
    }
}

impl Drop for OpenSsl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `authsidecar check` on a config with one route presenting `cert` + `key`: (success, output).
fn check_client_cert(dir: &Path, cert: &Path, key: &Path) -> (bool, String) {
    let file = dir.join(format!("check-{}.toml", free_port()));
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
        authsidecar::tls::load_certified_key(&cert, &key)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        pairs.push((name, cert, key));
    }
    let (ok, out) = check_client_cert(&o.dir, &pairs[0].1, &pairs[0].2);
    assert!(ok, "check refused a v1 certificate with its own key: {out}");
    let (ok, out) = check_client_cert(&o.dir, &pairs[2].1, &pairs[2].2);
    assert!(ok, "check refused a v1 EC certificate with its own key: {out}");

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
/// that, unlike webpki, accepts X.509 v1 client certificates as many on-prem servers do.
struct SServer {
    port: u16,
    child: std::process::Child,
}

impl SServer {
    async fn start(o: &OpenSsl) -> SServer {
        let port = free_port();
        let child = Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                &format!("127.0.0.1:{port}"),
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
            .current_dir(&o.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..250 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        SServer { port, child }
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
