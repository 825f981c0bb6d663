//! TLS for connections the sidecar makes (rustls with the ring provider).
//!
//! By default upstreams are verified against the system roots. A route's `tls.ca_file` replaces them
//! with the CAs in that PEM bundle, so a route to a private upstream trusts only its own CA.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::{ClientConfig, RootCertStore};

use crate::config::ClientTls;

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

/// A client config trusting `roots` (the connector sets ALPN).
pub fn client_config(roots: Arc<RootCertStore>) -> Result<ClientConfig, String> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cfg)
}

/// An HTTP(S) connector for outgoing connections with these TLS settings (HTTP/1.1).
pub fn https_connector(
    tls: &ClientTls,
    connect_timeout: Duration,
) -> Result<HttpsConnector<HttpConnector>, String> {
    let roots = match &tls.ca_file {
        Some(path) => Arc::new(load_roots(path)?),
        None => system_roots(),
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(roots)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// The TLS failure somewhere in an error's source chain, as text (unknown CA, name mismatch, …).
pub fn tls_reason(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    chain(e).find_map(|err| {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r.to_string());
        }
        err.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(|r| r.to_string())
    })
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
