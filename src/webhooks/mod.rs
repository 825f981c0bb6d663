//! Grant events sent to webhooks, signed per the Standard Webhooks specification and delivered at
//! least once.
//!
//! The journey of an event:
//! 1. [`emit`]: for each webhook the event's profile feeds (`webhooks = [...]`, `on_authorized`)
//!    that takes its type, one delivery record is written to the store (`hook:{id}`) before any
//!    attempt, so a crash or a restart loses nothing that was emitted.
//! 2. The sender ([`Webhooks::run`]) scans the deliveries, attempts each one that is due (POST,
//!    `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
//!    "id.timestamp.body">`); the same id on every attempt so receivers drop duplicates.
//! 3. A 2xx removes the record. Anything else reschedules it: exponential backoff from
//!    `retry_initial`, doubling, at most `retry_max` apart, with jitter; a delivery older than
//!    `max_age` becomes `failed` and is kept for [`FAILED_KEPT`] so operators can see it.
//! 4. With a shared (Redis) store, an attempt holds a lease on its delivery (`lock:hook:{id}`),
//!    so several replicas never attempt the same delivery at once, and any replica resumes the
//!    deliveries of one that stopped.
//!
//! Bodies are the specification's envelope `{"type", "timestamp", "data": {"profile", "user",
//! "tenant", …}}` and never hold a token. `last_error` is a status code or an error kind, never a
//! response body.

pub mod keep_alive;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::webhook::Webhook;
use crate::oauth::http::{IdpHttp, IdpHttpError};
use crate::proxy::Snapshot;
use crate::secret::WebhookSecret;
use crate::store::{Kind, Name, Store};

/// A failed delivery stays listed (`GET /admin/webhooks/deliveries`) this long.
pub const FAILED_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
/// The sender looks at the store at least this often (deliveries other replicas wrote or gave up).
const SCAN_EVERY: Duration = Duration::from_secs(5);
/// Attempts running at once in one process.
const MAX_CONCURRENT: usize = 32;

/// A grant event.
#[derive(Debug, Clone)]
pub struct Event {
    /// One of [`crate::config::webhook::EVENT_TYPES`].
    pub kind: &'static str,
    pub profile: String,
    pub user: String,
    pub tenant: Option<String>,
    /// Members of `data` beyond profile, user and tenant (never a token).
    pub data: Map<String, Value>,
    /// `{{context.<name>}}` values the grant was made with: a `grant.refresh_failed` login link
    /// needs them.
    pub context: Vec<(String, String)>,
}

impl Event {
    pub fn new(kind: &'static str, profile: &str, user: &str, tenant: Option<&str>) -> Event {
        Event {
            kind,
            profile: profile.to_string(),
            user: user.to_string(),
            tenant: tenant.map(str::to_string),
            data: Map::new(),
            context: Vec::new(),
        }
    }

    /// Adds a member to `data`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Event {
        self.data.insert(key.to_string(), value.into());
        self
    }
}

