//! TLS on every side (rustls with the ring provider).
//!
//! - Listeners: `tls = { cert, key, client_ca }`: TLS 1.2/1.3, ALPN h2 and http/1.1, and with
//!   `client_ca` a required client certificate (mTLS from service nodes).
//! - Connections the sidecar makes: by default verified against the system roots. A route's or
//!   profile's `tls.ca_file` replaces them with the CAs in that PEM bundle (a private upstream trusts
//!   only its own CA); `client_cert` + `client_key` present a certificate (2-way TLS);
//!   `server_name` replaces the URL's host for SNI and the certificate check.
//! - Certificates and keys are [`ReloadableKey`]s: re-read on [`reload_all`] without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use hyper_rustls::HttpsConnector;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::{ClientTls, Connector, ServerTls};
use crate::egress::Egress;

/// Loads the CA certificates of a PEM bundle. Errors name the file and the problem.
pub fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut store = RootCertStore::empty();
    let mut count = 0;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("{}: invalid PEM: {e}", path.display()))?;
        store
            .add(cert)
            .map_err(|e| format!("{}: invalid certificate: {e}", path.display()))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "{}: no certificates found; expected PEM \"BEGIN CERTIFICATE\" blocks",
            path.display()
        ));
    }
    Ok(store)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's root certificates, loaded once. An empty store (with a warning) if there are none.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    "no system root certificates found; https upstreams need tls.ca_file"
                );
            }
            Arc::new(store)
        })
        .clone()
}

/// A certificate chain and key read from PEM files, re-read by [`reload_all`] (SIGHUP, the admin
/// API, or the periodic check) without a restart: new handshakes use the new pair, connections in
/// flight keep theirs.
#[derive(Debug)]
pub struct ReloadableKey {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// Modification times the current pair was read with.
    stamp: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Every reloadable key of this process (weak: keys of dropped configs disappear).
fn registry() -> &'static Mutex<Vec<Weak<ReloadableKey>>> {
    static KEYS: OnceLock<Mutex<Vec<Weak<ReloadableKey>>>> = OnceLock::new();
    KEYS.get_or_init(Mutex::default)
}

impl ReloadableKey {
    /// Loads the pair and registers it for reloads.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<ReloadableKey>, String> {
        let stamp = (mtime(cert), mtime(key));
        let ck = load_certified_key(cert, key)?;
        let k = Arc::new(ReloadableKey {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::from(ck),
            stamp: Mutex::new(stamp),
        });
        if let Ok(mut r) = registry().lock() {
            r.retain(|w| w.strong_count() > 0);
            r.push(Arc::downgrade(&k));
        }
        Ok(k)
    }

    /// Re-reads the files (when `force`, or when their modification time changed). A pair that does
    /// not load keeps the old one in use. Returns whether a new pair is in use.
    pub fn reload(&self, force: bool) -> Result<bool, String> {
        let now = (mtime(&self.cert), mtime(&self.key));
        let Ok(mut stamp) = self.stamp.lock() else {
            return Ok(false);
        };
        if !force && *stamp == now {
            return Ok(false);
        }
        let ck = load_certified_key(&self.cert, &self.key)?;
        self.current.store(ck);
        *stamp = now;
        Ok(true)
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl rustls::server::ResolvesServerCert for ReloadableKey {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl rustls::client::ResolvesClientCert for ReloadableKey {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Re-reads every certificate and key in use (listeners and client certificates). With `force`
/// every pair is read again; otherwise only pairs whose files changed. Returns how many pairs
/// changed and the errors (the old pair stays in use for those).
pub fn reload_all(force: bool) -> (usize, Vec<String>) {
    let keys: Vec<Arc<ReloadableKey>> = registry()
        .lock()
        .map(|r| r.iter().filter_map(Weak::upgrade).collect())
        .unwrap_or_default();
    let mut changed = 0;
    let mut errors = Vec::new();
    for k in keys {
        match k.reload(force) {
            Ok(true) => {
                changed += 1;
                tracing::info!(cert = %k.cert.display(), "certificate reloaded");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!("certificate not reloaded, the old one stays in use: {e}");
                errors.push(e);
            }
        }
    }
    (changed, errors)
}

/// Reads a PEM certificate chain and its PEM private key and checks that they belong together.
/// Errors name the file and the problem, never key material.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let pem = std::fs::read(cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: invalid PEM: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no certificates found; expected PEM \"BEGIN CERTIFICATE\" blocks",
            cert.display()
        ));
    }
    let pem = std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
    let der = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("{}: invalid PEM: {e}", key.display()))?
        .ok_or_else(|| {
            format!(
                "{}: no private key found; expected a PEM \"PRIVATE KEY\" block",
                key.display()
            )
        })?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("{}: unusable private key: {e}", key.display()))?;
    // Compare the key's public key with the leaf's SubjectPublicKeyInfo, read by a DER walk that
    // accepts X.509 v1 certificates too (rustls' own `keys_match` parses the certificate with webpki,
    // which refuses v1, so a v1 certificate and its own key would be called a mismatch).
    let leaf_spki = subject_public_key_info(&chain[0]).ok_or_else(|| {
        format!(
            "cannot read the certificate in {}: not an X.509 certificate (DER inside the PEM)",
            cert.display()
        )
    })?;
    let key_spki = signing.public_key().ok_or_else(|| {
        format!(
            "{}: cannot compare this kind of key with the certificate in {}",
            key.display(),
            cert.display()
        )
    })?;
    if key_spki.as_ref() != leaf_spki {
        return Err(format!(
            "{} does not belong to the certificate in {}",
            key.display(),
            cert.display()
        ));
    }
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// One DER TLV at the start of `b`: (tag, content, rest).
fn der_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)? as usize;
    let (len, start) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = start.checked_add(len)?;
    Some((tag, b.get(start..end)?, b.get(end..)?))
}

