//! End users' grants on the admin listener: imported one at a time or in bulk, and listed page by
//! page (metadata only: never a token).
//!
//! - `PUT /admin/grants/{profile}?user=&tenant=`: one grant, a JSON object.
//! - `POST /admin/grants:import`: JSON lines, one grant a line with its `profile`, `user` and
//!   `tenant`; answers what each line did. Both go through [`Admin::save_imported`], the one place
//!   a grant is imported.
//! - `GET /admin/grants?profile=&user=&cursor=&limit=`: a page of grants and the cursor of the next.
//!
//! A grant is checked whole (where it goes, then every member) before its one store write, so a
//! refused grant leaves nothing behind. Errors name the line and the member, never a value.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use super::{json_response, not_found_profile, Admin, Answer};
use crate::error::{ErrorCode, ProxyError};
use crate::proxy::Snapshot;
use crate::store::{Cursor, Kind, Name};
use crate::token::{Fetched, TokenKey};

/// The largest body of `PUT /admin/grants/{profile}`.
pub const MAX_GRANT_BYTES: usize = 64 * 1024;
/// The largest body of `POST /admin/grants:import`.
pub const MAX_IMPORT_BYTES: usize = 8 * 1024 * 1024;
/// Bulk imports read at once (each holds its body, up to [`MAX_IMPORT_BYTES`]); more wait.
const IMPORTS_AT_ONCE: usize = 2;
/// `GET /admin/grants`: grants per page unless `limit` says otherwise, and the most it may say.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

/// Where a grant goes, checked: the profile keeps end users' OAuth grants, the user and tenant
/// follow the proxy's rules.
struct Target {
    profile: Arc<str>,
    user: String,
    tenant: Option<String>,
    key: TokenKey,
}

/// A grant checked whole, ready for its one store write.
pub(super) struct Import {
    target: Target,
    grant: Fetched,
}

fn invalid(m: impl Into<String>) -> ProxyError {
    ProxyError::new(ErrorCode::GrantInvalid, m)
}

/// Checks where a grant goes. Errors name the member (`user`, `tenant`), never its value.
fn target(
    snap: &Snapshot,
    profile: &str,
    user: Option<&str>,
    tenant: Option<&str>,
) -> Result<Target, ProxyError> {
    let name: Arc<str> = Arc::from(profile);
    let Some(p) = snap.profiles.get(profile) else {
        return Err(not_found_profile());
    };
    let Some(o) = p
        .oauth
        .as_ref()
        .filter(|o| o.per_user && o.source.is_some())
    else {
        return Err(ProxyError::new(
            ErrorCode::NotPerUser,
            "this profile keeps no OAuth grants of end users: nothing to import",
        )
        .with_profile(&name));
    };
    let Some(user) = user else {
        return Err(
            ProxyError::new(ErrorCode::UserRequired, "\"user\" is required").with_profile(&name),
        );
    };
    let user = crate::proxy::headers::user_str(user).map_err(|_| {
        ProxyError::new(ErrorCode::UserInvalid, "\"user\" must be 1-256 bytes").with_profile(&name)
    })?;
    let tenant = match tenant {
        Some(t) if o.tenancy => Some(
            crate::proxy::headers::tenant_for(t.as_bytes(), p.tenant_pattern.as_ref())
                .map_err(|e| e.with_profile(&name))?,
        ),
        Some(_) => {
            return Err(ProxyError::new(
                ErrorCode::TenantInvalid,
                "this profile has no tenancy: leave out \"tenant\"",
            )
            .with_profile(&name))
        }
        None => None,
    };
    let key = o.key(&name, tenant.as_deref(), Some(&user));
    Ok(Target {
        profile: name,
        user,
        tenant,
        key,
    })
}

