//! File shapes → typed [`Config`], collecting every error with its key path.
//!
//! One file per section: [`proxy`], [`listeners`] (`[admin]`, `[auth]`, `[mock_provider]`),
//! [`store`], [`connectors`], [`profiles`] (with their [`oauth`] keys and [`fields`]) and
//! [`routes`]; [`tls`] is shared by listeners, routes and profiles. This file reads the sections in
//! order (connectors before the profiles and routes that name them, profiles before the routes) and
//! runs the checks that span sections.

mod connectors;
mod fields;
mod listeners;
mod oauth;
mod profiles;
mod proxy;
mod routes;
mod signing;
mod store;
mod tls;
mod token_shape;
mod webhooks;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use indexmap::IndexMap;

use super::raw::{
    self, AuthCodeKeys, JwtBearerKeys, OAuthKeys, RawAdmin, RawAuth, RawConnector, RawField,
    RawKind, RawMock, RawProfile, RawProxy, RawRoute, RawServerTls, RawStore, RawTls, RawUserField,
};
use super::*;

const SECTIONS: &str =
    "proxy, admin, auth, routes, profiles, connectors, webhooks, mock_provider, store, presets_file";

/// What validation has found so far, and what later sections refer to.
struct V<'a> {
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
    env: &'a Env,
    /// `[connectors.NAME]`, read before routes and profiles name them.
    connectors: IndexMap<String, Arc<Connector>>,
    /// `[webhooks.NAME]`, read before the profiles that name them.
    webhooks: IndexMap<String, Arc<webhook::Webhook>>,
}

impl<'a> V<'a> {
    fn new(env: &'a Env) -> V<'a> {
        V {
            errors: Vec::new(),
            warnings: Vec::new(),
            env,
            connectors: IndexMap::new(),
            webhooks: IndexMap::new(),
        }
    }

    fn err(&mut self, path: &str, msg: impl Into<String>) {
        self.errors.push(ConfigError::new(path, msg));
    }

    fn warn(&mut self, msg: String) {
        self.warnings.push(msg);
    }

    fn has_error(&self, path: &str) -> bool {
        self.errors.iter().any(|e| e.path == path)
    }

    fn env_base(&self) -> std::path::PathBuf {
        self.env.base_dir().to_path_buf()
    }

    /// A path from the config, relative to the config file's folder.
    fn path(&self, p: &std::path::Path) -> std::path::PathBuf {
        if p.is_relative() {
            self.env_base().join(p)
        } else {
            p.to_path_buf()
        }
    }
}

/// What a reference to an unknown `[section.NAME]` should have named: `expected one of a, b`, or
/// that there is no such section.
fn expected_one_of<'a>(section: &str, known: impl Iterator<Item = &'a String>) -> String {
    let known: Vec<&str> = known.map(String::as_str).collect();
    if known.is_empty() {
        format!("no [{section}.NAME] section is defined")
    } else {
        format!("expected one of {}", known.join(", "))
    }
}

