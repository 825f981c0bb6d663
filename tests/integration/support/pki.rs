//! Certificates generated at run time (rcgen), TLS servers in front of the mock provider, TLS
//! clients, and a tinyproxy on a spare port (see `support::proc`).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::proc::{spare_port, tool, until_ready, Proc, Ready};
use super::TempDir;

/// A throwaway CA and the files it issues, in a temporary folder (removed with the `Pki`).
pub struct Pki {
    pub dir: PathBuf,
    ca: Certificate,
    ca_key: KeyPair,
    _tmp: TempDir,
}

/// A certificate and key written as PEM files.
#[derive(Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let tmp = TempDir::new(&format!("pki-{name}"));
        let dir = tmp.to_path_buf();
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, format!("authsidecar test CA {name}"));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = p.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki {
            dir,
            ca,
            ca_key,
            _tmp: tmp,
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a certificate for `names` (DNS names) as `file` (.pem and .key). `client` makes a
    /// client certificate, otherwise a server one. `expired` dates it in the past.
    pub fn issue_with(&self, file: &str, names: &[&str], client: bool, expired: bool) -> Issued {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or(file));
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired {
            p.not_before = rcgen::date_time_ymd(2019, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        self.sign(file, p)
    }

    /// A server certificate for localhost that expires `days` from now.
    pub fn issue_expiring(&self, file: &str, days: i64) -> Issued {
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
        self.sign(file, p)
    }

    /// Signs `p` with the CA under a new key; writes `file`.pem and `file`.key.
    fn sign(&self, file: &str, p: CertificateParams) -> Issued {
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let issued = Issued {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
            der: cert.der().to_vec(),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }

    pub fn server(&self, file: &str) -> Issued {
        self.issue_with(file, &["localhost"], false, false)
    }

    pub fn client(&self, file: &str) -> Issued {
        self.issue_with(file, &["service-node"], true, false)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Path) -> Arc<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut std::fs::read(ca).unwrap().as_slice()) {
        store.add(c.unwrap()).unwrap();
    }
    Arc::new(store)
}

fn chain_and_key(
    i: &Issued,
) -> (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    let chain = rustls_pemfile::certs(&mut std::fs::read(&i.cert).unwrap().as_slice())
        .map(|c| c.unwrap())
        .collect();
    let key = rustls_pemfile::private_key(&mut std::fs::read(&i.key).unwrap().as_slice())
        .unwrap()
        .unwrap();
    (chain, key)
}

/// A TLS server config; with `client_ca` a client certificate from that CA is required.
pub fn server_config(server: &Issued, client_ca: Option<&Path>) -> Arc<rustls::ServerConfig> {
    let b = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let b = match client_ca {
        Some(ca) => b.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
                .build()
                .unwrap(),
        ),
        None => b.with_no_client_auth(),
    };
    let (chain, key) = chain_and_key(server);
    let mut cfg = b.with_single_cert(chain, key).unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A TLS client config trusting `ca`, presenting `client` when given.
pub fn client_config(ca: &Path, client: Option<&Issued>) -> rustls::ClientConfig {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca));
    match client {
        Some(c) => {
            let (chain, key) = chain_and_key(c);
            b.with_client_auth_cert(chain, key).unwrap()
        }
        None => b.with_no_client_auth(),
    }
}

/// A TLS front: accepts TLS with `cfg` on a free port and pipes each connection to `target`
/// (the mock provider), so the mock's endpoints are served over real (m)TLS.
pub async fn tls_front(target: SocketAddr, cfg: Arc<rustls::ServerConfig>) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    addr
}

/// tinyproxy on a spare port (`BasicAuth user pass` when `auth`), logging to a file in `dir`.
/// Killed when dropped.
pub struct Tinyproxy {
    pub addr: SocketAddr,
    pub log: PathBuf,
    _child: Proc,
}

/// What tinyproxy logs once it accepts connections.
const TINYPROXY_READY: &str = "Accepting connections";
/// What tinyproxy prints (on stderr) before exiting when it cannot bind its port.
const TINYPROXY_PORT_TAKEN: &str = "Could not create listening sockets";

impl Tinyproxy {
    pub async fn start(dir: &Path, auth: Option<(&str, &str)>) -> Tinyproxy {
        let bin = tool("tinyproxy");
        let mut taken = Vec::new();
        for _ in 0..10 {
            let port = spare_port(0);
            let log = dir.join(format!("tinyproxy-{port}.log"));
            let stderr = dir.join(format!("tinyproxy-{port}.stderr"));
            let conf = dir.join(format!("tinyproxy-{port}.conf"));
            let mut text = format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Info\nMaxClients 64\nDisableViaHeader Yes\n",
                log.display()
            );
            if let Some((u, p)) = auth {
                text.push_str(&format!("BasicAuth {u} {p}\n"));
            }
            std::fs::write(&conf, text).unwrap();
            let mut child = Proc::spawn(
                "tinyproxy",
                std::process::Command::new(&bin)
                    .arg("-d")
                    .arg("-c")
                    .arg(&conf)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::fs::File::create(&stderr).unwrap()),
            );
            match until_ready(
                &mut child,
                &[&log, &stderr],
                TINYPROXY_READY,
                TINYPROXY_PORT_TAKEN,
                std::time::Duration::from_secs(15),
            )
            .await
            {
                Ready::Up => {
                    return Tinyproxy {
                        addr: ([127, 0, 0, 1], port).into(),
                        log,
                        _child: child,
                    }
                }
                Ready::PortTaken(_) => taken.push(port),
            }
        }
        panic!("tinyproxy found each of 10 spare ports taken: {taken:?}");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
