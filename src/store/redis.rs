//! The `redis` store: records shared by replicas, sealed like the file store's, with expiry kept by
//! Redis itself (relative TTLs, so the replicas' clocks do not matter). Also the fleet-wide refresh
//! lock (a lease with a fencing token) and invalidation messages (pub/sub).
//!
//! Standalone Redis (one URL) or Redis Cluster (seed nodes). Keys carry a hash tag
//! (`{prefix}{name}` as `prefix` + `{` name `}`, the lock `prefix` + `lock:{` name `}`) so a record and
//! its refresh lock live in one slot and the fenced write is one script on one node.
//!
//! Every call is bounded by `store.timeout` (connect, read, write). Connections are pooled; one that
//! failed is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redis::{Connection, ConnectionLike};

use super::crypto::{Crypto, Opened};
use super::StoreError;

const MAX_IDLE: usize = 8;
/// `SCAN` calls one page makes at most (a `MATCH` that keeps few keys ends a page early, with a
/// cursor, rather than walking the whole keyspace in one call).
pub const SCANS_PER_PAGE: usize = 50;

type Conn = Box<dyn ConnectionLike + Send>;

enum Target {
    Single(redis::Client),
    /// The cluster client, and one seed node's client for pub/sub and node addresses.
    Cluster {
        client: Box<redis::cluster::ClusterClient>,
        seed: redis::Client,
    },
}

pub struct RedisBackend {
    target: Target,
    prefix: String,
    pub(super) crypto: Crypto,
    timeout: Duration,
    pool: Mutex<Vec<Conn>>,
    /// Failed calls since start (exported as a metric).
    pub errors: AtomicU64,
}

fn err(e: redis::RedisError) -> StoreError {
    // The error text names the failure (connection refused, timeout, …), never the URL.
    StoreError::Io(format!("redis: {e}"))
}

/// Escapes glob characters for `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
const UNLOCK: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
const INCR: &str = "local n = redis.call('INCR', KEYS[1]) if n == 1 and tonumber(ARGV[1]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end return n";
const REPLACE: &str = "local o = redis.call('GET', KEYS[1]) if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) else redis.call('SET', KEYS[1], ARGV[1]) end return o";
const PUT_FENCED: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[2], ARGV[2]) return 1 else return 0 end";

impl RedisBackend {
    /// `urls`: one URL (standalone), or the seed nodes of a cluster (`cluster`).
    pub fn open(
        urls: &[&str],
        cluster: bool,
        prefix: &str,
        crypto: Crypto,
        timeout: Duration,
    ) -> Result<RedisBackend, StoreError> {
        let invalid = || StoreError::Io("redis: invalid store url".into());
        let first = urls.first().ok_or_else(invalid)?;
        let single = redis::Client::open(*first).map_err(|_| invalid())?;
        let target = if cluster {
            let client = redis::cluster::ClusterClient::builder(urls.to_vec())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .build()
                .map_err(|_| invalid())?;
            Target::Cluster {
                client: Box::new(client),
                seed: single,
            }
        } else {
            Target::Single(single)
        };
        Ok(RedisBackend {
            target,
            prefix: prefix.to_string(),
            crypto,
            timeout,
            pool: Mutex::new(Vec::new()),
            errors: AtomicU64::new(0),
        })
    }

    /// The Redis key of a record (hash-tagged: a record and its lock share a slot).
    fn key(&self, name: &str) -> String {
        match super::names::locked(name) {
            Some(rest) => format!("{}{}{{{rest}}}", self.prefix, super::Kind::Lock.prefix()),
            None => format!("{}{{{name}}}", self.prefix),
        }
    }

    /// The record name of a Redis key (`None` for locks and foreign keys).
    fn name_of(&self, key: &str) -> Option<String> {
        let inner = key.strip_prefix(self.prefix.as_str())?;
        let inner = inner.strip_prefix('{')?.strip_suffix('}')?;
        Some(inner.to_string())
    }

    fn single(client: &redis::Client, timeout: Duration) -> redis::RedisResult<Connection> {
        let c = client.get_connection_with_timeout(timeout)?;
        c.set_read_timeout(Some(timeout))?;
        c.set_write_timeout(Some(timeout))?;
        Ok(c)
    }

    fn connect(&self) -> redis::RedisResult<Conn> {
        Ok(match &self.target {
            Target::Single(c) => Box::new(Self::single(c, self.timeout)?),
            Target::Cluster { client, .. } => {
                let c = client.get_connection()?;
                c.set_read_timeout(Some(self.timeout))?;
                c.set_write_timeout(Some(self.timeout))?;
                Box::new(c)
            }
        })
    }

