//! The profile form: create and edit OAuth 2.0 profiles from the console, one TOML file per profile
//! in `[admin] profiles_dir` (`config::profiles_dir`), applied by a reload.
//!
//! - `GET /admin/profile-form`: whether the form can save here (a config file, `profiles_dir`, a
//!   durable store for secrets), the profiles it may edit and those it may not, and the choices
//!   its selects offer.
//! - `GET /admin/profile-form/{name}`: a file-backed profile's values for the form; a secret is
//!   never shown back, only `{"set": true}`.
//! - `POST /admin/profile-form/validate`: a form (`{"name", …}`) checked as the whole config would
//!   be with it: `{"valid", "errors": [{"field", "message"}], "warnings"}`, `field` being the key
//!   path inside the profile (`token_url`, `scope.read`, `fields[0].key`) or `""` for the rest.
//! - `PUT /admin/profile-form/{name}`: the same check, then the typed secrets into the store
//!   (`secret:{name}.{key}`), the file `profiles_dir/{name}.toml` written atomically with
//!   `${store:{name}.{key}}` in their place, then a reload. A refused reload puts the old file and
//!   secrets back.
//! - `DELETE /admin/profile-form/{name}`: the file removed (when the config is valid without it),
//!   a reload, then the profile's form secrets removed from the store.
//!
//! Only profiles of `profiles_dir` (or new ones) are edited here: a profile of the main file is
//! read-only (`profile_not_editable`). Keys of a file the form does not know are kept as they are.
//! Saves (and deletes) in one process run one at a time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use super::{json_response, not_found_profile, Admin, Answer};
use crate::config::profiles_dir;
use crate::error::{ErrorCode, ProxyError};
use crate::reload::Reloader;
use crate::store::{Name, Store};

/// The profile types the form makes.
pub const TYPES: [&str; 2] = ["oauth2_authorization_code", "oauth2_client_credentials"];
/// `client_auth` choices.
pub const CLIENT_AUTH: [&str; 4] = ["basic", "post", "none", "client_secret_jwt"];
/// Where an authorization field goes.
pub const LOCATIONS: [&str; 4] = ["header", "payload", "query", "path"];
/// Keys whose typed values go to the store, never to the file.
const SECRETS: [&str; 1] = ["client_secret"];
/// Plain string keys of the form.
const TEXT: [&str; 10] = [
    "type",
    "identity_provider",
    "preset",
    "client_id",
    "authorization_url",
    "token_url",
    "refresh_url",
    "tenant_pattern",
    "connector",
    "client_auth",
];
/// Key/value lists (TOML tables of strings).
const PAIRS: [&str; 2] = ["scope", "token_params"];
/// Lists of rows (TOML arrays of tables).
const ROWS: [&str; 2] = ["fields", "user_fields"];
/// Largest form body.
const MAX_BODY: usize = 64 * 1024;
/// The name `POST /admin/profile-form/validate` takes: no profile may have it.
const RESERVED: &str = "validate";

/// The first lines of a file the form writes.
const FILE_HEADER: &str = "# Written by the authsidecar profile form. Secrets are in the encrypted store (${store:NAME});\n# edit here or in the form (keys the form does not show are kept).\n";

/// Saves and deletes of this process, one at a time.
static SAVING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The store name of a profile's form secret.
pub fn secret_name(profile: &str, key: &str) -> String {
    format!("{profile}.{key}")
}

/// What the form needs: the config file, its `profiles_dir`, the reloader.
struct Place {
    reloader: Arc<Reloader>,
    main: PathBuf,
    dir: PathBuf,
}

impl Place {
    /// The names of the main file's profiles (read-only here).
    fn main_profiles(&self) -> Vec<String> {
        std::fs::read_to_string(&self.main)
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok())
            .and_then(|t| t.get("profiles").and_then(|p| p.as_table()).cloned())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn file(&self, name: &str) -> PathBuf {
        profiles_dir::file_of(&self.dir, name)
    }

