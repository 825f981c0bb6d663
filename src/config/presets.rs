//! Provider presets: `preset = "NAME"` on an OAuth 2.0 profile fills the keys the profile does not
//! write itself from a catalog (URLs, tenancy and its pattern, client authentication, token
//! quirks).
//!
//! The catalog is data, not code: `config/presets.toml` is compiled into the binary, and a config's
//! top-level `presets_file = "path"` (relative to the config file's folder) adds presets and
//! replaces shipped ones by name. A preset may start from another one with `extends = "NAME"`.
//!
//! Presets are applied to the profile tables before they are read, so every filled key goes
//! through the same checks as a written one; errors about a filled key say which preset filled it.

use indexmap::IndexMap;
use serde::Deserialize;

use super::ConfigError;

/// The shipped catalog.
pub const BUILTIN: &str = include_str!("../../config/presets.toml");

/// What a scope value written as an array is joined with when the preset says nothing.
pub const DEFAULT_SCOPE_SEPARATOR: &str = " ";

/// Profile keys whose tables are merged key by key (the profile's entries win); any other key the
/// profile writes replaces the preset's value whole.
const MERGED_TABLES: &[&str] = &["token_params"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    presets: IndexMap<String, RawPreset>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPreset {
    provider: String,
    quirk: String,
    docs: Option<String>,
    discovery_issuer: Option<String>,
    scope_separator: Option<String>,
    hint: Option<String>,
    extends: Option<String>,
    #[serde(default)]
    profile: toml::Table,
}

/// One preset of the catalog, with `extends` resolved.
#[derive(Debug, Clone)]
pub struct Preset {
    pub name: String,
    pub provider: String,
    pub quirk: String,
    pub docs: Option<String>,
    pub discovery_issuer: Option<String>,
    pub scope_separator: String,
    pub hint: Option<String>,
    /// The profile keys it fills.
    pub profile: toml::Table,
}

/// What a preset filled in one profile (printed by `check`).
#[derive(Debug, Clone)]
pub struct PresetUse {
    pub profile: String,
    pub preset: String,
    pub provider: String,
    /// The keys the preset wrote, in the preset's order, each with its value as text
    /// (`client_secret` never shown).
    pub filled: Vec<(String, String)>,
    pub hint: Option<String>,
}

/// The catalog: the shipped presets, then a `presets_file`'s.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    presets: IndexMap<String, Preset>,
}

impl Catalog {
    /// The shipped catalog alone.
    pub fn builtin() -> Result<Catalog, Vec<ConfigError>> {
        let mut c = Catalog::default();
        c.add(BUILTIN, "presets")?;
        Ok(c)
    }