    /// Runs `f` on a pooled connection; a failed call drops its connection and counts an error.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut dyn ConnectionLike) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let mut c = match pooled {
            Some(c) => c,
            None => self.connect().map_err(|e| {
                self.errors.fetch_add(1, Ordering::Relaxed);
                err(e)
            })?,
        };
        match f(c.as_mut()) {
            Ok(v) => {
                if let Ok(mut p) = self.pool.lock() {
                    if p.len() < MAX_IDLE {
                        p.push(c);
                    }
                }
                Ok(v)
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                Err(err(e))
            }
        }
    }

    pub fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| redis::cmd("PING").query::<String>(c))
            .map(|_| ())
    }

    /// `SET`, with a relative TTL when the record expires.
    pub fn put(&self, name: &str, plain: &[u8], ttl_secs: Option<u64>) -> Result<(), StoreError> {
        let sealed = self.crypto.seal(name, plain);
        let key = self.key(name);
        self.with(|c| match ttl_secs {
            Some(t) => redis::cmd("SET")
                .arg(&key)
                .arg(sealed)
                .arg("EX")
                .arg(t.max(1))
                .query::<()>(c),
            None => redis::cmd("SET").arg(&key).arg(sealed).query::<()>(c),
        })
    }

    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(name);
        let sealed: Option<Vec<u8>> = self.with(|c| redis::cmd("GET").arg(&key).query(c))?;
        Ok(match sealed.map(|s| self.crypto.open(name, &s)) {
            None => None,
            Some(Ok(Opened::Current(p))) => Some(p),
            Some(Ok(Opened::Previous(p))) => {
                // Key rotation: seal it again under the current key, keeping its TTL.
                let sealed = self.crypto.seal(name, &p);
                let _ = self.with(|c| {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(sealed)
                        .arg("KEEPTTL")
                        .query::<()>(c)
                });
                Some(p)
            }
            Some(Err(e)) => {
                tracing::warn!(record = name, "store: {e}; treated as absent");
                None
            }
        })
    }

    /// `GETDEL`: read and remove in one atomic step (a replayed callback finds nothing).
    pub fn take(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(name);
        let sealed: Option<Vec<u8>> = self.with(|c| redis::cmd("GETDEL").arg(&key).query(c))?;
        Ok(sealed.and_then(|s| match self.crypto.open(name, &s) {
            Ok(Opened::Current(p) | Opened::Previous(p)) => Some(p),
            Err(_) => None,
        }))
    }

    /// `INCR` (with the TTL set by the first increment): a plain counter, not sealed.
    pub fn incr(&self, name: &str, ttl_secs: Option<u64>) -> Result<u64, StoreError> {
        let key = self.key(name);
        let ttl = ttl_secs.map_or(0, |t| t.max(1));
        self.with(|c| redis::Script::new(INCR).key(&key).arg(ttl).invoke::<u64>(c))
    }

    /// A counter written by [`RedisBackend::incr`] (0 when absent).
    pub fn count(&self, name: &str) -> Result<u64, StoreError> {
        let key = self.key(name);
        self.with(|c| redis::cmd("GET").arg(&key).query::<Option<u64>>(c))
            .map(|n| n.unwrap_or(0))
    }

    /// `GET` and `SET` in one script: the previous record, opened.
    pub fn replace(
        &self,
        name: &str,
        plain: &[u8],
        ttl_secs: Option<u64>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let sealed = self.crypto.seal(name, plain);
        let key = self.key(name);
        let ttl = ttl_secs.map_or(0, |t| t.max(1));
        let old: Option<Vec<u8>> = self.with(|c| {
            redis::Script::new(REPLACE)
                .key(&key)
                .arg(sealed)
                .arg(ttl)
                .invoke(c)
        })?;
        Ok(old.and_then(|s| match self.crypto.open(name, &s) {
            Ok(Opened::Current(p) | Opened::Previous(p)) => Some(p),
            Err(_) => None,
        }))
    }

    pub fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let key = self.key(name);
        self.with(|c| redis::cmd("DEL").arg(&key).query::<u64>(c))
            .map(|n| n > 0)
    }

    /// The `SCAN MATCH` pattern of the names starting with `prefix`.
    fn pattern(&self, prefix: &str) -> String {
        format!("{}{{{}*", glob_escape(&self.prefix), glob_escape(prefix))
    }

    /// A cluster's masters, in address order (each holds its own keys); `None` for standalone Redis.
    fn masters(&self) -> Result<Option<Vec<redis::Client>>, StoreError> {
        let Target::Cluster { seed, .. } = &self.target else {
            return Ok(None);
        };
        let nodes: String = self.with(|c| redis::cmd("CLUSTER").arg("NODES").query(c))?;
        let mut addrs: Vec<(String, u16)> = nodes
            .lines()
            .filter(|l| l.contains("master"))
            .filter_map(|line| {
                let addr = line.split(' ').nth(1)?.split('@').next()?;
                let (host, port) = addr.rsplit_once(':')?;
                Some((host.to_string(), port.parse::<u16>().ok()?))
            })
            .collect();
        addrs.sort();
        let mut out = Vec::new();
        for (host, port) in addrs {
            let mut info = seed.get_connection_info().clone();
            info.addr = match info.addr {
                redis::ConnectionAddr::TcpTls {
                    insecure,
                    tls_params,
                    ..
                } => redis::ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure,
                    tls_params,
                },
                _ => redis::ConnectionAddr::Tcp(host, port),
            };
            out.push(redis::Client::open(info).map_err(err)?);
        }
        Ok(Some(out))
    }

    /// A connection to one master of a cluster (not pooled).
    fn node(&self, client: &redis::Client) -> Result<Connection, StoreError> {
        Self::single(client, self.timeout).map_err(|e| {
            self.errors.fetch_add(1, Ordering::Relaxed);
            err(e)
        })
    }

    /// Names starting with `prefix` (`SCAN` on every node; bounded to 100,000 names).
    pub fn names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let pattern = self.pattern(prefix);
        let scan = |c: &mut dyn ConnectionLike| -> redis::RedisResult<Vec<String>> {
            let iter: redis::Iter<String> = redis::cmd("SCAN")
                .cursor_arg(0)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .clone()
                .iter(c)?;
            Ok(iter.take(100_000).collect())
        };
        let keys = match self.masters()? {
            None => self.with(scan)?,
            Some(nodes) => {
                let mut keys = Vec::new();
                for node in &nodes {
                    keys.extend(scan(&mut self.node(node)?).map_err(err)?);
                }
                keys
            }
        };
        Ok(keys.iter().filter_map(|k| self.name_of(k)).collect())
    }

    /// One page of [`Store::page`](super::Store::page): `SCAN` calls (at most [`SCANS_PER_PAGE`])
    /// from `at` until `limit` names are kept. A page that ends inside one SCAN batch resumes at
    /// that batch's cursor, after the last name it returned (batches are taken in name order).
    pub(super) fn page(
        &self,
        prefix: &str,
        keep: &dyn Fn(&str) -> bool,
        mut at: super::page::Cursor,
        limit: usize,
    ) -> Result<super::page::Page, StoreError> {
        let pattern = self.pattern(prefix);
        let masters = self.masters()?;
        let count = limit.clamp(10, 1000);
        let scan =
            |c: &mut dyn ConnectionLike, from: u64| -> redis::RedisResult<(u64, Vec<String>)> {
                redis::cmd("SCAN")
                    .arg(from)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(count)
                    .query(c)
            };
        // The server a SCAN cursor belongs to: a cursor made by another (or before a restart)
        // would skip or repeat keys without a word.
        let run_id = |c: &mut dyn ConnectionLike| -> redis::RedisResult<String> {
            let info: String = redis::cmd("INFO").arg("server").query(c)?;
            Ok(info
                .lines()
                .find_map(|l| l.strip_prefix("run_id:"))
                .unwrap_or_default()
                .trim()
                .to_string())
        };
        let same_server = |at: &mut super::page::Cursor, id: String| {
            if at.run.as_ref().is_some_and(|r| *r != id) {
                return Err(StoreError::CursorExpired);
            }
            at.run = Some(id);
            Ok(())
        };
        if masters.is_none() {
            same_server(&mut at, self.with(run_id)?)?;
        }
        let mut page = super::page::Page::default();
        let mut conn: Option<(usize, Connection)> = None;
        for _ in 0..SCANS_PER_PAGE {
            let (next, keys) = match &masters {
                None => self.with(|c| scan(c, at.scan))?,
                Some(nodes) => {
                    let Some(client) = nodes.get(at.node) else {
                        // The cluster has fewer masters than when the paging began.
                        return Ok(page);
                    };
                    if conn.as_ref().is_none_or(|(i, _)| *i != at.node) {
                        let mut c = self.node(client)?;
                        let id = run_id(&mut c).map_err(|e| {
                            self.errors.fetch_add(1, Ordering::Relaxed);
                            err(e)
                        })?;
                        same_server(&mut at, id)?;
                        conn = Some((at.node, c));
                    }
                    let (_, c) = conn.as_mut().expect("connected above");
                    scan(c, at.scan).map_err(|e| {
                        self.errors.fetch_add(1, Ordering::Relaxed);
                        err(e)
                    })?
                }
            };
            let mut batch: Vec<String> = keys
                .iter()
                .filter_map(|k| self.name_of(k))
                .filter(|n| keep(n) && at.after.as_deref().is_none_or(|a| n.as_str() > a))
                .collect();
            batch.sort_unstable();
            batch.dedup();
            let room = limit - page.names.len();
            if batch.len() > room {
                batch.truncate(room);
                at.after = batch.last().cloned();
                page.names.extend(batch);
                page.next = Some(at);
                return Ok(page);
            }
            page.names.extend(batch);
            at.after = None;
            at.scan = next;
            if next == 0 {
                at.node += 1;
                at.run = None;
                if at.node >= masters.as_ref().map_or(1, Vec::len) {
                    return Ok(page);
                }
            }
            if page.names.len() == limit {
                break;
            }
        }
        page.next = Some(at);
        Ok(page)
    }

    /// Takes the lock `name` for `lease` if free: `SET NX PX`.
    pub fn try_lock(&self, name: &str, token: &str, lease: Duration) -> Result<bool, StoreError> {
        let key = self.key(name);
        self.with(|c| {
            redis::cmd("SET")
                .arg(&key)
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(lease.as_millis() as u64)
                .query::<Option<String>>(c)
        })
        .map(|r| r.is_some())
    }

    /// Extends the lease while `token` still holds the lock.
    pub fn renew(&self, name: &str, token: &str, lease: Duration) -> Result<bool, StoreError> {
        let key = self.key(name);
        self.with(|c| {
            redis::Script::new(RENEW)
                .key(&key)
                .arg(token)
                .arg(lease.as_millis() as u64)
                .invoke::<i64>(c)
        })
        .map(|n| n == 1)
    }

    pub fn unlock(&self, name: &str, token: &str) -> Result<(), StoreError> {
        let key = self.key(name);
        self.with(|c| {
            redis::Script::new(UNLOCK)
                .key(&key)
                .arg(token)
                .invoke::<i64>(c)
        })
        .map(|_| ())
    }

    /// Writes `name` only while `token` holds `lock` (fencing): a holder whose lease ran out cannot
    /// overwrite what the next holder wrote. Returns whether it wrote.
    pub fn put_fenced(
        &self,
        lock: &str,
        token: &str,
        name: &str,
        plain: &[u8],
    ) -> Result<bool, StoreError> {
        let sealed = self.crypto.seal(name, plain);
        let (lk, key) = (self.key(lock), self.key(name));
        self.with(|c| {
            redis::Script::new(PUT_FENCED)
                .key(&lk)
                .key(&key)
                .arg(token)
                .arg(sealed)
                .invoke::<i64>(c)
        })
        .map(|n| n == 1)
    }

    fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    pub fn publish(&self, message: &str) -> Result<(), StoreError> {
        let ch = self.channel();
        self.with(|c| redis::cmd("PUBLISH").arg(&ch).arg(message).query::<i64>(c))
            .map(|_| ())
    }

    /// Delivers every message of the event channel to `on_message` until `stop` returns true;
    /// reconnects (every second) while Redis is away. Blocking: run it on its own thread.
    pub fn subscribe(&self, on_message: impl Fn(&str), stop: impl Fn() -> bool) {
        let ch = self.channel();
        // In a cluster, PUBLISH reaches every node: one seed node is enough to listen on.
        let client = match &self.target {
            Target::Single(c) => c,
            Target::Cluster { seed, .. } => seed,
        };
        while !stop() {
            let mut conn = match Self::single(client, self.timeout) {
                Ok(c) => c,
                Err(_) => {
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            let mut ps = conn.as_pubsub();
            if ps.subscribe(&ch).is_err()
                || ps
                    .set_read_timeout(Some(Duration::from_millis(250)))
                    .is_err()
            {
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            loop {
                if stop() {
                    return;
                }
                match ps.get_message() {
                    Ok(m) => {
                        if let Ok(text) = m.get_payload::<String>() {
                            on_message(&text);
                        }
                    }
                    Err(e) if e.is_timeout() => {}
                    Err(_) => break,
                }
            }
        }
    }
}