    /// The profile's file as a table, `None` when it has none.
    fn read(&self, name: &str) -> Result<Option<toml::Table>, ProxyError> {
        let f = self.file(name);
        if !f.exists() {
            return Ok(None);
        }
        profiles_dir::read_file(&f)
            .map(Some)
            .map_err(|e| ProxyError::new(ErrorCode::ProfileInvalid, e.message))
    }

    /// Refuses names the form may not edit: malformed, reserved, or the main file's.
    fn editable(&self, name: &str) -> Result<(), ProxyError> {
        // A file name starting with `.` is skipped when the folder is read.
        if !crate::config::store_refs::valid_name(name) || name.starts_with('.') || name == RESERVED
        {
            return Err(ProxyError::new(
                ErrorCode::ProfileNotEditable,
                format!(
                    "a profile name is letters, digits, -, _ and . (not first), and not \"{RESERVED}\""
                ),
            ));
        }
        if self.main_profiles().iter().any(|n| n == name) {
            return Err(ProxyError::new(
                ErrorCode::ProfileNotEditable,
                format!(
                    "this profile is defined in {}: edit it there (only profiles of profiles_dir are edited here)",
                    self.main.display()
                ),
            ));
        }
        Ok(())
    }

    /// The whole config with `table` (`None`: no such profile) standing in for the profile's file.
    fn check(
        &self,
        name: &str,
        table: Option<toml::Table>,
    ) -> Result<crate::config::Config, Vec<String>> {
        let env = self.reloader.env(&self.main).with_form_profile(name, table);
        self.reloader.load(Some(env))
    }
}

impl Admin {
    fn place(&self) -> Result<Place, ProxyError> {
        let unavailable =
            |m: &str| ProxyError::new(ErrorCode::ProfileFormUnavailable, m.to_string());
        let Some(reloader) = self.reloader.clone() else {
            return Err(unavailable(
                "this server has no config file to write profiles beside",
            ));
        };
        let Some(main) = reloader.path().map(Path::to_path_buf) else {
            return Err(unavailable(
                "this server has no config file to write profiles beside",
            ));
        };
        let Some(dir) = self.snap().config.admin.profiles_dir.clone() else {
            return Err(unavailable(
                "set [admin] profiles_dir in the config (and reload) to create and edit profiles here",
            ));
        };
        Ok(Place {
            reloader,
            main,
            dir,
        })
    }

    /// `GET /admin/profile-form`.
    pub(super) fn profile_forms(&self) -> Answer {
        let snap = self.snap();
        let (available, reason, dir, editable, read_only) = match self.place() {
            Ok(p) => {
                let files: Vec<String> = profiles_dir::read_dir(&p.dir)
                    .map(|f| f.into_iter().map(|(n, _, _)| n).collect())
                    .unwrap_or_default();
                (
                    true,
                    None,
                    Some(p.dir.display().to_string()),
                    files,
                    p.main_profiles(),
                )
            }
            Err(e) => (
                false,
                Some(e.message),
                None,
                Vec::new(),
                snap.config.profiles.keys().map(|k| k.to_string()).collect(),
            ),
        };
        Ok(json_response(
            StatusCode::OK,
            json!({
                "available": available,
                "reason": reason,
                "profiles_dir": dir,
                "editable": editable,
                "read_only": read_only,
                "durable_store": snap.store.is_durable(),
                "types": TYPES,
                "client_auth": CLIENT_AUTH,
                "locations": LOCATIONS,
                "connectors": snap.config.connectors.keys().collect::<Vec<_>>(),
                // The shipped catalog (a `presets_file`'s names are taken too, typed in).
                "presets": crate::config::presets::Catalog::builtin()
                    .map(|c| c.iter().map(|p| json!({"name": p.name, "provider": p.provider})).collect::<Vec<_>>())
                    .unwrap_or_default(),
            }),
        ))
    }

