//! End users' grants on the admin listener: `GET /admin/grants` pages through them on every store
//! (memory, file, Redis, a Redis Cluster), never showing a token, and refuse a cursor from before a Redis restart; `POST /admin/grants:import` takes
//! JSON lines, imports the good ones (which then serve calls) and refuses the rest, line by line,
//! writing nothing for them.

use std::collections::BTreeSet;

use http::Method;
use serde_json::{json, Value};

use authsidecar::config::{Config, Env};
use authsidecar::mock::MockProvider;
use authsidecar::Server;

use crate::support::fleet::{Redis, RedisCluster};
use crate::support::*;

/// Which store the sidecar keeps grants in.
enum Kind {
    Memory,
    File,
    Redis,
    Cluster,
}

struct Setup {
    mock: MockProvider,
    server: Server,
    redis: Option<Redis>,
    _cluster: Option<RedisCluster>,
    /// Each grant is listed exactly once (memory, file). On Redis, SCAN returns every key present
    /// for the whole listing at least once, and may return one twice when the server resizes its
    /// table meanwhile (as it does just after the grants are written).
    exact: bool,
    /// Last: removed after the processes that write in it are gone.
    _dir: TempDir,
}

impl Setup {
    async fn start(kind: Kind) -> Setup {
        let dir = TempDir::new("grants-admin");
        let mock = mock().await;
        let key = authsidecar::store::crypto::generate_key();
        let (mut redis, mut cluster) = (None, None);
        let store = match kind {
            Kind::Memory => "kind = \"memory\"".to_string(),
            Kind::File => format!(
                "kind = \"file\"\npath = \"{}\"\nkey = \"{key}\"",
                dir.join("grants.db").display()
            ),
            Kind::Redis => {
                let r = Redis::start(&dir.join("redis")).await;
                let url = r.url();
                redis = Some(r);
                format!("kind = \"redis\"\nurl = \"{url}\"\nkey = \"{key}\"\ntimeout = \"500ms\"")
            }
            Kind::Cluster => {
                let c = RedisCluster::start(&dir.join("cluster"), 3).await;
                let seeds = c.seeds();
                cluster = Some(c);
                format!(
                    "kind = \"redis\"\ncluster = [{seeds}]\nkey = \"{key}\"\ntimeout = \"500ms\""
                )
            }
        };
        let m = mock.addr;
        let profile = |name: &str, extra: &str| {
            format!(
                r#"
[profiles.{name}]
type = "oauth2_authorization_code"
authorization_url = "http://{m}/oauth/authorize"
token_url = "http://{m}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
{extra}
"#
            )
        };
        let text = format!(
            r#"
[auth]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"

[store]
{store}

[[routes]]
prefix = "/u/"
upstream = "http://{m}/protected/"
profiles = ["user"]
{user}{team}
[profiles.machine]
type = "oauth2_client_credentials"
token_url = "http://{m}/oauth/token"
client_id = "demo-client"
client_secret = "demo-secret"
"#,
            user = profile("user", ""),
            team = profile("team", "tenancy = true"),
        );
        let config = Config::from_str_with_env(&with_listeners(&text), &Env::default()).unwrap();
        let server = Server::start(config).await.unwrap();
        Setup {
            mock,
            server,
            redis,
            _cluster: cluster,
            exact: matches!(kind, Kind::Memory | Kind::File),
            _dir: dir,
        }
    }

    async fn admin(&self, method: Method, path_and_query: &str, body: String) -> Resp {
        let url = format!("http://{}{path_and_query}", self.server.admin_addr);
        let auth = format!("Bearer {ADMIN_TOKEN}");
        send(method, &url, &[("Authorization", &auth)], body).await
    }

    async fn import(&self, lines: &str) -> Resp {
        self.admin(Method::POST, "/admin/grants:import", lines.to_string())
            .await
    }

