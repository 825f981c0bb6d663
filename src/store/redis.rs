//! The `redis` store: records shared by replicas, sealed like the file store's, with expiry kept by
//! Redis itself (relative TTLs, so the replicas' clocks do not matter). Also the fleet-wide refresh
//! lock (a lease with a fencing token) and invalidation messages (pub/sub).
//!
//! Every call is bounded by `store.timeout` (connect, read, write). Connections are pooled; one that
//! failed is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redis::{Commands, Connection};

use super::crypto::{Crypto, Opened};
use super::StoreError;

const MAX_IDLE: usize = 8;

pub struct RedisBackend {
    client: redis::Client,
    prefix: String,
    pub(super) crypto: Crypto,
    timeout: Duration,
    pool: Mutex<Vec<Connection>>,
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
const PUT_FENCED: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[2], ARGV[2]) return 1 else return 0 end";

impl RedisBackend {
    pub fn open(
        url: &str,
        prefix: &str,
        crypto: Crypto,
        timeout: Duration,
    ) -> Result<RedisBackend, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|_| StoreError::Io("redis: invalid store.url".into()))?;
        Ok(RedisBackend {
            client,
            prefix: prefix.to_string(),
            crypto,
            timeout,
            pool: Mutex::new(Vec::new()),
            errors: AtomicU64::new(0),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn connect(&self) -> redis::RedisResult<Connection> {
        let c = self.client.get_connection_with_timeout(self.timeout)?;
        c.set_read_timeout(Some(self.timeout))?;
        c.set_write_timeout(Some(self.timeout))?;
        Ok(c)
    }

    /// Runs `f` on a pooled connection; a failed call drops its connection and counts an error.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let mut c = match pooled {
            Some(c) => c,
            None => self.connect().map_err(|e| {
                self.errors.fetch_add(1, Ordering::Relaxed);
                err(e)
            })?,
        };
        match f(&mut c) {
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
            Some(t) => c.set_ex::<_, _, ()>(&key, sealed, t.max(1)),
            None => c.set::<_, _, ()>(&key, sealed),
        })
    }

    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(name);
        let sealed: Option<Vec<u8>> = self.with(|c| c.get(&key))?;
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

    pub fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let key = self.key(name);
        self.with(|c| c.del::<_, u64>(&key)).map(|n| n > 0)
    }

    /// Names starting with `prefix` (`SCAN`, bounded to 100,000 names).
    pub fn names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{}*", glob_escape(&self.key(prefix)));
        let strip = self.prefix.len();
        self.with(|c| {
            let iter: redis::Iter<String> = redis::cmd("SCAN")
                .cursor_arg(0)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .clone()
                .iter(c)?;
            Ok(iter
                .take(100_000)
                .filter_map(|k| k.get(strip..).map(str::to_owned))
                .collect())
        })
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
        self.with(|c| c.publish::<_, _, i64>(&ch, message))
            .map(|_| ())
    }

    /// Delivers every message of the event channel to `on_message` until `stop` returns true;
    /// reconnects (every second) while Redis is away. Blocking: run it on its own thread.
    pub fn subscribe(&self, on_message: impl Fn(&str), stop: impl Fn() -> bool) {
        let ch = self.channel();
        while !stop() {
            let mut conn = match self.connect() {
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
