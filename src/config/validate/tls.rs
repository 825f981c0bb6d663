//! `tls = { … }` of listeners (server side) and of routes and profiles (client side).

use super::*;

impl V<'_> {
    /// An expired certificate is an error; one that expires within 30 days a warning.
    pub(super) fn check_expiry(&mut self, cert: &std::path::Path, key: &str) {
        match crate::tls::expiry_check(cert) {
            Ok(None) => {}
            Ok(Some(days)) => self.warn(format!(
                "{key}: the certificate in {} expires in {days} days",
                cert.display()
            )),
            Err(e) => self.err(key, e),
        }
    }
}

pub(super) fn client_tls(t: Option<RawTls>, path: &str, v: &mut V) -> ClientTls {
    let Some(t) = t else {
        return ClientTls::default();
    };
    let ca_file = t.ca_file.map(|p| v.path(&p));
    if let Some(ca) = &ca_file {
        if let Err(e) = crate::tls::load_roots(ca) {
            v.err(&format!("{path}.tls.ca_file"), e);
        }
    }
    let (client_cert, client_key) = match (t.client_cert, t.client_key) {
        (Some(c), Some(k)) => {
            let (c, k) = (v.path(&c), v.path(&k));
            match crate::tls::load_certified_key(&c, &k) {
                Ok(_) => v.check_expiry(&c, &format!("{path}.tls.client_cert")),
                Err(e) => v.err(&format!("{path}.tls.client_cert"), e),
            }
            (Some(c), Some(k))
        }
        (Some(_), None) => {
            v.err(
                &format!("{path}.tls.client_key"),
                "required with client_cert: the private key of the client certificate",
            );
            (None, None)
        }
        (None, Some(_)) => {
            v.err(
                &format!("{path}.tls.client_cert"),
                "required with client_key: the client certificate (PEM chain)",
            );
            (None, None)
        }
        (None, None) => (None, None),
    };
    if let Some(name) = &t.server_name {
        if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
            v.err(
                &format!("{path}.tls.server_name"),
                format!("\"{name}\" is not a valid DNS name or IP address"),
            );
        }
    }
    ClientTls {
        ca_file,
        client_cert,
        client_key,
        server_name: t.server_name,
    }
}

/// A listener's `tls = { cert, key, client_ca }`.
pub(super) fn server_tls(t: Option<RawServerTls>, section: &str, v: &mut V) -> Option<ServerTls> {
    let t = t?;
    let (cert, key) = (v.path(&t.cert), v.path(&t.key));
    match crate::tls::load_certified_key(&cert, &key) {
        Ok(_) => v.check_expiry(&cert, &format!("{section}.tls.cert")),
        Err(e) => v.err(&format!("{section}.tls.cert"), e),
    }
    let client_ca = t.client_ca.map(|p| v.path(&p));
    if let Some(ca) = &client_ca {
        if let Err(e) = crate::tls::load_roots(ca) {
            v.err(&format!("{section}.tls.client_ca"), e);
        }
    }
    Some(ServerTls {
        cert,
        key,
        client_ca,
    })
}