    /// Every page of `GET /admin/grants?{filter}` with `limit`: the grants, and how many pages.
    async fn list_all(&self, filter: &str, limit: usize) -> (Vec<Value>, usize) {
        let (mut all, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
        loop {
            pages += 1;
            assert!(pages <= 1000, "the paging ends");
            let mut q = format!("/admin/grants?limit={limit}&{filter}");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let r = self.admin(Method::GET, &q, String::new()).await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            let v = r.json();
            let grants = v["grants"].as_array().unwrap();
            assert!(grants.len() <= limit, "a page holds at most `limit`");
            all.extend(grants.iter().cloned());
            match &v["next_cursor"] {
                Value::Null => return (all, pages),
                Value::String(c) => cursor = Some(c.clone()),
                other => panic!("next_cursor: {other}"),
            }
        }
    }

    async fn call_as(&self, user: &str) -> Resp {
        let url = format!("http://{}/u/me", self.server.proxy_addr);
        get(&url, &[("X-Authsidecar-User", user)]).await
    }
}

impl Setup {
    /// `(profile, user)` of listed grants, each seen exactly once where the store promises it.
    fn once(&self, grants: &[Value]) -> BTreeSet<(String, String)> {
        let mut seen = BTreeSet::new();
        for g in grants {
            let k = (
                g["profile"].as_str().unwrap().to_string(),
                g["user"].as_str().unwrap().to_string(),
            );
            assert!(seen.insert(k.clone()) || !self.exact, "{k:?} listed twice");
        }
        seen
    }
}

const USERS: usize = 230;
const TEAM: usize = 25;

/// Imports `USERS` grants of `user` (user ids with a `:` among them) and `TEAM` of `team` (in
/// tenant `acme`), every token a canary that must never be listed.
async fn fill(s: &Setup) {
    let mut lines = String::new();
    for i in 0..USERS {
        lines.push_str(
            &json!({"profile": "user", "user": format!("u:{i:03}"),
            "access_token": format!("at-canary-{i}"), "refresh_token": format!("rt-canary-{i}"),
            "expires_in": 3600, "scope": "read"})
            .to_string(),
        );
        lines.push('\n');
    }
    for i in 0..TEAM {
        lines.push_str(
            &json!({"profile": "team", "user": format!("u:{i:03}"), "tenant": "ACME",
            "access_token": format!("at-canary-team-{i}")})
            .to_string(),
        );
        lines.push('\n');
    }
    let r = s.import(&lines).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(
        (v["imported"].as_u64(), v["refused"].as_u64()),
        (Some((USERS + TEAM) as u64), Some(0)),
        "{v}"
    );
}

/// Pages through every grant, and with each filter, checking each is listed once and no token is.
async fn lists_every_grant_once(s: &Setup) {
    fill(s).await;
    let (all, pages) = s.list_all("", 40).await;
    assert_eq!(s.once(&all).len(), USERS + TEAM);
    assert!(pages >= (USERS + TEAM) / 40, "{pages} pages");
    let shown = serde_json::to_string(&all).unwrap();
    assert!(!shown.contains("canary"), "a token was listed: {shown}");

    let g = all
        .iter()
        .find(|g| g["profile"] == "user" && g["user"] == "u:007")
        .unwrap();
    assert_eq!(g["tenant"], Value::Null);
    assert_eq!(g["scope"], "read");
    assert_eq!(g["has_refresh_token"], true);
    assert!(g["expires_at"].as_str().unwrap().ends_with('Z'), "{g}");
    let t = all.iter().find(|g| g["profile"] == "team").unwrap();
    assert_eq!(
        (&t["tenant"], &t["has_refresh_token"]),
        (&json!("acme"), &json!(false))
    );

    let (team, _) = s.list_all("profile=team", 10).await;
    assert_eq!(s.once(&team).len(), TEAM);
    assert!(team.iter().all(|g| g["profile"] == "team"));
    let (one_user, _) = s.list_all("user=u%3A007", 7).await;
    assert_eq!(
        s.once(&one_user),
        BTreeSet::from([
            ("team".to_string(), "u:007".to_string()),
            ("user".to_string(), "u:007".to_string())
        ])
    );
    let (both, _) = s.list_all("profile=user&user=u%3A007", 100).await;
    assert_eq!(s.once(&both).len(), 1);
    let (none, pages) = s.list_all("profile=machine", 100).await;
    assert_eq!((none.len(), pages), (0, 1));

    // A default page is 100 grants.
    let r = s.admin(Method::GET, "/admin/grants", String::new()).await;
    assert_eq!(r.json()["grants"].as_array().unwrap().len(), 100);
    for q in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "cursor=not-a-cursor",
        "cursor=%21",
    ] {
        let r = s
            .admin(Method::GET, &format!("/admin/grants?{q}"), String::new())
            .await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (400, "query_invalid"),
            "{q}"
        );
    }
}