    /// `GET /admin/profile-form/{name}`.
    pub(super) async fn profile_form(&self, name: &str) -> Answer {
        let place = self.place()?;
        place.editable(name)?;
        let name_owned = name.to_string();
        let table = tokio::task::spawn_blocking(move || place.read(&name_owned))
            .await
            .map_err(|_| ProxyError::new(ErrorCode::Internal, "form task failed"))??;
        let Some(table) = table else {
            return Err(not_found_profile());
        };
        let mut form = to_form(&table);
        form.insert("name".into(), name.into());
        Ok(json_response(StatusCode::OK, Value::Object(form)))
    }

    /// `POST /admin/profile-form/validate`.
    pub(super) async fn validate_profile_form(&self, req: Request<Incoming>) -> Answer {
        let place = self.place()?;
        let mut form = self.form_body(req).await?;
        let name = match form.remove("name") {
            Some(Value::String(n)) => n,
            _ => String::new(),
        };
        let errors = tokio::task::spawn_blocking(move || {
            if let Err(e) = place.editable(&name) {
                return (vec![field_error("name", &e.message)], Vec::new());
            }
            let existing = match place.read(&name) {
                Ok(t) => t,
                Err(e) => return (vec![field_error("", &e.message)], Vec::new()),
            };
            let built = match Built::from_form(&name, &form, existing.as_ref()) {
                Ok(b) => b,
                Err((field, m)) => return (vec![field_error(&field, &m)], Vec::new()),
            };
            // The form's own file goes without saying on its fields.
            let own = format!(" (in {})", place.file(&name).display());
            match place.check(&name, Some(built.check)) {
                Ok(c) => (Vec::new(), c.warnings.clone()),
                Err(errors) => (
                    errors
                        .iter()
                        .map(|e| by_field(&name, &e.replace(&own, "")))
                        .collect(),
                    Vec::new(),
                ),
            }
        })
        .await
        .map_err(|_| ProxyError::new(ErrorCode::Internal, "form task failed"))?;
        let (errors, warnings) = errors;
        Ok(json_response(
            StatusCode::OK,
            json!({"valid": errors.is_empty(), "errors": errors, "warnings": warnings}),
        ))
    }

    /// `PUT /admin/profile-form/{name}`.
    pub(super) async fn save_profile_form(&self, name: &str, req: Request<Incoming>) -> Answer {
        let place = self.place()?;
        place.editable(name)?;
        let mut form = self.form_body(req).await?;
        // The name is the path's; a body may repeat it.
        match form.remove("name") {
            None => {}
            Some(Value::String(n)) if n == name => {}
            Some(_) => {
                return Err(ProxyError::new(
                    ErrorCode::BadRequest,
                    "\"name\" differs from the profile named in the path",
                ))
            }
        }
        let store = self.snap().store.clone();
        let name = name.to_string();
        let r = tokio::task::spawn_blocking(move || save(&place, &store, &name, &form))
            .await
            .map_err(|_| ProxyError::new(ErrorCode::Internal, "form task failed"))??;
        Ok(r)
    }

    /// `DELETE /admin/profile-form/{name}`.
    pub(super) async fn delete_profile_form(&self, name: &str) -> Answer {
        let place = self.place()?;
        place.editable(name)?;
        let store = self.snap().store.clone();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || delete(&place, &store, &name))
            .await
            .map_err(|_| ProxyError::new(ErrorCode::Internal, "form task failed"))?
    }

    /// The form's JSON object.
    async fn form_body(&self, req: Request<Incoming>) -> Result<Map<String, Value>, ProxyError> {
        let within = self.snap().config.proxy.body_read_timeout;
        let body = crate::serve::read_small_body(req.into_body(), MAX_BODY, within)
            .await
            .map_err(|e| ProxyError::new(e.code(), "the request body could not be read"))?;
        match serde_json::from_slice(&body) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(ProxyError::new(
                ErrorCode::BadRequest,
                "expected the form as a JSON object",
            )),
        }
    }
}

