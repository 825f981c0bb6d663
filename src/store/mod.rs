//! Durable, encrypted storage of records: tokens now; grants, tickets and `state` for end-user
//! authorization. DESIGN.md §6.
//!
//! - `memory`: a map in the process; nothing survives a restart.
//! - `file`: an embedded ACID database (redb: pure Rust, one file, copy-on-write B-trees, each write
//!   is one committed transaction, so a crash never leaves half a record). Every value is sealed with
//!   AES-256-GCM under `store.key` (see `crypto`), names are not secret.
//!
//! Records carry an optional expiry (wall-clock Unix seconds, since they must survive restarts); an
//! expired record reads as absent and is removed.
//!
//! Calls block (the file store syncs to disk on every write): callers on the async path use
//! `tokio::task::spawn_blocking`.

pub mod crypto;
pub mod names;
pub mod page;
pub mod redis;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableTable, TableDefinition};
use thiserror::Error;

use crate::secret::StoreKey;
use crypto::{Crypto, Opened};
pub use names::{Kind, Name};
pub use page::{Cursor, Page};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Io(String),
    /// A paging cursor made by a Redis server that has restarted (or failed over) since: its
    /// SCAN cursor means nothing to the server there now.
    #[error("store: the cursor was made by a Redis server that has restarted since")]
    CursorExpired,
}

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

enum Backend {
    /// Boxed keys and values: two words each instead of three, and no spare capacity.
    Memory(Mutex<HashMap<Box<str>, Box<[u8]>>>),
    File(Box<FileBackend>),
    Redis(Box<redis::RedisBackend>),
}

struct FileBackend {
    db: Database,
    crypto: Crypto,
}

/// The store; see the module docs.
pub struct Store {
    backend: Backend,
}

fn io<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Io(e.to_string())
}

