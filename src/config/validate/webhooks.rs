//! `[webhooks.NAME]` (receivers of grant events) and a profile's `webhooks = [...]`,
//! `on_authorized` and `keep_alive`.

use super::oauth::{endpoint_url, UrlContext};
use super::raw::RawWebhook;
use super::*;
use crate::config::webhook::{
    Webhook, DEFAULT_MAX_AGE, DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX, DEFAULT_WEBHOOK_TIMEOUT,
    EVENT_TYPES,
};

/// `[webhooks.NAME]`, read before the profiles that name them.
pub(super) fn webhooks(value: Option<toml::Value>, store: &StoreConfig, v: &mut V) {
    if value.is_some() && matches!(store, StoreConfig::Memory) {
        v.warn(
            "webhooks: the store is memory: deliveries not yet accepted are lost on restart ([store] kind = \"file\" or \"redis\" keeps them)"
                .to_string(),
        );
    }
    match value {
        None => {}
        Some(toml::Value::Table(t)) => {
            for (name, value) in t {
                let path = format!("webhooks.{name}");
                if !valid_name(&name) || name.contains(':') {
                    v.err(
                        &path,
                        "invalid webhook name; expected letters, digits, '-', '_' or '.'",
                    );
                    continue;
                }
                if let Some(raw) = raw::collect::<RawWebhook>(value, &path, &mut v.errors) {
                    if let Some(w) = webhook(&name, raw, &path, v) {
                        v.webhooks.insert(name, Arc::new(w));
                    }
                }
            }
        }
        Some(_) => v.err("webhooks", "expected a table of webhooks: [webhooks.NAME]"),
    }
}

/// A webhook URL: absolute, fixed, https (plain http to loopback hosts only).
fn webhook_url(url: &str, key: &str, path: &str, v: &mut V) {
    if url.contains('{') {
        v.err(
            &format!("{path}.{key}"),
            "a fixed URL is expected; the body says which profile, user and tenant",
        );
        return;
    }
    let ctx = UrlContext {
        path,
        tenancy: false,
        allow_insecure_http: None,
    };
    endpoint_url(url, key, &ctx, v);
}

/// Checks a `whsec_` secret; the message never shows the value.
fn check_secret(s: &str, path: &str, v: &mut V) {
    use base64::Engine;
    let decoded = s
        .strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    match decoded {
        None => v.err(
            &format!("{path}.secret"),
            "expected \"whsec_\" followed by base64 (Standard Webhooks), e.g. from `authsidecar keygen --webhook`",
        ),
        Some(b) if !(24..=64).contains(&b.len()) => v.err(
            &format!("{path}.secret"),
            format!(
                "the base64 after \"whsec_\" decodes to {} bytes; expected 24 to 64",
                b.len()
            ),
        ),
        Some(_) => {}
    }
}

fn webhook(name: &str, raw: RawWebhook, path: &str, v: &mut V) -> Option<Webhook> {
    let before = v.errors.len();
    webhook_url(&raw.url, "url", path, v);
    match &raw.secret {
        Some(s) => check_secret(s.expose(), path, v),
        None => v.err(
            &format!("{path}.secret"),
            "required: \"whsec_\" followed by base64 (the receiver verifies every event with it)",
        ),
    }
    let events = match raw.events {
        None => EVENT_TYPES.iter().map(|e| e.to_string()).collect(),
        Some(list) => {
            for (i, e) in list.iter().enumerate() {
                if !EVENT_TYPES.contains(&e.as_str()) {
                    v.err(
                        &format!("{path}.events[{i}]"),
                        format!(
                            "unknown event type \"{e}\"; expected {}",
                            EVENT_TYPES.join(", ")
                        ),
                    );
                }
            }
            if list.is_empty() {
                v.err(
                    &format!("{path}.events"),
                    "empty; leave it out to send every event type",
                );
            }
            list
        }
    };
    let tls = tls::client_tls(raw.tls, &format!("{path}.tls"), v);
    let connector = v.connector_ref(raw.connector, path);
    let d = |o: Option<raw::Dur>, default| o.map_or(default, |d| d.0);
    let retry_initial = d(raw.retry_initial, DEFAULT_RETRY_INITIAL);
    let retry_max = d(raw.retry_max, DEFAULT_RETRY_MAX);
    let max_age = d(raw.max_age, DEFAULT_MAX_AGE);
    let timeout = d(raw.timeout, DEFAULT_WEBHOOK_TIMEOUT);
    for (key, value) in [
        ("retry_initial", retry_initial),
        ("retry_max", retry_max),
        ("max_age", max_age),
        ("timeout", timeout),
    ] {
        if value < std::time::Duration::from_millis(100) {
            v.err(
                &format!("{path}.{key}"),
                "too short; expected at least 100ms",
            );
        }
    }
    if retry_max < retry_initial {
        v.err(
            &format!("{path}.retry_max"),
            "shorter than retry_initial; expected retry_initial <= retry_max",
        );
    }
    if v.errors.len() > before {
        return None;
    }
    Some(Webhook {
        name: Arc::from(name),
        url: raw.url,
        secret: raw.secret,
        events,
        tls,
        connector,
        retry_initial,
        retry_max,
        max_age,
        timeout,
        plain_body: false,
    })
}

/// A profile's webhooks: `webhooks = ["NAME", …]` and the `on_authorized` shorthand.
pub(super) fn profile_webhooks(
    names: Option<Vec<String>>,
    on_authorized: Option<&str>,
    profile: &str,
    connector: Option<Arc<Connector>>,
    path: &str,
    v: &mut V,
) -> Vec<Arc<Webhook>> {
    let mut out = Vec::new();
    for (i, n) in names.unwrap_or_default().into_iter().enumerate() {
        match v.webhooks.get(&n) {
            Some(w) if out.iter().any(|o: &Arc<Webhook>| Arc::ptr_eq(o, w)) => v.err(
                &format!("{path}.webhooks[{i}]"),
                format!("\"{n}\" is named twice"),
            ),
            Some(w) => out.push(w.clone()),
            None => {
                let expected = expected_one_of("webhooks", v.webhooks.keys());
                v.err(
                    &format!("{path}.webhooks[{i}]"),
                    format!("unknown webhook \"{n}\"; {expected}"),
                );
            }
        }
    }
    // The shorthand's URL is checked with the profile (its allow_insecure_http applies).
    if let Some(url) = on_authorized {
        if url.contains('{') {
            v.err(
                &format!("{path}.on_authorized"),
                "a fixed URL is expected; the body says which profile, user and tenant",
            );
        }
        out.push(Arc::new(Webhook::on_authorized(profile, url, connector)));
    }
    out
}