fn field_error(field: &str, message: &str) -> Value {
    json!({"field": field, "message": message})
}

/// A config error (`path: message`) as the form shows it: the key path inside the profile, or `""`.
fn by_field(name: &str, error: &str) -> Value {
    let head = format!("profiles.{name}");
    let (path, message) = error.split_once(": ").unwrap_or(("", error));
    let field = path
        .strip_prefix(&head)
        .filter(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
        .map(|rest| rest.trim_start_matches('.'));
    match field {
        Some(f) => field_error(f, message),
        None => field_error("", error),
    }
}

/// A form made into the profile's file and the table checked in its place.
struct Built {
    /// What the file holds: secrets as `${store:…}`.
    file: toml::Table,
    /// What is checked: typed secrets as written (never stored anywhere else).
    check: toml::Table,
    /// Typed secrets: (store name, value).
    secrets: Vec<(String, String)>,
    /// Form secrets the profile no longer has.
    dropped: Vec<String>,
}

impl Built {
    /// Errors: (field, message).
    fn from_form(
        name: &str,
        form: &Map<String, Value>,
        existing: Option<&toml::Table>,
    ) -> Result<Built, (String, String)> {
        let bad = |f: &str, m: &str| Err((f.to_string(), m.to_string()));
        for k in form.keys() {
            let known = TEXT.contains(&k.as_str())
                || PAIRS.contains(&k.as_str())
                || ROWS.contains(&k.as_str())
                || SECRETS.contains(&k.as_str())
                || k == "tenancy";
            if !known {
                return bad(k, "not a field of the profile form");
            }
        }
        // Keys of the file the form does not show stay as they are.
        let mut file: toml::Table = existing
            .map(|t| {
                t.iter()
                    .filter(|(k, _)| !is_managed(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for k in TEXT {
            match form.get(k) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.trim().is_empty() => {}
                Some(Value::String(s)) => {
                    file.insert(k.into(), toml::Value::String(s.trim().to_string()));
                }
                Some(_) => return bad(k, "expected text"),
            }
        }
        match form.get("tenancy") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => {
                file.insert("tenancy".into(), toml::Value::Boolean(true));
            }
            Some(_) => return bad("tenancy", "expected true or false"),
        }
        for k in PAIRS {
            let mut t = toml::Table::new();
            for (i, row) in rows(form, k)?.iter().enumerate() {
                let key = text_of(row, "key");
                let value = text_of(row, "value");
                if key.is_empty() && value.is_empty() {
                    continue;
                }
                if key.is_empty() {
                    return bad(&format!("{k}[{i}]"), "a value without a key");
                }
                if t.insert(key.clone(), toml::Value::String(value)).is_some() {
                    return bad(&format!("{k}.{key}"), "given twice");
                }
            }
            if !t.is_empty() {
                file.insert(k.into(), toml::Value::Table(t));
            }
        }
        for k in ROWS {
            let mut list = Vec::new();
            for (i, row) in rows(form, k)?.iter().enumerate() {
                // A row left blank (check boxes aside) is no row.
                if !row
                    .values()
                    .any(|v| v.as_str().is_some_and(|s| !s.trim().is_empty()))
                {
                    continue;
                }
                let mut t = toml::Table::new();
                for (rk, rv) in row.iter() {
                    let v = match rv {
                        Value::Null => continue,
                        Value::String(s) if s.is_empty() => continue,
                        Value::String(s) => toml::Value::String(s.clone()),
                        Value::Bool(b) => toml::Value::Boolean(*b),
                        Value::Number(n) if n.is_i64() => {
                            toml::Value::Integer(n.as_i64().unwrap_or_default())
                        }
                        _ => {
                            return bad(
                                &format!("{k}[{i}].{rk}"),
                                "expected text, a number or true/false",
                            )
                        }
                    };
                    t.insert(rk.clone(), v);
                }
                if !t.is_empty() {
                    list.push(toml::Value::Table(t));
                }
            }
            if !list.is_empty() {
                file.insert(k.into(), toml::Value::Array(list));
            }
        }
        let mut check = file.clone();
        let mut secrets = Vec::new();
        let mut dropped = Vec::new();
        for k in SECRETS {
            let store_name = secret_name(name, k);
            let reference = toml::Value::String(format!("${{store:{store_name}}}"));
            match form.get(k) {
                None | Some(Value::Null) => dropped.push(store_name),
                Some(Value::Object(o)) => match (o.get("value"), o.get("set")) {
                    (Some(Value::String(v)), _) if !v.is_empty() => {
                        file.insert(k.into(), reference);
                        // `${` in a secret is the secret's own text, not a reference.
                        check.insert(k.into(), toml::Value::String(v.replace("${", "$${")));
                        secrets.push((store_name, v.clone()));
                    }
                    (_, Some(Value::Bool(true))) => {
                        // Kept: what the file says now (a reference, or a value written by hand).
                        match existing.and_then(|t| t.get(k)) {
                            Some(v) => {
                                file.insert(k.into(), v.clone());
                                check.insert(k.into(), v.clone());
                            }
                            None => return bad(k, "no secret is set yet: type one"),
                        }
                    }
                    _ => dropped.push(store_name),
                },
                Some(_) => return bad(k, "expected {\"value\": \"…\"} or {\"set\": true}"),
            }
        }
        Ok(Built {
            file,
            check,
            secrets,
            dropped,
        })
    }
}

fn is_managed(k: &str) -> bool {
    TEXT.contains(&k)
        || PAIRS.contains(&k)
        || ROWS.contains(&k)
        || SECRETS.contains(&k)
        || k == "tenancy"
}

fn rows<'a>(
    form: &'a Map<String, Value>,
    k: &str,
) -> Result<Vec<&'a Map<String, Value>>, (String, String)> {
    match form.get(k) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.as_object()
                    .ok_or_else(|| (format!("{k}[{i}]"), "expected an object".to_string()))
            })
            .collect(),
        Some(_) => Err((k.to_string(), "expected a list".to_string())),
    }
}