/// The leaf certificate's subjectPublicKeyInfo, whole (tag and length included), by a small DER walk:
/// Certificate → tbsCertificate → [0] version (absent in X.509 v1), serialNumber, signature, issuer,
/// validity, subject, subjectPublicKeyInfo. `None` when the DER is not shaped like a certificate.
pub fn subject_public_key_info(der: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    let (tag, cert, _) = der_tlv(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = der_tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    let (tag, _, r) = der_tlv(rest)?;
    if tag == 0xa0 {
        rest = r;
    }
    // serialNumber (INTEGER), signature, issuer, validity, subject (SEQUENCEs).
    for expected in [0x02, SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE] {
        let (tag, _, r) = der_tlv(rest)?;
        if tag != expected {
            return None;
        }
        rest = r;
    }
    let (tag, _, after) = der_tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    Some(&rest[..rest.len() - after.len()])
}

/// The leaf certificate's `notAfter` as Unix seconds (a small DER walk: Certificate → tbsCertificate
/// → validity). `None` when the certificate cannot be read that far.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let tlv = der_tlv;
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    // [0] version (optional), serialNumber, signature, issuer, then validity.
    let (tag, _, r) = tlv(rest)?;
    if tag == 0xa0 {
        rest = r;
        let (_, _, r) = tlv(rest)?;
        rest = r;
    } else {
        rest = r;
    }
    for _ in 0..2 {
        let (_, _, r) = tlv(rest)?;
        rest = r;
    }
    let (_, validity, _) = tlv(rest)?;
    let (_, _, r) = tlv(validity)?;
    let (tag, time, _) = tlv(r)?;
    let text = std::str::from_utf8(time).ok()?;
    let digits = text.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = digits.get(0..2)?.parse().ok()?;
            (
                if yy < 50 { 2000 + yy } else { 1900 + yy },
                digits.get(2..)?,
            )
        }
        0x18 => (digits.get(0..4)?.parse().ok()?, digits.get(4..)?),
        _ => return None,
    };
    let n = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, min, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    // Days from 1970-01-01 (civil calendar, proleptic Gregorian).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + hour * 3600 + min * 60 + sec)
}

/// How a certificate file's leaf stands in time: `Err` when expired, `Ok(Some(days))` when it expires
/// within 30 days.
pub fn expiry_check(cert: &Path) -> Result<Option<i64>, String> {
    let pem = std::fs::read(cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
    let Some(Ok(leaf)) = rustls_pemfile::certs(&mut pem.as_slice()).next() else {
        return Ok(None);
    };
    let Some(end) = not_after(&leaf) else {
        return Ok(None);
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if end <= now {
        return Err(format!("{}: the certificate has expired", cert.display()));
    }
    let days = (end - now) / 86400;
    Ok((days < 30).then_some(days))
}

/// The rustls server config of a listener: TLS 1.2 and 1.3, ALPN h2 and http/1.1, the certificate
/// from a [`ReloadableKey`], and with `client_ca` a required, verified client certificate.
pub fn server_config(tls: &ServerTls) -> Result<Arc<ServerConfig>, String> {
    let key = ReloadableKey::load(&tls.cert, &tls.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let roots = Arc::new(load_roots(ca)?);
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(key);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The rustls client config for these settings (the connector sets ALPN): the CA file's roots
/// instead of the system's, and a client certificate for 2-way TLS.
pub fn client_config(tls: &ClientTls) -> Result<ClientConfig, String> {
    let roots = match &tls.ca_file {
        Some(path) => Arc::new(load_roots(path)?),
        None => system_roots(),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    Ok(match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            builder.with_client_cert_resolver(ReloadableKey::load(cert, key)?)
        }
        _ => builder.with_no_client_auth(),
    })
}

/// An HTTP(S) connector for outgoing connections with these TLS settings and egress (HTTP/1.1).
pub fn https_connector(
    tls: &ClientTls,
    connector: Option<Arc<Connector>>,
    connect_timeout: Duration,
) -> Result<HttpsConnector<Egress>, String> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(client_config(tls)?);
    let builder = match &tls.server_name {
        Some(name) => {
            let name = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|e| format!("server_name {name:?}: {e}"))?;
            builder
                .https_or_http()
                .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder.https_or_http(),
    };
    Ok(builder
        .enable_http1()
        .wrap_connector(Egress::new(connector, connect_timeout)))
}

fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// The first error of type `T` in an error's source chain, looking inside `io::Error`s (whose own
/// `source` skips the error they wrap).
pub fn find_in_chain<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    // Bounded: error chains are short; a cycle would be a bug elsewhere.
    for _ in 0..32 {
        let err = cur?;
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner),
            None => err.source(),
        };
    }
    None
}

/// The TLS failure somewhere in an error's source chain, as text (unknown CA, name mismatch, …).
pub fn tls_reason(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    find_in_chain::<rustls::Error>(e).map(|r| r.to_string())
}

/// The innermost cause of an error, as text.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    chain(e).last().map(|c| c.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_an_error() {
        let p = std::env::temp_dir().join(format!("authsidecar-empty-{}.pem", std::process::id()));
        std::fs::write(&p, "not a certificate\n").unwrap();
        let err = load_roots(&p).unwrap_err();
        assert!(err.contains("no certificates found"), "{err}");
        std::fs::remove_file(&p).unwrap();
        assert!(load_roots(Path::new("/nonexistent/ca.pem"))
            .unwrap_err()
            .contains("cannot read"));
    }
}
