//! `[webhooks.NAME]`: where grant events are sent (`crate::webhooks` delivers them).

use std::sync::Arc;
use std::time::Duration;

use super::{ClientTls, Connector};
use crate::secret::WebhookSecret;

/// The event types a webhook can subscribe to (`events`; all of them when it names none).
pub const EVENT_TYPES: [&str; 4] = [
    "grant.authorized",
    "grant.refresh_failed",
    "grant.revoked",
    "grant.imported",
];

/// First retry after a failed attempt; each next one waits twice as long (with jitter).
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(5);
/// The longest wait between two attempts.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(300);
/// A delivery not answered with a 2xx within this long after the event is given up (`failed`).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// One attempt (connect, send, read the status) takes at most this long.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// One webhook receiver.
#[derive(Debug)]
pub struct Webhook {
    /// `NAME`, or `on_authorized:PROFILE` for a profile's `on_authorized` shorthand.
    pub name: Arc<str>,
    pub url: String,
    /// `whsec_…` (Standard Webhooks); `None` only for the `on_authorized` shorthand (unsigned).
    pub secret: Option<WebhookSecret>,
    /// Event types sent (all of [`EVENT_TYPES`] when the config names none).
    pub events: Vec<String>,
    pub tls: ClientTls,
    pub connector: Option<Arc<Connector>>,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub max_age: Duration,
    pub timeout: Duration,
    /// The `on_authorized` shorthand: the body is `{"profile", "user", "tenant"}` (its original
    /// form), not the Standard Webhooks envelope.
    pub plain_body: bool,
}

impl Webhook {
    /// Whether this webhook takes events of type `ty`.
    pub fn wants(&self, ty: &str) -> bool {
        self.events.iter().any(|e| e == ty)
    }

    /// The `on_authorized = "URL"` shorthand of profile `profile`: `grant.authorized` only,
    /// unsigned, retried like every webhook.
    pub fn on_authorized(profile: &str, url: &str, connector: Option<Arc<Connector>>) -> Webhook {
        Webhook {
            name: Arc::from(format!("on_authorized:{profile}")),
            url: url.to_string(),
            secret: None,
            events: vec![EVENT_TYPES[0].to_string()],
            tls: ClientTls::default(),
            connector,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
            max_age: DEFAULT_MAX_AGE,
            timeout: DEFAULT_WEBHOOK_TIMEOUT,
            plain_body: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_a_redacted_secret() {
        assert_eq!(DEFAULT_RETRY_INITIAL, Duration::from_secs(5));
        assert_eq!(DEFAULT_RETRY_MAX, Duration::from_secs(300));
        assert_eq!(DEFAULT_MAX_AGE, Duration::from_secs(86_400));
        assert_eq!(DEFAULT_WEBHOOK_TIMEOUT, Duration::from_secs(10));
        let mut w = Webhook::on_authorized("p", "https://bot.example.com/r", None);
        assert!(w.wants("grant.authorized") && !w.wants("grant.revoked"));
        assert!(w.plain_body && w.secret.is_none());
        w.secret = Some(WebhookSecret::new(
            "whsec_c2VjcmV0LXZhbHVlLXRoYXQtaXMtbG9uZw==",
        ));
        let shown = format!("{w:?}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }
}