#[tokio::test]
async fn grants_are_listed_page_by_page_on_the_memory_store() {
    lists_every_grant_once(&Setup::start(Kind::Memory).await).await;
}

#[tokio::test]
async fn grants_are_listed_page_by_page_on_the_file_store() {
    lists_every_grant_once(&Setup::start(Kind::File).await).await;
}

#[tokio::test]
async fn grants_are_listed_page_by_page_on_redis_and_a_cursor_from_before_a_restart_is_refused() {
    let mut s = Setup::start(Kind::Redis).await;
    lists_every_grant_once(&s).await;

    // Redis goes away between two pages: 503, and the same cursor resumes once it is back.
    let r = s
        .admin(Method::GET, "/admin/grants?limit=50", String::new())
        .await;
    let cursor = r.json()["next_cursor"].as_str().unwrap().to_string();
    let redis = s.redis.as_mut().unwrap();
    redis.stop();
    let next = format!("/admin/grants?limit=50&cursor={cursor}");
    let r = s.admin(Method::GET, &next, String::new()).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (503, "token_store_unavailable")
    );
    assert_eq!(r.headers["retry-after"], "1");
    // An import meanwhile: the first write fails, the later lines are refused without a try.
    let lines: Vec<String> = (0..3)
        .map(|i| {
            json!({"profile": "user", "user": format!("late-{i}"), "access_token": "at-canary"})
                .to_string()
        })
        .collect();
    let v = s.import(&lines.join("\n")).await.json();
    assert_eq!(
        (v["imported"].as_u64(), v["refused"].as_u64()),
        (Some(0), Some(3)),
        "{v}"
    );
    for l in v["lines"].as_array().unwrap() {
        assert_eq!(l["error"]["code"], "token_store_unavailable", "{l}");
    }
    assert!(
        v["lines"][2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1"),
        "{v}"
    );
    // Back: the same cursor still fails, now because that server's SCAN cursor means nothing to
    // the restarted one; a new listing sees every grant once.
    s.redis.as_mut().unwrap().restart().await;
    let r = s.admin(Method::GET, &next, String::new()).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (409, "cursor_expired")
    );
    let (all, _) = s.list_all("", 50).await;
    assert_eq!(
        s.once(&all).len(),
        USERS + TEAM,
        "and none of the refused import"
    );
}

#[tokio::test]
async fn grants_are_listed_page_by_page_on_a_redis_cluster() {
    lists_every_grant_once(&Setup::start(Kind::Cluster).await).await;
}