/// The grant's members (`access_token`, `refresh_token`, `expires_in` | `expires_at`, `scope`,
/// `token_type`, `extra`); errors name the member, never a value.
fn grant(m: &Map<String, Value>) -> Result<Fetched, String> {
    let text = |k: &str| -> Result<Option<String>, String> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(format!("\"{k}\" must be a non-empty string")),
        }
    };
    let known = [
        "access_token",
        "refresh_token",
        "expires_in",
        "expires_at",
        "scope",
        "token_type",
        "extra",
    ];
    if let Some(k) = m.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!(
            "unknown member \"{k}\"; expected one of {}",
            known.join(", ")
        ));
    }
    let access_token = text("access_token")?.ok_or("\"access_token\" is required")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let expires_in = match (m.get("expires_in"), m.get("expires_at")) {
        (Some(_), Some(_)) => return Err("give \"expires_in\" or \"expires_at\", not both".into()),
        (Some(v), None) => match v.as_u64() {
            Some(n) => Some(Duration::from_secs(n)),
            None => return Err("\"expires_in\" must be a whole number of seconds".into()),
        },
        (None, Some(v)) => {
            let at =
                crate::oauth::custom::expires_at(v).map_err(|e| format!("\"expires_at\": {e}"))?;
            // Already expired: zero, so the user's next call refreshes it.
            Some(Duration::from_secs((at - now).max(0.0) as u64))
        }
        (None, None) => None,
    };
    let mut extra = Vec::new();
    match m.get("extra") {
        None | Some(Value::Null) => {}
        Some(Value::Object(e)) => {
            for (k, v) in e {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return Err(format!("\"extra.{k}\" must be a string, number or boolean")),
                };
                extra.push((k.clone(), v));
            }
        }
        Some(_) => return Err("\"extra\" must be an object".into()),
    }
    Ok(Fetched {
        access_token: crate::secret::AccessToken::new(access_token),
        token_type: text("token_type")?.unwrap_or_else(|| "Bearer".into()),
        expires_in,
        refresh_token: text("refresh_token")?.map(crate::secret::RefreshToken::new),
        id_token: None,
        scope: text("scope")?,
        extra,
        refresh_token_refused: false,
        entered: Vec::new(),
    })
}

/// A JSON object, or why not (naming no value).
fn object(bytes: &[u8]) -> Result<Map<String, Value>, ProxyError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(invalid("not a JSON object")),
        Err(_) => Err(invalid("not JSON")),
    }
}

/// One line of a bulk import: where it goes (`profile`, `user`, `tenant`) and the grant's members.
fn line(snap: &Snapshot, bytes: &[u8]) -> Result<Import, ProxyError> {
    let mut m = object(bytes)?;
    let mut place = |k: &str| -> Result<Option<String>, ProxyError> {
        match m.remove(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(format!("\"{k}\" must be a string"))),
        }
    };
    let (profile, user, tenant) = (place("profile")?, place("user")?, place("tenant")?);
    let profile = profile.ok_or_else(|| invalid("\"profile\" is required"))?;
    let target = target(snap, &profile, user.as_deref(), tenant.as_deref())?;
    let grant = grant(&m).map_err(|e| invalid(e).with_profile(&target.profile))?;
    Ok(Import { target, grant })
}

impl Admin {
    /// The one place a checked grant is imported: its one store write, then the token cached for
    /// that user (here and on every replica) gives way to it. Answers what was imported.
    pub(super) async fn save_imported(
        &self,
        snap: &Snapshot,
        imp: Import,
    ) -> Result<Value, ProxyError> {
        let Import { target: t, grant } = imp;
        let name = Name::grant(&t.profile, t.tenant.as_deref(), &t.user);
        let expires_in = grant.expires_in.map(|d| d.as_secs());
        let store = snap.store.clone();
        let saved = tokio::task::spawn_blocking(move || {
            crate::oauth::grants::save_grant(&store, &name, &grant)
        })
        .await;
        if !matches!(saved, Ok(Ok(()))) {
            let mut e = ProxyError::new(
                ErrorCode::TokenStoreUnavailable,
                "the token store is unavailable; try again",
            )
            .with_profile(&t.profile);
            e.retry_after = Some(1);
            return Err(e);
        }
        self.cache.remove(&t.key);
        crate::oauth::grants::publish_invalidation(&snap.store, &t.key).await;
        tracing::info!(profile = %t.profile, "admin: grant imported");
        Ok(
            json!({"profile": &*t.profile, "user": t.user, "tenant": t.tenant, "expires_in": expires_in}),
        )
    }