/// One delivery of one event to one webhook, as the store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Delivery {
    id: String,
    webhook: String,
    #[serde(rename = "type")]
    kind: String,
    body: String,
    /// Unix milliseconds.
    created: u64,
    attempts: u32,
    /// Unix milliseconds.
    next_attempt_at: u64,
    /// `pending` or `failed`.
    state: String,
    last_error: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` keyed with the base64 after `whsec_`
/// (`None`: the secret is not in that form; the config refuses such secrets).
pub fn signature(secret: &WebhookSecret, id: &str, timestamp: u64, body: &str) -> Option<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.expose().strip_prefix("whsec_")?).ok()?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let tag = ring::hmac::sign(&key, format!("{id}.{timestamp}.{body}").as_bytes());
    Some(format!("v1,{}", b64.encode(tag.as_ref())))
}

/// The wait before attempt `attempts + 1`: `initial` doubled per failed attempt, at most `max`,
/// times a random factor in [0.75, 1.25) (still at most `max`).
fn backoff(initial: Duration, max: Duration, attempts: u32) -> Duration {
    use rand::Rng;
    let base = initial
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
        .min(max);
    base.mul_f64(rand::thread_rng().gen_range(0.75..1.25))
        .min(max)
}

/// What `last_error` says of a failed attempt: a status or an error kind, never a body or a URL.
fn error_kind(e: &IdpHttpError) -> String {
    match e {
        IdpHttpError::Timeout(_) => "timeout".into(),
        IdpHttpError::Connect(_) => "connect error".into(),
        IdpHttpError::Dns(_) => "dns error".into(),
        IdpHttpError::Tls(_) => "tls error".into(),
        IdpHttpError::Egress(_) | IdpHttpError::EgressAuth(_) => "connector error".into(),
        IdpHttpError::Redirect(s) | IdpHttpError::Client(s) => format!("status {s}"),
        IdpHttpError::Server { status, .. } => format!("status {status}"),
        IdpHttpError::TooLarge => "response too large".into(),
        IdpHttpError::Request(_) => "invalid request".into(),
    }
}

/// A webhook's HTTP client, and the config it was built for.
type Client = (Arc<Webhook>, IdpHttp);

/// The webhook sender of one server.
pub struct Webhooks {
    live: Arc<arc_swap::ArcSwap<Snapshot>>,
    store: Arc<Store>,
    wake: tokio::sync::Notify,
    /// Deliveries being attempted by this process.
    in_flight: Mutex<HashSet<String>>,
    /// One client per webhook (rebuilt when a reload changes the webhook).
    clients: Mutex<HashMap<Arc<str>, Client>>,
    slots: Arc<tokio::sync::Semaphore>,
    sent: prometheus_client::metrics::counter::Counter,
    failed: prometheus_client::metrics::counter::Counter,
    pending: prometheus_client::metrics::gauge::Gauge,
}

/// The sender of each running server, by its store: [`emit`] finds its server's sender from the
/// store the caller holds (several servers can run in one process, e.g. in tests).
static SENDERS: Mutex<Vec<(Weak<Store>, Weak<Webhooks>)>> = Mutex::new(Vec::new());

fn sender_of(store: &Arc<Store>) -> Option<Arc<Webhooks>> {
    let mut all = SENDERS.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|(s, w)| s.strong_count() > 0 && w.strong_count() > 0);
    all.iter()
        .find(|(s, _)| std::ptr::eq(s.as_ptr(), Arc::as_ptr(store)))
        .and_then(|(_, w)| w.upgrade())
}

/// Queues `event` for every webhook its profile feeds that takes its type: each delivery is
/// written to the store before it is attempted. A no-op when the profile feeds none. Anyone who
/// changes a grant calls this (the callback, the admin API, refreshes, imports).
pub async fn emit(store: &Arc<Store>, event: Event) {
    if let Some(w) = sender_of(store) {
        w.enqueue(event).await;
    }
}

impl Webhooks {
    /// Starts the sender (and the `keep_alive` refresher) of a server; they stop with `stop`.
    pub fn start(
        live: Arc<arc_swap::ArcSwap<Snapshot>>,
        metrics: &crate::metrics::Metrics,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<Webhooks> {
        let store = live.load().store.clone();
        let w = Arc::new(Webhooks {
            live,
            store: store.clone(),
            wake: tokio::sync::Notify::new(),
            in_flight: Mutex::default(),
            clients: Mutex::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT)),
            sent: Default::default(),
            failed: Default::default(),
            pending: Default::default(),
        });
        metrics.register(
            "webhook_deliveries_sent",
            "Webhook deliveries a receiver accepted (2xx)",
            w.sent.clone(),
        );
        metrics.register(
            "webhook_deliveries_failed",
            "Webhook deliveries given up after max_age",
            w.failed.clone(),
        );
        metrics.register(
            "webhook_deliveries_pending",
            "Webhook deliveries waiting for their next attempt (as of the last scan)",
            w.pending.clone(),
        );
        SENDERS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((Arc::downgrade(&store), Arc::downgrade(&w)));
        tokio::spawn(w.clone().run(stop.clone()));
        tokio::spawn(keep_alive::run(w.live.clone(), stop));
        w
    }

    async fn enqueue(&self, event: Event) {
        let snap = self.live.load_full();
        let Some(p) = snap.config.profile(&event.profile) else {
            return;
        };
        let targets: Vec<Arc<Webhook>> = p
            .webhooks
            .iter()
            .filter(|w| w.wants(event.kind))
            .cloned()
            .collect();
        if targets.is_empty() {
            return;
        }
        let mut data = Map::new();
        data.insert("profile".into(), event.profile.clone().into());
        data.insert("user".into(), event.user.clone().into());
        data.insert("tenant".into(), event.tenant.clone().into());
        data.extend(event.data.clone());
        if event.kind == "grant.refresh_failed" {
            // A fresh link for that user and tenant, so the bot can ask them to sign in again.
            let profile: Arc<str> = Arc::from(event.profile.as_str());
            match crate::proxy::login_link(
                &snap,
                &profile,
                event.user.clone(),
                event.tenant.clone(),
                &event.context,
            )
            .await
            {
                Ok((url, expires_in)) => {
                    data.insert("login_url".into(), url.into());
                    data.insert("expires_in".into(), expires_in.into());
                }
                Err(e) => {
                    tracing::warn!(profile = %event.profile, code = e.code.as_str(), "grant.refresh_failed: no login link");
                    data.insert("login_url".into(), Value::Null);
                }
            }
        }
        let timestamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let now = now_ms();
        let deliveries: Vec<Delivery> = targets
            .iter()
            .map(|w| {
                let body = if w.plain_body {
                    json!({"profile": event.profile, "user": event.user, "tenant": event.tenant})
                } else {
                    json!({"type": event.kind, "timestamp": timestamp, "data": data})
                };
                Delivery {
                    id: format!("msg_{}", crate::oauth::grants::random_id()),
                    webhook: w.name.to_string(),
                    kind: event.kind.to_string(),
                    body: body.to_string(),
                    created: now,
                    attempts: 0,
                    next_attempt_at: now,
                    state: "pending".into(),
                    last_error: None,
                }
            })
            .collect();
        let store = self.store.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut n = 0;
            for d in &deliveries {
                let Ok(bytes) = serde_json::to_vec(d) else {
                    continue;
                };
                match store.put(&Name::webhook(&d.id), &bytes, None) {
                    Ok(()) => n += 1,
                    Err(e) => {
                        tracing::error!(webhook = %d.webhook, "webhook delivery not written: {e}")
                    }
                }
            }
            n
        })
        .await
        .unwrap_or(0);
        tracing::debug!(profile = %event.profile, kind = event.kind, written, "grant event queued");
        self.wake.notify_one();
    }

    /// Every delivery in the store (blocking).
    fn all(store: &Store) -> Vec<Delivery> {
        let names = store.names(Kind::Webhook.prefix()).unwrap_or_default();
        names
            .iter()
            .filter_map(|n| store.get(n).ok().flatten())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    /// The sender's loop: scan, start the due attempts, sleep until the next is due (or an event
    /// arrives, or [`SCAN_EVERY`]).
    async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            // A config without webhooks costs no scan (a reload that adds one wakes nothing, but
            // the next turn, at most SCAN_EVERY later, scans).
            let configured = self
                .live
                .load()
                .config
                .profiles
                .values()
                .any(|p| !p.webhooks.is_empty());
            let store = self.store.clone();
            let all = if configured {
                tokio::task::spawn_blocking(move || Webhooks::all(&store))
                    .await
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            let now = now_ms();
            let pending: Vec<&Delivery> = all.iter().filter(|d| d.state == "pending").collect();
            self.pending.set(pending.len() as i64);
            let mut next = now + SCAN_EVERY.as_millis() as u64;
            for d in pending {
                if d.next_attempt_at > now {
                    next = next.min(d.next_attempt_at);
                    continue;
                }
                let fresh = self
                    .in_flight
                    .lock()
                    .map(|mut f| f.insert(d.id.clone()))
                    .unwrap_or(false);
                if fresh {
                    let (me, id) = (self.clone(), d.id.clone());
                    let slots = self.slots.clone();
                    // Held until the attempt is recorded: a shutdown's drain waits for it.
                    let held = stop.clone();
                    tokio::spawn(async move {
                        let _held = held;
                        let _slot = slots.acquire_owned().await;
                        me.attempt(&id).await;
                        if let Ok(mut f) = me.in_flight.lock() {
                            f.remove(&id);
                        }
                        me.wake.notify_one();
                    });
                }
            }
            let wait = Duration::from_millis(next.saturating_sub(now_ms()).max(20));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// The webhook a delivery goes to, in the config in force now.
    fn webhook(&self, name: &str) -> Option<Arc<Webhook>> {
        let snap = self.live.load();
        if let Some(w) = snap.config.webhooks.get(name) {
            return Some(w.clone());
        }
        let profile = name.strip_prefix("on_authorized:")?;
        snap.config
            .profile(profile)?
            .webhooks
            .iter()
            .find(|w| &*w.name == name)
            .cloned()
    }

    fn client(&self, w: &Arc<Webhook>) -> Result<IdpHttp, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, c)) = clients.get(&w.name) {
            if Arc::ptr_eq(known, w) {
                return Ok(c.clone());
            }
        }
        let c = IdpHttp::new(&w.tls, w.connector.clone(), w.timeout)?;
        clients.insert(w.name.clone(), (w.clone(), c.clone()));
        Ok(c)
    }

    /// One attempt of delivery `id`, under its lease when the store is shared.
    async fn attempt(&self, id: &str) {
        let name = Name::webhook(id);
        let lock = name.lock();
        let token = crate::oauth::grants::random_id();
        let lease = self
            .webhook_of(id)
            .await
            .map_or(Duration::from_secs(30), |w| {
                w.timeout + Duration::from_secs(10)
            });
        let store = self.store.clone();
        let (l, t) = (lock.clone(), token.clone());
        let locked = tokio::task::spawn_blocking(move || match store.shared() {
            Some(r) => r.try_lock(&l, &t, lease).unwrap_or(false),
            None => true,
        })
        .await
        .unwrap_or(false);
        if !locked {
            // Another replica is attempting it.
            return;
        }
        self.attempt_locked(&name).await;
        let store = self.store.clone();
        let _ =
            tokio::task::spawn_blocking(move || store.shared().map(|r| r.unlock(&lock, &token)))
                .await;
    }

    async fn read(&self, name: &Name) -> Option<Delivery> {
        let (store, n) = (self.store.clone(), name.clone());
        tokio::task::spawn_blocking(move || store.get(&n).ok().flatten())
            .await
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    async fn webhook_of(&self, id: &str) -> Option<Arc<Webhook>> {
        self.read(&Name::webhook(id))
            .await
            .and_then(|d| self.webhook(&d.webhook))
    }

    async fn attempt_locked(&self, name: &Name) {
        // Read again under the lease: another replica may have delivered or rescheduled it.
        let Some(mut d) = self.read(name).await else {
            return;
        };
        let now = now_ms();
        if d.state != "pending" || d.next_attempt_at > now {
            return;
        }
        let result = match self.webhook(&d.webhook) {
            None => Err("webhook no longer configured".to_string()),
            Some(w) => self.send(&w, &d).await.map(|()| w),
        };
        let store = self.store.clone();
        let n = name.clone();
        match result {
            Ok(w) => {
                tracing::debug!(webhook = %w.name, kind = %d.kind, "webhook delivered");
                let _ = tokio::task::spawn_blocking(move || store.remove(&n)).await;
                self.sent.inc();
            }
            Err(e) => {
                d.attempts += 1;
                d.last_error = Some(e);
                let w = self.webhook(&d.webhook);
                let max_age = w.as_ref().map_or(Duration::ZERO, |w| w.max_age);
                let now = now_ms();
                let (initial, max) = w
                    .as_ref()
                    .map_or((Duration::from_secs(1), Duration::from_secs(1)), |w| {
                        (w.retry_initial, w.retry_max)
                    });
                let wait = backoff(initial, max, d.attempts);
                let expires = if w.is_none()
                    || now.saturating_sub(d.created) >= max_age.as_millis() as u64
                {
                    d.state = "failed".into();
                    self.failed.inc();
                    tracing::warn!(webhook = %d.webhook, kind = %d.kind, attempts = d.attempts, "webhook delivery failed for good (max_age)");
                    Some(now / 1000 + FAILED_KEPT.as_secs())
                } else {
                    d.next_attempt_at = now + wait.as_millis() as u64;
                    tracing::info!(webhook = %d.webhook, kind = %d.kind, attempts = d.attempts, error = ?d.last_error, "webhook attempt failed; retrying in {wait:?}");
                    None
                };
                let written = match serde_json::to_vec(&d) {
                    Ok(bytes) => {
                        tokio::task::spawn_blocking(move || store.put(&n, &bytes, expires))
                            .await
                            .is_ok_and(|r| r.is_ok())
                    }
                    Err(_) => false,
                };
                if !written {
                    // The store did not take the new schedule: the record still says "due now".
                    // Hold this delivery back here for the wait instead of sending it again at once.
                    tracing::warn!(webhook = %d.webhook, "webhook delivery: its new schedule was not written");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// POSTs one delivery; `Err` is what `last_error` shows.
    async fn send(&self, w: &Arc<Webhook>, d: &Delivery) -> Result<(), String> {
        use oauth2::AsyncHttpClient;
        let http = self.client(w).map_err(|_| "tls setup error".to_string())?;
        let timestamp = now_ms() / 1000;
        let mut req = http::Request::post(w.url.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", d.id.as_str())
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(secret) = &w.secret {
            let sig = signature(secret, &d.id, timestamp, &d.body)
                .ok_or_else(|| "invalid secret".to_string())?;
            req = req.header("webhook-signature", sig);
        }
        let req = req
            .body(d.body.clone().into_bytes())
            .map_err(|_| "invalid url".to_string())?;
        match http.call(req).await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("status {}", r.status().as_u16())),
            Err(e) => Err(error_kind(&e)),
        }
    }
}

/// `GET /admin/webhooks/deliveries`: the pending and failed deliveries of the server owning
/// `store` (oldest first), without their bodies.
pub async fn deliveries(store: &Arc<Store>) -> Value {
    let s = store.clone();
    let mut all = tokio::task::spawn_blocking(move || Webhooks::all(&s))
        .await
        .unwrap_or_default();
    all.sort_by_key(|d| d.created);
    let rfc3339 = |ms: u64| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
    };
    let out: Vec<Value> = all
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "webhook": d.webhook,
                "type": d.kind,
                "state": d.state,
                "attempts": d.attempts,
                "next_attempt_at": (d.state == "pending").then(|| rfc3339(d.next_attempt_at)),
                "last_error": d.last_error,
                "created_at": rfc3339(d.created),
            })
        })
        .collect();
    json!({ "deliveries": out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_specification_example() {
        // The example of the Standard Webhooks reference libraries.
        let secret = WebhookSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let sig = signature(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert_eq!(signature(&WebhookSecret::new("nope"), "m", 1, "{}"), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_maximum() {
        let (i, m) = (Duration::from_secs(5), Duration::from_secs(300));
        for _ in 0..50 {
            let first = backoff(i, m, 1);
            assert!(first >= Duration::from_millis(3750) && first < Duration::from_millis(6250));
            let third = backoff(i, m, 3);
            assert!(third >= Duration::from_secs(15) && third < Duration::from_secs(25));
            assert!(backoff(i, m, 30) <= m);
            assert!(backoff(i, m, 30) >= m.mul_f64(0.75));
        }
    }

    #[test]
    fn last_error_is_a_kind_never_a_message() {
        let e = IdpHttpError::Connect("secret-host:443 refused".into());
        assert_eq!(error_kind(&e), "connect error");
        assert_eq!(
            error_kind(&IdpHttpError::Server {
                status: 503,
                retry_after: None
            }),
            "status 503"
        );
    }
}