fn text_of(row: &Map<String, Value>, k: &str) -> String {
    row.get(k)
        .and_then(Value::as_str)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A profile file's table as the form shows it: secrets only as `{"set": true}`; keys the form
/// does not show are named in `other_keys`.
fn to_form(table: &toml::Table) -> Map<String, Value> {
    let mut form = Map::new();
    let mut other = Vec::new();
    for (k, v) in table {
        let k = k.as_str();
        if SECRETS.contains(&k) {
            form.insert(k.into(), json!({"set": true}));
        } else if PAIRS.contains(&k) {
            let list: Vec<Value> = v
                .as_table()
                .map(|t| {
                    t.iter()
                        .map(|(key, value)| json!({"key": key, "value": value.as_str().unwrap_or_default()}))
                        .collect()
                })
                .unwrap_or_default();
            form.insert(k.into(), Value::Array(list));
        } else if TEXT.contains(&k) || ROWS.contains(&k) || k == "tenancy" {
            form.insert(k.into(), serde_json::to_value(v).unwrap_or(Value::Null));
        } else {
            other.push(Value::String(k.to_string()));
        }
    }
    form.insert("other_keys".into(), Value::Array(other));
    form
}

/// Secrets' values before a save (store name, value or none), to put back if the save is undone.
type Previous = Vec<(String, Option<Vec<u8>>)>;

/// A secret's value before a save, to put back if the save is undone.
fn previous_secrets(store: &Store, names: &[String]) -> Result<Previous, ProxyError> {
    names
        .iter()
        .map(|n| {
            store
                .get(&Name::secret(n))
                .map(|v| (n.clone(), v))
                .map_err(|_| store_unavailable())
        })
        .collect()
}

fn restore_secrets(store: &Store, previous: &[(String, Option<Vec<u8>>)]) {
    for (n, v) in previous {
        let name = Name::secret(n);
        let _ = match v {
            Some(v) => store.put(&name, v, None),
            None => store.remove(&name).map(|_| ()),
        };
    }
}

fn store_unavailable() -> ProxyError {
    let mut e = ProxyError::new(
        ErrorCode::TokenStoreUnavailable,
        "the store is unavailable: nothing was saved; try again",
    );
    e.retry_after = Some(1);
    e
}

/// The file as it was, to put back if the save is undone (`None`: there was none).
fn restore_file(path: &Path, old: Option<&str>) {
    let _ = match old {
        Some(text) => profiles_dir::write_atomic(path, text),
        None => std::fs::remove_file(path),
    };
}

fn save(place: &Place, store: &Store, name: &str, form: &Map<String, Value>) -> Answer {
    let _one_at_a_time = SAVING.lock().unwrap_or_else(|p| p.into_inner());
    let path = place.file(name);
    let existing = place.read(name)?;
    let built = Built::from_form(name, form, existing.as_ref()).map_err(|(field, m)| {
        ProxyError::new(ErrorCode::ProfileInvalid, "the form has errors")
            .with_errors(vec![format!("profiles.{name}.{field}: {m}")])
    })?;
    if !built.secrets.is_empty() && !store.is_durable() {
        return Err(ProxyError::new(
            ErrorCode::SecretStoreNotDurable,
            "secrets typed into the form are kept in the store, and this sidecar's store is memory (lost on restart): set [store] kind = \"file\" or \"redis\", or write the secret into the file as ${VAR}",
        ));
    }
    if let Err(errors) = place.check(name, Some(built.check)) {
        return Err(ProxyError::new(
            ErrorCode::ProfileInvalid,
            "the config with this profile is invalid; nothing was saved",
        )
        .with_errors(errors));
    }
    let text = toml::to_string(&built.file)
        .map(|t| format!("{FILE_HEADER}{t}"))
        .map_err(|_| {
            ProxyError::new(
                ErrorCode::Internal,
                "the profile could not be written as TOML",
            )
        })?;
    let names: Vec<String> = built.secrets.iter().map(|(n, _)| n.clone()).collect();
    let previous = previous_secrets(store, &names)?;
    for (n, v) in &built.secrets {
        if store.put(&Name::secret(n), v.as_bytes(), None).is_err() {
            restore_secrets(store, &previous);
            return Err(store_unavailable());
        }
    }
    let old = std::fs::read_to_string(&path).ok();
    if let Err(e) = profiles_dir::write_atomic(&path, &text) {
        restore_secrets(store, &previous);
        return Err(ProxyError::new(
            ErrorCode::Internal,
            format!("cannot write {}: {e}; nothing was saved", path.display()),
        ));
    }
    match place.reloader.reload_from_file() {
        Ok(summary) => {
            for n in &built.dropped {
                let _ = store.remove(&Name::secret(n));
            }
            tracing::info!(profile = %name, file = %path.display(), "admin: profile saved from the form");
            Ok(json_response(
                if old.is_some() {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                },
                json!({
                    "profile": name,
                    "saved": true,
                    "file": path.display().to_string(),
                    "reloaded": true,
                    "summary": summary,
                }),
            ))
        }
        Err(errors) => {
            restore_file(&path, old.as_deref());
            restore_secrets(store, &previous);
            tracing::warn!(profile = %name, "admin: profile form save undone: the reload was refused");
            Err(ProxyError::new(
                ErrorCode::ConfigInvalid,
                "the reload was refused: the file and the secrets were put back; the running config stays in force",
            )
            .with_errors(errors))
        }
    }
}

fn delete(place: &Place, store: &Store, name: &str) -> Answer {
    let _one_at_a_time = SAVING.lock().unwrap_or_else(|p| p.into_inner());
    let path = place.file(name);
    let Ok(old) = std::fs::read_to_string(&path) else {
        return Err(not_found_profile());
    };
    if let Err(errors) = place.check(name, None) {
        return Err(ProxyError::new(
            ErrorCode::ProfileInvalid,
            "the config without this profile is invalid (a route may name it); nothing was deleted",
        )
        .with_errors(errors));
    }
    std::fs::remove_file(&path).map_err(|e| {
        ProxyError::new(
            ErrorCode::Internal,
            format!("cannot remove {}: {e}", path.display()),
        )
    })?;
    match place.reloader.reload_from_file() {
        Ok(summary) => {
            for k in SECRETS {
                let _ = store.remove(&Name::secret(&secret_name(name, k)));
            }
            tracing::info!(profile = %name, "admin: profile deleted from the form");
            Ok(json_response(
                StatusCode::OK,
                json!({"profile": name, "deleted": true, "reloaded": true, "summary": summary}),
            ))
        }
        Err(errors) => {
            restore_file(&path, Some(&old));
            Err(ProxyError::new(
                ErrorCode::ConfigInvalid,
                "the reload was refused: the file was put back; the running config stays in force",
            )
            .with_errors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_typed_secret_goes_to_the_store_and_the_file_refers_to_it() {
        let f = form(json!({
            "type": "oauth2_authorization_code",
            "client_id": " app ",
            "client_secret": {"value": "pa${ss"},
            "token_url": "",
            "scope": [{"key": "scope", "value": "read"}, {"key": "", "value": ""}],
            "fields": [{"in": "header", "key": "Authorization", "value": "Bearer {{access_token}}"}],
            "tenancy": false,
        }));
        let b = Built::from_form("okta", &f, None).unwrap();
        assert_eq!(
            b.file["client_secret"].as_str(),
            Some("${store:okta.client_secret}")
        );
        assert_eq!(b.check["client_secret"].as_str(), Some("pa$${ss"));
        assert_eq!(
            b.secrets,
            vec![("okta.client_secret".to_string(), "pa${ss".to_string())]
        );
        assert_eq!(b.file["client_id"].as_str(), Some("app"));
        assert!(b.file.get("token_url").is_none());
        assert!(b.file.get("tenancy").is_none());
        assert_eq!(b.file["scope"]["scope"].as_str(), Some("read"));
        let text = toml::to_string(&b.file).unwrap();
        assert!(!text.contains("pa${ss"), "{text}");
    }

    #[test]
    fn a_kept_secret_and_unknown_keys_stay_as_the_file_has_them() {
        let existing: toml::Table =
            "type = \"oauth2_client_credentials\"\nclient_secret = \"${store:p.client_secret}\"\npkce = true\n"
                .parse()
                .unwrap();
        let f = form(json!({"type": "oauth2_client_credentials", "client_secret": {"set": true}}));
        let b = Built::from_form("p", &f, Some(&existing)).unwrap();
        assert_eq!(
            b.file["client_secret"].as_str(),
            Some("${store:p.client_secret}")
        );
        assert_eq!(b.file["pkce"].as_bool(), Some(true));
        assert!(b.secrets.is_empty() && b.dropped.is_empty());
        let shown = to_form(&existing);
        assert_eq!(shown["client_secret"], json!({"set": true}));
        assert_eq!(shown["other_keys"], json!(["pkce"]));
        assert!(!Value::Object(shown).to_string().contains("store:"));
        let err = Built::from_form("p", &form(json!({"colour": "blue"})), None)
            .err()
            .unwrap();
        assert_eq!(err.0, "colour");
    }

    #[test]
    fn errors_are_given_by_field() {
        assert_eq!(
            by_field("okta", "profiles.okta.token_url: expected an http(s) URL"),
            json!({"field": "token_url", "message": "expected an http(s) URL"})
        );
        assert_eq!(
            by_field("okta", "profiles.okta.fields[0].key: required key missing")["field"],
            "fields[0].key"
        );
        assert_eq!(by_field("okta", "profiles.oktab.x: y")["field"], "");
        assert_eq!(by_field("okta", "routes: no routes")["field"], "");
    }
}