    /// `PUT /admin/grants/{profile}?user=&tenant=` with `{"access_token", "refresh_token",
    /// "expires_in" | "expires_at", "scope", "token_type", "extra": {…}}`: an end user's existing
    /// grant (from another platform) kept as if the user had signed in, encrypted in the store; an
    /// expired one is refreshed on the user's next call. Nothing of it is echoed.
    pub(super) async fn import_grant(&self, profile: &str, req: Request<Incoming>) -> Answer {
        let snap = self.snap();
        let params = crate::inject::encode::parse_form(req.uri().query().unwrap_or("").as_bytes());
        let get = |k: &str| crate::inject::encode::form_value(&params, k);
        let target = target(
            &snap,
            profile,
            get("user").as_deref(),
            get("tenant").as_deref(),
        )?;
        let within = snap.config.proxy.body_read_timeout;
        let body = crate::serve::read_small_body(req.into_body(), MAX_GRANT_BYTES, within)
            .await
            .map_err(|e| ProxyError::new(e.code(), "the request body could not be read"))?;
        let grant = grant(&object(&body)?)
            .map_err(|m| invalid(format!("the grant: {m}")).with_profile(&target.profile))?;
        let done = self.save_imported(&snap, Import { target, grant }).await?;
        Ok(json_response(StatusCode::CREATED, done))
    }

    /// `POST /admin/grants:import`: one grant a line (JSON lines, blank lines skipped), each
    /// checked whole and written on its own; answers `{"imported", "refused", "lines": [{"line",
    /// "ok", "error"?}]}`.
    pub(super) async fn import_grants(&self, req: Request<Incoming>) -> Answer {
        static READING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(IMPORTS_AT_ONCE);
        let snap = self.snap();
        let body = {
            let _permit = READING
                .acquire()
                .await
                .map_err(|_| ProxyError::new(ErrorCode::Internal, "import closed"))?;
            let within = snap.config.proxy.body_total_timeout;
            crate::serve::read_small_body(req.into_body(), MAX_IMPORT_BYTES, within)
                .await
                .map_err(|e| {
                    ProxyError::new(
                        e.code(),
                        format!(
                            "the request body could not be read (at most {} MiB)",
                            MAX_IMPORT_BYTES >> 20
                        ),
                    )
                })?
        };
        let (mut lines, mut imported, mut refused) = (Vec::new(), 0u64, 0u64);
        // The line on which the store failed: later lines are refused without a try, so a store
        // that is down costs one timeout, not one per line.
        let mut store_failed: Option<usize> = None;
        for (i, text) in body.split(|b| *b == b'\n').enumerate() {
            let n = i + 1;
            if text.trim_ascii().is_empty() {
                continue;
            }
            let done = match (line(&snap, text), store_failed) {
                (Err(e), _) => Err(e),
                (Ok(_), Some(at)) => Err(ProxyError::new(
                    ErrorCode::TokenStoreUnavailable,
                    format!(
                        "not written: the token store failed on line {at}; import this line again"
                    ),
                )),
                (Ok(imp), None) => self.save_imported(&snap, imp).await,
            };
            if matches!(&done, Err(e) if e.code == ErrorCode::TokenStoreUnavailable) {
                store_failed.get_or_insert(n);
            }
            match done {
                Ok(_) => {
                    imported += 1;
                    lines.push(json!({"line": n, "ok": true}));
                }
                Err(e) => {
                    refused += 1;
                    lines.push(json!({"line": n, "ok": false,
                        "error": {"code": e.code.as_str(), "message": e.message}}));
                }
            }
        }
        tracing::info!(imported, refused, "admin: grants imported in bulk");
        Ok(json_response(
            StatusCode::OK,
            json!({"imported": imported, "refused": refused, "lines": lines}),
        ))
    }