/// Good lines are imported and serve the users' calls; bad and malformed lines are refused with
/// their number and member, naming no value, and leave nothing written.
#[tokio::test]
async fn a_bulk_import_takes_the_good_lines_and_refuses_the_others_line_by_line() {
    let s = Setup::start(Kind::File).await;
    let (at, rt) = issued_elsewhere(&s.mock).await;
    let (at2, rt2) = issued_elsewhere(&s.mock).await;
    let lines = [
        json!({"profile": "user", "user": "ann", "access_token": at, "refresh_token": rt, "expires_in": 3600}).to_string(),
        "   ".to_string(),
        r#"{"profile": "user", "user": "bob", "access_token": "#.to_string(),
        json!({"profile": "user", "user": "bob", "refresh_token": "rt-canary-bob"}).to_string(),
        json!({"profile": "nope", "user": "bob", "access_token": "at-canary-bob"}).to_string(),
        json!({"profile": "user", "user": "bob", "tenant": "acme", "access_token": "at-canary-bob"}).to_string(),
        json!({"profile": "user", "user": "dee", "access_token": at2, "refresh_token": rt2, "expires_at": "2020-01-01T00:00:00Z"}).to_string(),
        json!({"profile": "user", "access_token": "at-canary-bob"}).to_string(),
        json!({"profile": "user", "user": "bob", "access_token": "at-canary-bob", "password": "pw-canary"}).to_string(),
        "[]".to_string(),
        json!({"profile": "user", "user": "bob", "access_token": "at-canary-bob", "expires_in": 1, "expires_at": 2}).to_string(),
        json!({"profile": "machine", "user": "bob", "access_token": "at-canary-bob"}).to_string(),
        json!({"profile": "user", "user": "", "access_token": "at-canary-bob"}).to_string(),
        String::new(),
    ];
    let body = lines.join("\n");

    let unauthorized = send(
        Method::POST,
        &format!("http://{}/admin/grants:import", s.server.admin_addr),
        &[],
        body.clone(),
    )
    .await;
    assert_eq!(
        (
            unauthorized.status.as_u16(),
            unauthorized.error_code().as_str()
        ),
        (401, "unauthorized")
    );
    let r = get(&format!("http://{}/admin/grants", s.server.admin_addr), &[]).await;
    assert_eq!(r.status, 401);
    let (listed, _) = s.list_all("", 100).await;
    assert!(
        listed.is_empty(),
        "nothing imported without the admin token"
    );

    let r = s.import(&body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let shown = String::from_utf8_lossy(&r.body).to_string();
    for secret in [&at, &rt, &at2, &rt2, "canary"] {
        assert!(!shown.contains(secret), "a value is echoed: {shown}");
    }
    let v = r.json();
    assert_eq!(
        (v["imported"].as_u64(), v["refused"].as_u64()),
        (Some(2), Some(10)),
        "{v}"
    );
    let by_line: Vec<(u64, bool, String, String)> = v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["line"].as_u64().unwrap(),
                l["ok"].as_bool().unwrap(),
                l["error"]["code"].as_str().unwrap_or("").to_string(),
                l["error"]["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let codes: Vec<(u64, bool, &str)> = by_line
        .iter()
        .map(|(n, ok, c, _)| (*n, *ok, c.as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            (1, true, ""),
            (3, false, "grant_invalid"),
            (4, false, "grant_invalid"),
            (5, false, "profile_not_found"),
            (6, false, "tenant_invalid"),
            (7, true, ""),
            (8, false, "user_required"),
            (9, false, "grant_invalid"),
            (10, false, "grant_invalid"),
            (11, false, "grant_invalid"),
            (12, false, "not_per_user"),
            (13, false, "user_invalid"),
        ],
        "blank lines are skipped, every other line is answered by its number"
    );
    let message = |n: u64| by_line.iter().find(|l| l.0 == n).unwrap().3.clone();
    assert!(message(4).contains("\"access_token\""), "{}", message(4));
    assert!(message(9).contains("\"password\""), "{}", message(9));
    assert!(message(11).contains("\"expires_in\""), "{}", message(11));

    // Only the good lines were written.
    let (listed, _) = s.list_all("", 100).await;
    assert_eq!(
        s.once(&listed),
        BTreeSet::from([
            ("user".to_string(), "ann".to_string()),
            ("user".to_string(), "dee".to_string())
        ])
    );
    // They serve calls: ann's as imported, dee's (expired) refreshed with its refresh token.
    let before = s.mock.token_requests();
    let r = s.call_as("ann").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.echoed("authorization"), [format!("Bearer {at}")]);
    assert_eq!(s.mock.token_requests(), before);
    let r = s.call_as("dee").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_ne!(r.echoed("authorization"), [format!("Bearer {at2}")]);
    assert_eq!(s.mock.token_requests(), before + 1, "one refresh");
    let r = s.call_as("bob").await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (401, "authorization_required"),
        "no line of bob's was written"
    );
}

/// A body over 8 MiB is refused whole (413) before any line is written.
#[tokio::test]
async fn a_bulk_import_over_its_size_limit_writes_nothing() {
    let s = Setup::start(Kind::Memory).await;
    let line = json!({"profile": "user", "user": "u", "access_token": "at-canary"}).to_string();
    let mut body = String::new();
    while body.len() <= 8 * 1024 * 1024 {
        body.push_str(&line);
        body.push('\n');
    }
    let r = s.import(&body).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (413, "payload_too_large")
    );
    let (listed, _) = s.list_all("", 10).await;
    assert!(listed.is_empty());
}
