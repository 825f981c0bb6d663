//! Micro-benchmarks of the request hot path: route match, token cache hit, header injection, query
//! rewrite, JSON payload rewrite. `cargo bench --bench hot_path`.

use std::sync::Arc;
use std::time::Duration;

use authsidecar::config::{Config, Env};
use authsidecar::inject::{Inputs, Plan};
use authsidecar::proxy::Snapshot;
use authsidecar::secret::{AccessToken, RefreshToken};
use authsidecar::token::{Fetched, Policy, TokenCache, TokenError, TokenKey, TokenSource};
use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method};

/// 50 routes, a header, a query and a payload profile.
fn config() -> Config {
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&format!(
            "[[routes]]\nprefix = \"/svc{i}/\"\nupstream = \"http://127.0.0.1:9/api/{i}/\"\nprofiles = [\"h\", \"q\", \"j\"]\n"
        ));
    }
    text.push_str(
        r#"
[profiles.h]
type = "api_key"
api_key = "k-0123456789abcdef"
[[profiles.h.fields]]
in = "header"
key = "X-Api-Key"
value = "{{api_key}}"
[[profiles.h.fields]]
in = "header"
key = "X-User"
value = "{{user}}"

[profiles.q]
type = "api_key"
api_key = "k-0123456789abcdef"
[[profiles.q.fields]]
in = "query"
key = "api_key"
value = "{{api_key}}"

[profiles.j]
type = "api_key"
api_key = "k-0123456789abcdef"
[[profiles.j.fields]]
in = "payload"
key = "/auth/token"
value = "{{api_key}}"
"#,
    );
    Config::from_str_with_env(&text, &Env::default()).expect("bench config")
}

struct Never;
impl TokenSource for Never {
    fn fetch<'a>(
        &'a self,
        _: &'a TokenKey,
        _: Option<RefreshToken>,
    ) -> BoxFuture<'a, Result<Fetched, TokenError>> {
        Box::pin(async {
            Ok(Fetched {
                access_token: AccessToken::new("at-0123456789abcdef0123456789abcdef"),
                token_type: "Bearer".into(),
                expires_in: Some(Duration::from_secs(3600)),
                refresh_token: None,
                id_token: None,
                scope: None,
                extra: vec![],
                refresh_token_refused: false,
                entered: vec![],
            })
        })
    }
}

fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "sidecar:8080"),
        ("user-agent", "bot-runtime/1.0"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("x-request-id", "4f8a2c1e9b7d"),
        ("x-forwarded-for", "10.0.0.7"),
        ("accept-encoding", "gzip"),
        ("x-api-key", "client-supplied"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

fn benches(c: &mut Criterion) {
    let config = Arc::new(config());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let store = Arc::new(authsidecar::store::Store::memory());
    let snapshot = Snapshot::build(config.clone(), store, authsidecar::metrics::Metrics::new())
        .expect("snapshot");

    c.bench_function("route_match_50_routes", |b| {
        b.iter(|| snapshot.route_prefix(black_box("/svc37/items/42")))
    });

    let cache = TokenCache::new();
    let source: Arc<dyn TokenSource> = Arc::new(Never);
    let policy = Policy::default();
    let key = TokenKey {
        profile: Arc::from("p"),
        fingerprint: 7,
        tenant: None,
        user: None,
        context: None,
    };
    rt.block_on(cache.get(&key, &source, &policy))
        .expect("warm");
    c.bench_function("token_cache_hit", |b| {
        b.iter(|| {
            cache
                .get(black_box(&key), &source, &policy)
                .now_or_never()
                .expect("a hit is ready at once")
                .expect("token")
        })
    });

    let inputs = Inputs {
        user: Some("user-42".into()),
        ..Inputs::default()
    };
    let h = Plan::compile(&config.profiles["h"]);
    let base = headers();
    c.bench_function("header_injection_2_fields", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |hm| h.apply_headers(hm, &inputs).expect("inject"),
            BatchSize::SmallInput,
        )
    });

    let q = Plan::compile(&config.profiles["q"]);
    c.bench_function("query_rewrite", |b| {
        b.iter(|| {
            q.rewrite_query(
                black_box(Some("limit=50&cursor=abc%3D%3D&api_key=mine&sort=-created")),
                &inputs,
            )
            .expect("query")
        })
    });

    let j = Plan::compile(&config.profiles["j"]);
    let mut body = String::from("{\"items\":[");
    let mut i = 0;
    while body.len() < 4000 {
        body.push_str(&format!(
            "{{\"id\":{i},\"name\":\"item-{i}\",\"price\":12.3400,\"tags\":[\"a\",\"b\"]}},"
        ));
        i += 1;
    }
    body.pop();
    body.push_str("],\"n\":123456789012345678901234567890}");
    let body = Bytes::from(body);
    let mut jh = HeaderMap::new();
    jh.insert("content-type", HeaderValue::from_static("application/json"));
    c.bench_function("json_payload_rewrite_4k", |b| {
        b.iter_batched_ref(
            || jh.clone(),
            |hm| {
                j.rewrite_payload(&Method::POST, hm, body.clone(), &inputs)
                    .expect("rewrite")
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