    /// `GET /admin/grants?profile=&user=&cursor=&limit=`: a page of grants, metadata only.
    pub(super) async fn grants(&self, query: Option<&str>) -> Answer {
        let params = crate::inject::encode::parse_form(query.unwrap_or("").as_bytes());
        let get = |k: &str| crate::inject::encode::form_value(&params, k);
        let bad = |m: &str| ProxyError::new(ErrorCode::QueryInvalid, m.to_string());
        let limit = match get("limit") {
            None => DEFAULT_PAGE,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|l| (1..=MAX_PAGE).contains(l))
                .ok_or_else(|| bad("\"limit\" must be a whole number from 1 to 1000"))?,
        };
        let cursor = match get("cursor") {
            None => None,
            Some(c) => Some(Cursor::parse(&c).ok_or_else(|| {
                bad("\"cursor\" is not one this server gave (take next_cursor as it is)")
            })?),
        };
        let (profile, user) = (get("profile"), get("user"));
        // A profile narrows the names looked at (and Redis's MATCH); a user is checked on each.
        let prefix = match &profile {
            Some(p) => format!("{}{p}:", Kind::Grant.prefix()),
            None => Kind::Grant.prefix().to_string(),
        };
        let store = self.snap().store.clone();
        let listed = tokio::task::spawn_blocking(move || {
            let keep = |n: &str| {
                crate::store::names::parse_grant(n)
                    .is_some_and(|(_, _, u)| user.as_deref().is_none_or(|want| u == want))
            };
            let page = store.page(&prefix, &keep, cursor.as_ref(), limit)?;
            let grants: Vec<Value> = page
                .names
                .iter()
                .filter_map(|n| Some(metadata(n, store.get(n).ok()??.as_slice())))
                .collect();
            Ok::<_, crate::store::StoreError>((grants, page.next.map(|c| c.encode())))
        })
        .await;
        let (grants, next) =
            match listed {
                Ok(Ok(page)) => page,
                Ok(Err(crate::store::StoreError::CursorExpired)) => return Err(ProxyError::new(
                    ErrorCode::CursorExpired,
                    "the store has restarted since this cursor was given: start again without one",
                )),
                _ => {
                    let mut e = ProxyError::new(
                        ErrorCode::TokenStoreUnavailable,
                        "the token store is unavailable; try again (with the same cursor)",
                    );
                    e.retry_after = Some(1);
                    return Err(e);
                }
            };
        Ok(json_response(
            StatusCode::OK,
            json!({"grants": grants, "next_cursor": next}),
        ))
    }
}

/// What `GET /admin/grants` (and `GET /admin/tokens`) shows of one grant: where it belongs and
/// what it allows, never a token.
pub(super) fn metadata(name: &str, record: &[u8]) -> Value {
    let (profile, tenant, user) = crate::store::names::parse_grant(name).unwrap_or_default();
    let mut v = json!({"profile": profile, "user": user, "tenant": tenant});
    // Per-user basic and api_key records hold entered credentials, not tokens: no expiry to show.
    if let (Some((f, left)), Some(at)) = (
        crate::token::decode_record(record),
        crate::token::record_expires_at(record),
    ) {
        let at = UNIX_EPOCH + Duration::from_secs(at);
        v["scope"] = f.scope.into();
        v["expires_at"] = humantime::format_rfc3339_seconds(at).to_string().into();
        v["expires_in"] = left.as_secs().into();
        v["has_refresh_token"] = f.refresh_token.is_some().into();
    }
    v
}