pub fn validate(mut table: toml::Table, env: &Env) -> Result<Config, Vec<ConfigError>> {
    let mut v = V::new(env);

    let proxy: RawProxy = section(&mut table, "proxy", &mut v).unwrap_or_default();
    let admin: RawAdmin = section(&mut table, "admin", &mut v).unwrap_or_default();
    let mock: Option<RawMock> = section(&mut table, "mock_provider", &mut v);
    let raw_store: Option<RawStore> = section(&mut table, "store", &mut v);
    let raw_auth: Option<RawAuth> = section(&mut table, "auth", &mut v);
    let auth = raw_auth.and_then(|a| listeners::auth_settings(a, &mut v));
    let store = store::store_config(raw_store, &mut v);
    connectors::connectors(table.remove("connectors"), &mut v);
    webhooks::webhooks(table.remove("webhooks"), &store, &mut v);
    let mut raw_profiles = match table.remove("profiles") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(_) => {
            v.err("profiles", "expected a table of profiles: [profiles.NAME]");
            toml::Table::new()
        }
    };
    let catalog = presets_catalog(table.remove("presets_file"), &mut v);
    let preset_uses = super::presets::apply(&mut raw_profiles, &catalog, &mut v.errors);
    let raw_routes = match table.remove("routes") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a,
        Some(_) => {
            v.err("routes", "expected an array of tables: [[routes]]");
            Vec::new()
        }
    };
    for key in table.keys() {
        v.err(
            key,
            format!("unknown section \"{key}\"; expected {SECTIONS}"),
        );
    }

    let proxy = proxy::proxy_settings(proxy, &mut v);
    let admin = listeners::admin_settings(admin, &mut v);
    let mock_provider = mock.and_then(|m| listeners::mock_provider(m, &mut v));
    listeners::check_distinct_listeners(
        &proxy,
        &admin,
        auth.as_ref(),
        mock_provider.as_ref(),
        &mut v,
    );

    let (profiles, broken) = profiles::profiles(raw_profiles, &mut v);
    let mut routes = routes::routes(raw_routes, &profiles, &broken, &proxy, &mut v);
    profiles::check_per_user(&profiles, &store, auth.as_ref(), &mut v);
    if routes.is_empty() && v.errors.is_empty() {
        v.err(
            "routes",
            "no routes; expected at least one [[routes]] entry",
        );
    }
    routes::warn_plain_http_through_connectors(&routes, &profiles, &mut v);

    super::presets::annotate(&mut v.errors, &preset_uses);
    if v.errors.is_empty() {
        // Longest prefix first, so the first match is the longest.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Config {
            proxy,
            admin,
            routes,
            profiles,
            mock_provider,
            store,
            auth,
            connectors: v.connectors,
            webhooks: v.webhooks,
            warnings: v.warnings,
            presets: preset_uses,
        })
    } else {
        Err(v.errors)
    }
}

/// The shipped presets, extended by `presets_file` (relative to the config file's folder).
fn presets_catalog(file: Option<toml::Value>, v: &mut V) -> super::presets::Catalog {
    let mut catalog = match super::presets::Catalog::builtin() {
        Ok(c) => c,
        Err(errors) => {
            v.errors.extend(errors);
            return super::presets::Catalog::default();
        }
    };
    let path = match file {
        None => return catalog,
        Some(toml::Value::String(p)) => v.path(std::path::Path::new(&p)),
        Some(_) => {
            v.err(
                "presets_file",
                "invalid type; expected a path to a TOML file",
            );
            return catalog;
        }
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            if let Err(errors) = catalog.add(&text, "presets_file") {
                let shown = path.display().to_string();
                v.errors.extend(
                    errors
                        .into_iter()
                        .map(|e| ConfigError::new(&e.path, format!("{} (in {shown})", e.message))),
                );
            }
        }
        Err(e) => v.err(
            "presets_file",
            format!("cannot read {}: {e}", path.display()),
        ),
    }
    catalog
}

fn section<T: serde::de::DeserializeOwned>(
    table: &mut toml::Table,
    key: &str,
    v: &mut V,
) -> Option<T> {
    let value = table.remove(key)?;
    raw::collect(value, key, &mut v.errors)
}

/// `[store]` alone: the store `${store:NAME}` references are read from at start (`None` when the
/// section has errors; the whole config's checks report them).
pub(super) fn store_section(value: toml::Value, env: &Env) -> Option<StoreConfig> {
    let mut v = V::new(env);
    let raw: Option<RawStore> = raw::collect(value, "store", &mut v.errors);
    let config = store::store_config(raw, &mut v);
    v.errors.is_empty().then_some(config)
}

pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn listen_addr(s: &str, path: &str, v: &mut V) -> Option<SocketAddr> {
    match s.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            v.err(
                path,
                format!("invalid address \"{s}\"; expected IP:port like 127.0.0.1:8080"),
            );
            None
        }
    }
}