    /// Adds the presets of one catalog text; a name already known is replaced. `origin` prefixes
    /// error paths.
    pub fn add(&mut self, text: &str, origin: &str) -> Result<(), Vec<ConfigError>> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            vec![ConfigError::new(
                origin,
                format!("TOML syntax error: {}", e.message()),
            )]
        })?;
        let mut errors = Vec::new();
        let Some(raw) =
            super::raw::collect::<RawCatalog>(toml::Value::Table(table), origin, &mut errors)
        else {
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        for (name, p) in raw.presets {
            let path = format!("{origin}.presets.{name}");
            let mut profile = match &p.extends {
                None => toml::Table::new(),
                Some(base) => match self.presets.get(base) {
                    Some(b) => b.profile.clone(),
                    None => {
                        errors.push(ConfigError::new(
                            &format!("{path}.extends"),
                            format!(
                                "unknown preset \"{base}\"; expected one defined before it: {}",
                                self.names().join(", ")
                            ),
                        ));
                        continue;
                    }
                },
            };
            if p.profile.contains_key("preset") {
                errors.push(ConfigError::new(
                    &format!("{path}.profile.preset"),
                    "a preset cannot name a preset; use extends",
                ));
                continue;
            }
            for (k, val) in p.profile {
                profile.insert(k, val);
            }
            let base = p.extends.as_ref().and_then(|b| self.presets.get(b));
            let scope_separator = p
                .scope_separator
                .or_else(|| base.map(|b| b.scope_separator.clone()))
                .unwrap_or_else(|| DEFAULT_SCOPE_SEPARATOR.to_string());
            let preset = Preset {
                name: name.clone(),
                provider: p.provider,
                quirk: p.quirk,
                docs: p.docs.or_else(|| base.and_then(|b| b.docs.clone())),
                discovery_issuer: p
                    .discovery_issuer
                    .or_else(|| base.and_then(|b| b.discovery_issuer.clone())),
                scope_separator,
                hint: p.hint.or_else(|| base.and_then(|b| b.hint.clone())),
                profile,
            };
            self.presets.insert(name, preset);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    pub fn get(&self, name: &str) -> Option<&Preset> {
        self.presets.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.presets.keys().map(String::as_str).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Preset> {
        self.presets.values()
    }
}

/// Applies `preset` of every profile table in place. Returns what each preset filled; errors go
/// to `errors` (a profile whose preset is unknown is left without it and still checked).
pub fn apply(
    profiles: &mut toml::Table,
    catalog: &Catalog,
    errors: &mut Vec<ConfigError>,
) -> Vec<PresetUse> {
    let mut uses = Vec::new();
    for (name, value) in profiles.iter_mut() {
        let toml::Value::Table(table) = value else {
            continue;
        };
        let path = format!("profiles.{name}");
        let mut separator = DEFAULT_SCOPE_SEPARATOR.to_string();
        match table.remove("preset") {
            None => {}
            Some(toml::Value::String(preset)) => match catalog.get(&preset) {
                None => errors.push(ConfigError::new(
                    &format!("{path}.preset"),
                    format!(
                        "unknown preset \"{preset}\"; known presets: {}",
                        catalog.names().join(", ")
                    ),
                )),
                Some(p) => {
                    separator = p.scope_separator.clone();
                    // The profile's own type, else the preset's.
                    let ty = table
                        .get("type")
                        .or_else(|| p.profile.get("type"))
                        .and_then(toml::Value::as_str)
                        .map(str::to_string);
                    let takes = ty
                        .as_deref()
                        .and_then(super::ProfileType::from_name)
                        .map(super::raw::oauth_keys_of)
                        .unwrap_or_default();
                    let filled = fill(table, &p.profile, &takes);
                    if takes.is_empty() {
                        errors.push(ConfigError::new(
                            &format!("{path}.preset"),
                            format!(
                                "preset \"{preset}\" fills OAuth 2.0 profiles; type \"{}\" is not one",
                                ty.as_deref().unwrap_or("")
                            ),
                        ));
                    }
                    if !table.contains_key("identity_provider") {
                        table.insert(
                            "identity_provider".into(),
                            toml::Value::String(p.provider.clone()),
                        );
                    }
                    uses.push(PresetUse {
                        profile: name.clone(),
                        preset: preset.clone(),
                        provider: p.provider.clone(),
                        filled,
                        hint: p.hint.clone(),
                    });
                }
            },
            Some(_) => errors.push(ConfigError::new(
                &format!("{path}.preset"),
                format!(
                    "invalid type; expected a preset name: {}",
                    catalog.names().join(", ")
                ),
            )),
        }
        join_scopes(table, &separator);
    }
    uses
}

/// Writes the preset's keys the profile lacks and its type takes (`takes`: so an authorization-code
/// preset serves an `oauth2_client_credentials` profile with its token URL); returns the keys the
/// preset wrote with their values as text.
fn fill(table: &mut toml::Table, preset: &toml::Table, takes: &[&str]) -> Vec<(String, String)> {
    let mut filled = Vec::new();
    for (k, v) in preset {
        if !takes.contains(&k.as_str()) {
            continue;
        }
        match table.get_mut(k) {
            None => {
                table.insert(k.clone(), v.clone());
                filled.push((k.clone(), shown(k, v)));
            }
            Some(toml::Value::Table(own)) if MERGED_TABLES.contains(&k.as_str()) => {
                if let toml::Value::Table(theirs) = v {
                    let mut any = false;
                    for (pk, pv) in theirs {
                        if !own.contains_key(pk) {
                            own.insert(pk.clone(), pv.clone());
                            any = true;
                        }
                    }
                    if any {
                        filled.push((k.clone(), shown(k, v)));
                    }
                }
            }
            Some(_) => {}
        }
    }
    filled
}

/// A filled value as `check` prints it.
fn shown(key: &str, v: &toml::Value) -> String {
    if key.contains("secret") {
        return "[redacted]".into();
    }
    match v {
        toml::Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

/// `scope = { scope = ["a", "b"] }`: an array of strings is joined with the separator (the
/// preset's, else a space). Anything else is left for the profile checks to judge.
fn join_scopes(table: &mut toml::Table, separator: &str) {
    let Some(toml::Value::Table(scope)) = table.get_mut("scope") else {
        return;
    };
    for (_, v) in scope.iter_mut() {
        if let toml::Value::Array(items) = v {
            let parts: Option<Vec<&str>> = items.iter().map(toml::Value::as_str).collect();
            if let Some(parts) = parts {
                *v = toml::Value::String(parts.join(separator));
            }
        }
    }
}

/// Adds ` (filled by preset "NAME")` to errors about keys a preset filled.
pub fn annotate(errors: &mut [ConfigError], uses: &[PresetUse]) {
    for e in errors.iter_mut() {
        for u in uses {
            let prefix = format!("profiles.{}.", u.profile);
            let Some(rest) = e.path.strip_prefix(&prefix) else {
                continue;
            };
            let key = rest.split(['.', '[']).next().unwrap_or("");
            if u.filled.iter().any(|(f, _)| f == key) {
                e.message
                    .push_str(&format!(" (filled by preset \"{}\")", u.preset));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles(src: &str) -> toml::Table {
        src.parse().unwrap()
    }

    #[test]
    fn the_shipped_catalog_parses_and_names_the_required_providers() {
        let c = Catalog::builtin().unwrap();
        for name in [
            "google",
            "microsoft",
            "salesforce",
            "slack",
            "github",
            "gitlab",
            "atlassian",
            "hubspot",
            "zoom",
            "servicenow",
            "zendesk",
            "dropbox",
            "box",
            "docusign",
            "okta",
            "auth0",
        ] {
            let p = c.get(name).unwrap_or_else(|| panic!("{name} missing"));
            assert!(!p.quirk.is_empty(), "{name}");
            assert!(p.profile.contains_key("token_url"), "{name}");
        }
        assert_eq!(c.get("slack").unwrap().scope_separator, ",");
        let demo = c.get("docusign-demo").unwrap();
        assert_eq!(demo.profile["client_auth"].as_str(), Some("basic"));
        assert!(demo.profile["token_url"]
            .as_str()
            .unwrap()
            .contains("account-d."));
    }

    #[test]
    fn profile_keys_win_and_token_params_merge() {
        let mut c = Catalog::builtin().unwrap();
        c.add(
            "[presets.x]\nprovider = \"X\"\nquirk = \"q\"\n[presets.x.profile]\ntype = \"oauth2_client_credentials\"\ntoken_url = \"https://x.example/token\"\ntoken_params = { audience = \"a\", resource = \"r\" }\n",
            "presets_file",
        )
        .unwrap();
        let mut t = profiles(
            "[p]\npreset = \"x\"\ntoken_url = \"https://own.example/token\"\ntoken_params = { audience = \"mine\" }\nscope = { scope = [\"a\", \"b\"] }\n",
        );
        let mut errors = Vec::new();
        let uses = apply(&mut t, &c, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let p = t["p"].as_table().unwrap();
        assert_eq!(p["token_url"].as_str(), Some("https://own.example/token"));
        assert_eq!(p["token_params"]["audience"].as_str(), Some("mine"));
        assert_eq!(p["token_params"]["resource"].as_str(), Some("r"));
        assert_eq!(p["scope"]["scope"].as_str(), Some("a b"));
        assert_eq!(p["identity_provider"].as_str(), Some("X"));
        assert!(!p.contains_key("preset"));
        let keys: Vec<&str> = uses[0].filled.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["type", "token_params"]);
    }

    #[test]
    fn an_unknown_preset_lists_the_known_ones() {
        let c = Catalog::builtin().unwrap();
        let mut t = profiles("[p]\npreset = \"githib\"\n");
        let mut errors = Vec::new();
        apply(&mut t, &c, &mut errors);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "profiles.p.preset");
        assert!(
            errors[0]
                .message
                .starts_with("unknown preset \"githib\"; known presets: google, microsoft,"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn extends_needs_a_known_preset() {
        let mut c = Catalog::builtin().unwrap();
        let errs = c
            .add(
                "[presets.y]\nprovider = \"Y\"\nquirk = \"q\"\nextends = \"nope\"\n",
                "presets_file",
            )
            .unwrap_err();
        assert_eq!(errs[0].path, "presets_file.presets.y.extends");
    }
}
