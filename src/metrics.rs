//! Prometheus metrics (`GET /metrics` on the admin listener), one registry per server.
//!
//! Labels are bounded: route prefixes and profile names come from the config, status classes,
//! grants, outcomes and OAuth error codes from fixed sets. Never a user id, tenant value, URL, query or
//! token. The request path updates only handles resolved when a config is loaded (atomic counters
//! and a lock-free histogram): no label lookup and no lock per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with atomic buckets (no lock on observe); clones share the buckets.
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug, Default)]
struct HistogramInner {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let h = &self.inner;
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            h.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_us.fetch_add(
            d.as_micros().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // Per-bucket counts (the encoder accumulates them); the last bucket is +Inf (f64::MAX).
        let h = &self.inner;
        let mut buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .zip(&h.buckets)
            .map(|(b, n)| (*b, n.load(Ordering::Relaxed)))
            .collect();
        let count = h.count.load(Ordering::Relaxed);
        let counted: u64 = buckets.iter().map(|(_, n)| n).sum();
        buckets.push((f64::MAX, count.saturating_sub(counted)));
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            count,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub profile: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProfileLabels {
    pub profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub profile: String,
    pub grant: String,
    pub outcome: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub profile: String,
    /// `link_spent` or `user_limit`.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    pub file: String,
}

/// Numbers read at scrape time from elsewhere (the token cache, the store).
pub trait Source: Send + Sync + 'static {
    /// `(name, help, value)` counters.
    fn counters(&self) -> Vec<(&'static str, &'static str, u64)>;
}

pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram>,
    upstream_seconds: Family<RouteLabels, Histogram>,
    token_requests: Family<TokenLabels, Counter>,
    authorization_required: Family<ProfileLabels, Counter>,
    sign_in_attempts_refused: Family<AttemptLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    cert_expiry: Family<CertLabels, Gauge>,
    sources: Arc<Mutex<Vec<Arc<dyn Source>>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Status class label of a status code.
fn class(status: u16) -> usize {
    (status / 100).clamp(1, 5) as usize - 1
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The request path's handles for one route and profile.
pub struct RequestMetrics {
    pub route: Arc<str>,
    pub profile: Arc<str>,
    by_class: [Counter; 5],
    latency: Histogram,
    upstream: Histogram,
    authorization_required: Counter,
}

impl RequestMetrics {
    pub fn record(&self, status: u16, took: Duration) {
        self.by_class[class(status)].inc();
        self.latency.observe(took);
    }

    pub fn upstream(&self, took: Duration) {
        self.upstream.observe(took);
    }

    pub fn authorization_required(&self) {
        self.authorization_required.inc();
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("authsidecar")),
            requests: Family::default(),
            request_seconds: Family::default(),
            upstream_seconds: Family::default(),
            token_requests: Family::default(),
            authorization_required: Family::default(),
            sign_in_attempts_refused: Family::default(),
            reloads: Family::default(),
            cert_expiry: Family::default(),
            sources: Arc::default(),
        };
        if let Ok(mut r) = m.registry.lock() {
            r.register(
                "requests",
                "Proxy requests by route, profile and status class",
                m.requests.clone(),
            );
            r.register(
                "request_duration_seconds",
                "Time from the request head to the response head, by route",
                m.request_seconds.clone(),
            );
            r.register(
                "upstream_duration_seconds",
                "Time the upstream took to start answering, by route",
                m.upstream_seconds.clone(),
            );
            r.register(
                "token_requests",
                "Token requests to identity providers by profile, grant, outcome and OAuth error code",
                m.token_requests.clone(),
            );
            r.register(
                "authorization_required",
                "Requests answered with authorization_required (a login link), by profile",
                m.authorization_required.clone(),
            );
            r.register(
                "sign_in_attempts_refused",
                "Start-page credential checks refused before reaching the IdP, by profile and reason (link_spent: the login link used its attempts; user_limit: the user's attempts in the window)",
                m.sign_in_attempts_refused.clone(),
            );
            r.register(
                "config_reloads",
                "Config reloads by result (ok, invalid)",
                m.reloads.clone(),
            );
            r.register(
                "cert_expiry_seconds",
                "Seconds until each configured certificate expires",
                m.cert_expiry.clone(),
            );
            r.register_collector(Box::new(Sources(m.sources.clone())));
        }
        Arc::new(m)
    }

    /// Handles for one route and profile (at config load).
    pub fn for_request(&self, route: &str, profile: &str) -> RequestMetrics {
        let by_class = CLASSES.map(|c| {
            self.requests
                .get_or_create(&RequestLabels {
                    route: route.to_string(),
                    profile: profile.to_string(),
                    status: c.to_string(),
                })
                .clone()
        });
        let r = RouteLabels {
            route: route.to_string(),
        };
        RequestMetrics {
            route: Arc::from(route),
            profile: Arc::from(profile),
            by_class,
            latency: self.request_seconds.get_or_create(&r).clone(),
            upstream: self.upstream_seconds.get_or_create(&r).clone(),
            authorization_required: self
                .authorization_required
                .get_or_create(&ProfileLabels {
                    profile: profile.to_string(),
                })
                .clone(),
        }
    }

    /// One token request's result.
    pub fn token_request(&self, profile: &str, grant: &str, outcome: &str, error: &str) {
        self.token_requests
            .get_or_create(&TokenLabels {
                profile: profile.to_string(),
                grant: grant.to_string(),
                outcome: outcome.to_string(),
                error: error.to_string(),
            })
            .inc();
    }

    /// A start-page credential check refused by the attempt limits (`link_spent`, `user_limit`).
    pub fn sign_in_attempt_refused(&self, profile: &str, reason: &str) {
        self.sign_in_attempts_refused
            .get_or_create(&AttemptLabels {
                profile: profile.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "invalid" }.to_string(),
            })
            .inc();
    }

    pub fn cert_expiry(&self, file: &str, seconds: i64) {
        self.cert_expiry
            .get_or_create(&CertLabels {
                file: file.to_string(),
            })
            .set(seconds);
    }

    /// Registers a metric kept by another module (the webhook sender's counters and gauge).
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        if let Ok(mut r) = self.registry.lock() {
            r.register(name, help, metric);
        }
    }

    pub fn add_source(&self, s: Arc<dyn Source>) {
        if let Ok(mut v) = self.sources.lock() {
            v.push(s);
        }
    }

    /// The text exposition (OpenMetrics text, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}

/// Reads the [`Source`]s at scrape time.
#[derive(Debug)]
struct Sources(Arc<Mutex<Vec<Arc<dyn Source>>>>);

impl std::fmt::Debug for dyn Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Source")
    }
}

impl prometheus_client::collector::Collector for Sources {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let sources = self.0.lock().map(|s| s.clone()).unwrap_or_default();
        for s in sources {
            for (name, help, value) in s.counters() {
                let c: ConstCounter<u64> = ConstCounter::new(value);
                let e = encoder.encode_descriptor(name, help, None, c.metric_type())?;
                c.encode(e)?;
            }
        }
        Ok(())
    }
}
