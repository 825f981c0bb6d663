//! `[connectors.NAME]` (egress proxies) and the `connector = "NAME"` references to them.

use super::*;

/// `[connectors.NAME]`, read before routes and profiles name them.
pub(super) fn connectors(value: Option<toml::Value>, v: &mut V) {
    match value {
        None => {}
        Some(toml::Value::Table(t)) => {
            for (name, value) in t {
                let path = format!("connectors.{name}");
                if !valid_name(&name) {
                    v.err(
                        &path,
                        "invalid connector name; expected letters, digits, '-', '_' or '.'",
                    );
                }
                if let Some(rc) = raw::collect::<RawConnector>(value, &path, &mut v.errors) {
                    if let Some(c) = connector(&name, rc, &path, v) {
                        v.connectors.insert(name, Arc::new(c));
                    }
                }
            }
        }
        Some(_) => v.err(
            "connectors",
            "expected a table of connectors: [connectors.NAME]",
        ),
    }
}

/// `[connectors.NAME]`.
fn connector(name: &str, rc: RawConnector, path: &str, v: &mut V) -> Option<Connector> {
    let before = v.errors.len();
    let url = match rc.url.parse::<http::Uri>() {
        Ok(u)
            if u.scheme() == Some(&http::uri::Scheme::HTTP)
                && u.host().is_some()
                && u.port_u16().is_some()
                && u.path_and_query().is_none_or(|p| p.as_str() == "/")
                && !u.authority().is_some_and(|a| a.as_str().contains('@')) =>
        {
            Some(u)
        }
        _ => {
            v.err(
                &format!("{path}.url"),
                "expected http://host:port (an HTTP proxy; credentials go in username and password)",
            );
            None
        }
    };
    let credentials = match (rc.username, rc.password) {
        (Some(u), Some(p)) => {
            if u.expose().contains(':') {
                v.err(
                    &format!("{path}.username"),
                    "must not contain ':' (RFC 7617)",
                );
            }
            Some((u, p))
        }
        (None, None) => None,
        (Some(_), None) => {
            v.err(&format!("{path}.password"), "required with username");
            None
        }
        (None, Some(_)) => {
            v.err(&format!("{path}.username"), "required with password");
            None
        }
    };
    let mut no_proxy = Vec::new();
    for (i, h) in rc.no_proxy.unwrap_or_default().into_iter().enumerate() {
        let bare = h.trim_start_matches('*').trim_start_matches('.');
        let ok = h == "*"
            || !bare.is_empty()
                && bare
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        if ok {
            no_proxy.push(h.to_ascii_lowercase());
        } else {
            v.err(
                &format!("{path}.no_proxy[{i}]"),
                "expected a host name, an IP address, .domain (the domain and its subdomains) or *",
            );
        }
    }
    if v.errors.len() > before {
        return None;
    }
    Some(Connector {
        name: name.to_string(),
        url: url?,
        credentials,
        no_proxy,
    })
}

impl V<'_> {
    /// A `connector = "NAME"` reference.
    pub(super) fn connector_ref(
        &mut self,
        name: Option<String>,
        path: &str,
    ) -> Option<Arc<Connector>> {
        let name = name?;
        match self.connectors.get(&name) {
            Some(c) => Some(c.clone()),
            None => {
                let expected = expected_one_of("connectors", self.connectors.keys());
                self.err(
                    &format!("{path}.connector"),
                    format!("unknown connector \"{name}\"; {expected}"),
                );
                None
            }
        }
    }
}