/// `expires_at (8 bytes, big-endian, 0 = never) | data`.
fn frame(data: &[u8], expires_at: Option<u64>) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + data.len());
    v.extend_from_slice(&expires_at.unwrap_or(0).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// A record without expiry as the store keeps it (for writes that bypass [`Store::put`]).
pub fn frame_plain(data: &[u8]) -> Vec<u8> {
    frame(data, None)
}

fn unframe(v: &[u8]) -> Option<(u64, &[u8])> {
    let (head, data) = v.split_at_checked(8)?;
    Some((u64::from_be_bytes(head.try_into().ok()?), data))
}

impl Store {
    pub fn memory() -> Store {
        Store {
            backend: Backend::Memory(Mutex::new(HashMap::new())),
        }
    }

    /// The store `[store]` describes: memory, the file (opened or created), or Redis (connected
    /// on first use). Blocks (the file store).
    pub fn open_config(config: &crate::config::StoreConfig) -> Result<Store, StoreError> {
        use crate::config::StoreConfig;
        match config {
            StoreConfig::Memory => Ok(Store::memory()),
            StoreConfig::File {
                path,
                key,
                previous_key,
            } => Store::open_file(path, key, previous_key.as_ref()),
            StoreConfig::Redis {
                urls,
                cluster,
                prefix,
                key,
                previous_key,
                timeout,
            } => {
                let urls: Vec<&str> = urls.iter().map(|u| u.expose()).collect();
                Store::open_redis(
                    &urls,
                    *cluster,
                    prefix,
                    key,
                    previous_key.as_ref(),
                    *timeout,
                )
            }
        }
    }

    /// Opens (or creates) the file store.
    pub fn open_file(
        path: &Path,
        key: &StoreKey,
        previous: Option<&StoreKey>,
    ) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Io(format!("{}: {e}", dir.display())))?;
        }
        let db = Database::create(path)
            .map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(io)?;
        tx.open_table(RECORDS).map_err(io)?;
        tx.commit().map_err(io)?;
        Ok(Store {
            backend: Backend::File(Box::new(FileBackend {
                db,
                crypto: Crypto::new(key, previous),
            })),
        })
    }

    /// Opens the Redis store (connections are made on first use: Redis may come up later).
    pub fn open_redis(
        urls: &[&str],
        cluster: bool,
        prefix: &str,
        key: &StoreKey,
        previous: Option<&StoreKey>,
        timeout: std::time::Duration,
    ) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Redis(Box::new(redis::RedisBackend::open(
                urls,
                cluster,
                prefix,
                Crypto::new(key, previous),
                timeout,
            )?)),
        })
    }

    pub fn is_durable(&self) -> bool {
        matches!(self.backend, Backend::File(_) | Backend::Redis(_))
    }

    /// Shared by several processes (Redis): refreshes take the fleet-wide lock.
    pub fn shared(&self) -> Option<&redis::RedisBackend> {
        match &self.backend {
            Backend::Redis(r) => Some(r),
            _ => None,
        }
    }

    /// Whether the store answers (Redis: `PING`); the others always do.
    pub fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redis(r) => r.ping(),
            _ => Ok(()),
        }
    }

    /// Failed store calls since start.
    pub fn errors(&self) -> u64 {
        match &self.backend {
            Backend::Redis(r) => r.errors.load(std::sync::atomic::Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Writes one record atomically.
    pub fn put(&self, name: &str, data: &[u8], expires_at: Option<u64>) -> Result<(), StoreError> {
        let plain = frame(data, expires_at);
        match &self.backend {
            Backend::Redis(r) => r.put(
                name,
                &plain,
                expires_at.map(|e| e.saturating_sub(now_unix())),
            ),
            Backend::Memory(m) => {
                m.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.into(), plain.into_boxed_slice());
                Ok(())
            }
            Backend::File(f) => {
                let (db, crypto) = (&f.db, &f.crypto);
                let sealed = crypto.seal(name, &plain);
                let tx = db.begin_write().map_err(io)?;
                {
                    let mut t = tx.open_table(RECORDS).map_err(io)?;
                    t.insert(name, sealed.as_slice()).map_err(io)?;
                }
                tx.commit().map_err(io)
            }
        }
    }

    /// Reads a record; expired or unreadable records read as absent.
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let raw = match &self.backend {
            Backend::Redis(r) => r.get(name)?,
            Backend::Memory(m) => m
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .map(|v| v.to_vec()),
            Backend::File(f) => {
                let (db, crypto) = (&f.db, &f.crypto);
                let tx = db.begin_read().map_err(io)?;
                let t = tx.open_table(RECORDS).map_err(io)?;
                let sealed = t.get(name).map_err(io)?.map(|v| v.value().to_vec());
                match sealed.map(|s| crypto.open(name, &s)) {
                    None => None,
                    Some(Ok(Opened::Current(p))) => Some(p),
                    Some(Ok(Opened::Previous(p))) => {
                        // Key rotation: seal it again under the current key.
                        let sealed = crypto.seal(name, &p);
                        let w = db.begin_write().map_err(io)?;
                        {
                            let mut t = w.open_table(RECORDS).map_err(io)?;
                            t.insert(name, sealed.as_slice()).map_err(io)?;
                        }
                        w.commit().map_err(io)?;
                        Some(p)
                    }
                    Some(Err(e)) => {
                        tracing::warn!(record = name, "store: {e}; treated as absent");
                        None
                    }
                }
            }
        };
        Ok(match raw.as_deref().and_then(unframe) {
            Some((exp, _)) if exp != 0 && exp <= now_unix() => {
                self.remove(name)?;
                None
            }
            Some((_, data)) => Some(data.to_vec()),
            None => None,
        })
    }

    /// Removes a record; returns whether it existed.
    pub fn remove(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.take_raw(name)?.is_some())
    }

    /// Reads and removes a record in one step (single use: `state`, tickets).
    pub fn take(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let raw = self.take_raw(name)?;
        let plain = match (&self.backend, raw) {
            (_, None) => return Ok(None),
            (Backend::Memory(_) | Backend::Redis(_), Some(p)) => p,
            (Backend::File(f), Some(s)) => match f.crypto.open(name, &s) {
                Ok(Opened::Current(p) | Opened::Previous(p)) => p,
                Err(_) => return Ok(None),
            },
        };
        Ok(match unframe(&plain) {
            Some((exp, _)) if exp != 0 && exp <= now_unix() => None,
            Some((_, data)) => Some(data.to_vec()),
            None => None,
        })
    }

    fn take_raw(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.backend {
            // Opened already: GETDEL, then the seal is checked.
            Backend::Redis(r) => r.take(name),
            Backend::Memory(m) => Ok(m
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name)
                .map(Vec::from)),
            Backend::File(f) => {
                let db = &f.db;
                let tx = db.begin_write().map_err(io)?;
                let old = {
                    let mut t = tx.open_table(RECORDS).map_err(io)?;
                    let v = t.remove(name).map_err(io)?.map(|v| v.value().to_vec());
                    v
                };
                tx.commit().map_err(io)?;
                Ok(old)
            }
        }
    }

    /// Adds one to the counter `name` in one atomic step and returns its new value; a new (or
    /// expired) counter starts at 1 and expires at `expires_at`, an existing one keeps its expiry.
    /// Replicas sharing a Redis store count together (`INCR`). Counters are not secret.
    pub fn incr(&self, name: &str, expires_at: Option<u64>) -> Result<u64, StoreError> {
        let bump = |old: Option<&[u8]>| -> (u64, Vec<u8>) {
            let now = now_unix();
            let (n, exp) = match old.and_then(unframe) {
                Some((exp, _)) if exp != 0 && exp <= now => (0, expires_at),
                Some((exp, data)) => (
                    std::str::from_utf8(data)
                        .ok()
                        .and_then(|t| t.parse::<u64>().ok())
                        .unwrap_or(0),
                    (exp != 0).then_some(exp),
                ),
                None => (0, expires_at),
            };
            let n = n.saturating_add(1);
            (n, frame(n.to_string().as_bytes(), exp))
        };
        match &self.backend {
            Backend::Redis(r) => r.incr(name, expires_at.map(|e| e.saturating_sub(now_unix()))),
            Backend::Memory(m) => {
                let mut map = m.lock().unwrap_or_else(|p| p.into_inner());
                let (n, plain) = bump(map.get(name).map(|v| &v[..]));
                map.insert(name.into(), plain.into_boxed_slice());
                Ok(n)
            }
            Backend::File(f) => {
                let (db, crypto) = (&f.db, &f.crypto);
                let tx = db.begin_write().map_err(io)?;
                let n = {
                    let mut t = tx.open_table(RECORDS).map_err(io)?;
                    let old = t
                        .get(name)
                        .map_err(io)?
                        .map(|v| v.value().to_vec())
                        .and_then(|s| match crypto.open(name, &s) {
                            Ok(Opened::Current(p) | Opened::Previous(p)) => Some(p),
                            Err(_) => None,
                        });
                    let (n, plain) = bump(old.as_deref());
                    t.insert(name, crypto.seal(name, &plain).as_slice())
                        .map_err(io)?;
                    n
                };
                tx.commit().map_err(io)?;
                Ok(n)
            }
        }
    }

    /// The value of the counter `name` (0 when absent or expired).
    pub fn count(&self, name: &str) -> Result<u64, StoreError> {
        if let Some(r) = self.shared() {
            return r.count(name);
        }
        Ok(self
            .get(name)?
            .and_then(|d| std::str::from_utf8(&d).ok()?.parse().ok())
            .unwrap_or(0))
    }

    /// Writes one record and returns the one it replaced (unless that had expired), in one atomic
    /// step: of many concurrent writers, each sees a different previous value.
    pub fn replace(
        &self,
        name: &str,
        data: &[u8],
        expires_at: Option<u64>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let plain = frame(data, expires_at);
        let old = match &self.backend {
            Backend::Redis(r) => r.replace(
                name,
                &plain,
                expires_at.map(|e| e.saturating_sub(now_unix())),
            )?,
            Backend::Memory(m) => m
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.into(), plain.into_boxed_slice())
                .map(Vec::from),
            Backend::File(f) => {
                let (db, crypto) = (&f.db, &f.crypto);
                let sealed = crypto.seal(name, &plain);
                let tx = db.begin_write().map_err(io)?;
                let old = {
                    let mut t = tx.open_table(RECORDS).map_err(io)?;
                    let v = t
                        .insert(name, sealed.as_slice())
                        .map_err(io)?
                        .map(|v| v.value().to_vec());
                    v
                };
                tx.commit().map_err(io)?;
                old.and_then(|s| match crypto.open(name, &s) {
                    Ok(Opened::Current(p) | Opened::Previous(p)) => Some(p),
                    Err(_) => None,
                })
            }
        };
        Ok(match old.as_deref().and_then(unframe) {
            Some((exp, _)) if exp != 0 && exp <= now_unix() => None,
            Some((_, d)) => Some(d.to_vec()),
            None => None,
        })
    }

    /// Removes expired records whose names start with `prefix` (reading an expired record removes
    /// it); returns how many were looked at.
    pub fn sweep(&self, prefix: &str) -> Result<usize, StoreError> {
        if self.shared().is_some() {
            // Redis expires records itself.
            return Ok(0);
        }
        let names = self.names(prefix)?;
        for n in &names {
            self.get(n)?;
        }
        Ok(names.len())
    }

    /// Names of the records starting with `prefix`.
    pub fn names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        match &self.backend {
            Backend::Redis(r) => r.names(prefix),
            Backend::Memory(m) => Ok(m
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .filter(|k| k.starts_with(prefix))
                .map(|k| k.to_string())
                .collect()),
            Backend::File(f) => {
                let db = &f.db;
                let tx = db.begin_read().map_err(io)?;
                let t = tx.open_table(RECORDS).map_err(io)?;
                let mut out = Vec::new();
                for item in t.range(prefix..).map_err(io)? {
                    let (k, _) = item.map_err(io)?;
                    let k = k.value();
                    if !k.starts_with(prefix) {
                        break;
                    }
                    out.push(k.to_string());
                }
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests;
