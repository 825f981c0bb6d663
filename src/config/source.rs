//! Reading the config: TOML text, environment overrides, `${…}` references.
//!
//! Layering: the TOML file, then `AUTHSIDECAR__SECTION__KEY=value` environment overrides (through the
//! `config` crate: `__` separates path segments, keys are lowercased, values that parse as numbers or
//! booleans become numbers or booleans), then `${…}` references in string values are resolved:
//!
//! - `${VAR}`: the environment variable `VAR` (missing → config error naming the key and the variable);
//! - `${VAR:-default}`: `VAR`, or `default` when it is unset or empty;
//! - `${file:PATH}`: the contents of a file (relative paths are relative to the config file's folder),
//!   with one trailing newline removed;
//! - `${store:NAME}`: the secret `NAME` of the encrypted store (`config::store_refs`; the profile
//!   form writes them);
//! - `$${` is a literal `${`.
//!
//! Before the environment overrides, the profiles of `[admin] profiles_dir` are added to the file's
//! `[profiles]` (`config::profiles_dir`).
//!
//! Errors never contain the text of the file around the error, because that line may hold a secret:
//! TOML syntax errors report only line, column and what was expected.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ConfigError;

/// The environment the config is resolved against (a snapshot, so tests can supply their own).
/// `Debug` shows the variables' names, never their values (any of them may be a secret).
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
    base_dir: PathBuf,
    /// Resolves `${store:NAME}` (the running store on a reload; the store opened for the load at
    /// start, see `store_refs`).
    pub(super) store: Option<super::store_refs::Lookup>,
    /// May open the configured store to resolve `${store:NAME}` (a real process's load).
    pub(super) open_store: bool,
    /// The main config file, named in errors about `profiles_dir`.
    pub(super) file: Option<PathBuf>,
    /// A profile of `profiles_dir` as the profile form has it (checked, not yet written).
    pub(super) form: Option<Arc<super::profiles_dir::FormProfile>>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Env")
            .field("vars", &names)
            .field("base_dir", &self.base_dir)
            .finish()
    }
}

impl Env {
    /// The process environment; `${file:…}` paths relative to `base_dir`.
    pub fn from_process(base_dir: impl Into<PathBuf>) -> Self {
        Env {
            vars: std::env::vars().collect(),
            base_dir: base_dir.into(),
            open_store: true,
            ..Env::default()
        }
    }

    /// The process environment for the config file `path` (relative paths from its folder).
    pub fn for_file(path: &Path) -> Self {
        let mut env = Env::from_process(path.parent().unwrap_or(Path::new(".")));
        env.file = Some(path.to_path_buf());
        env
    }

    /// `${store:NAME}` is read from `store` (the running one, on a reload).
    pub fn with_store(mut self, store: Arc<crate::store::Store>) -> Self {
        self.store = Some(super::store_refs::lookup(store));
        self
    }

    /// The profile `name` of `profiles_dir` replaced by `table` (`None`: removed), as if its file
    /// said so: what the profile form checks before it writes.
    pub fn with_form_profile(mut self, name: &str, table: Option<toml::Table>) -> Self {
        self.form = Some(Arc::new(super::profiles_dir::FormProfile {
            name: name.to_string(),
            table,
        }));
        self
    }

    /// An explicit set of variables (tests).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            base_dir: PathBuf::from("."),
            ..Env::default()
        }
    }

    pub fn with_base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = dir.into();
        self
    }

    /// Folder that relative file paths in the config are resolved against.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

pub const ENV_PREFIX: &str = "AUTHSIDECAR";

/// TOML text + environment → one table with every reference resolved. Errors in references are
/// returned beside the table (whose unresolved strings stay as written), so validation can still
/// report everything else in the same run; so are the profiles read from `profiles_dir`.
pub fn resolve(
    text: &str,
    env: &Env,
) -> Result<(toml::Table, Vec<ConfigError>, super::profiles_dir::Origins), Vec<ConfigError>> {
    let mut file: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        vec![ConfigError::new(
            "",
            format!(
                "TOML syntax error at line {line}, column {col}: {}",
                e.message()
            ),
        )]
    })?;
    let origins = super::profiles_dir::merge(&mut file, env)?;

    let overrides: config::Map<String, String> = env
        .vars
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut table = if overrides.is_empty() {
        file
    } else {
        let layered = config::Config::builder()
            .add_source(
                config::Config::try_from(&file)
                    .map_err(|e| vec![ConfigError::new("", format!("internal: {e}"))])?,
            )
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(overrides)),
            )
            .build()
            .map_err(|e| {
                vec![ConfigError::new(
                    "",
                    format!("environment override: {}", sanitize(&e.to_string())),
                )]
            })?;
        layered.try_deserialize::<toml::Table>().map_err(|e| {
            vec![ConfigError::new(
                "",
                format!("environment override: {}", sanitize(&e.to_string())),
            )]
        })?
    };

    let mut errors = Vec::new();
    let env = super::store_refs::attach(&table, env, &mut errors);
    expand_table(&mut table, "", &env, &mut errors);
    Ok((table, errors, origins))
}

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

/// Removes quoted values from a message that may echo one.
fn sanitize(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut in_quote = false;
    for c in msg.chars() {
        if c == '"' {
            if !in_quote {
                out.push_str("\"…\"");
            }
            in_quote = !in_quote;
        } else if !in_quote {
            out.push(c);
        }
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn expand_table(
    table: &mut toml::Table,
    path: &str,
    env: &Env,
    errors: &mut Vec<ConfigError>,
) {
    for (k, v) in table.iter_mut() {
        expand_value(v, &join(path, k), env, errors);
    }
}

fn expand_value(v: &mut toml::Value, path: &str, env: &Env, errors: &mut Vec<ConfigError>) {
    match v {
        toml::Value::String(s) if s.contains('$') => match expand_str(s, env) {
            Ok(expanded) => *s = expanded,
            Err(msg) => errors.push(ConfigError::new(path, msg)),
        },
        toml::Value::Table(t) => expand_table(t, path, env, errors),
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{i}]"), env, errors);
            }
        }
        _ => {}
    }
}

/// Expands `${…}` references in one string. Errors name the variable or file, never a value.
pub fn expand_str(s: &str, env: &Env) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or_else(|| {
                "unclosed \"${\"; expected ${VAR}, ${VAR:-default}, ${file:PATH} or ${store:NAME}"
                    .to_string()
            })?;
            out.push_str(&resolve_ref(&tail[..end], env)?);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn valid_var_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

fn resolve_ref(inner: &str, env: &Env) -> Result<String, String> {
    if let Some(name) = inner.strip_prefix("store:") {
        return super::store_refs::resolve(name, env);
    }
    if let Some(file) = inner.strip_prefix("file:") {
        let path = Path::new(file);
        let path = if path.is_relative() {
            env.base_dir.join(path)
        } else {
            path.to_path_buf()
        };
        let mut text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read file reference {}: {e}", path.display()))?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        return Ok(text);
    }
    let (name, default) = match inner.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (inner, None),
    };
    if !valid_var_name(name) {
        // The text is not quoted: in a secret field it may be part of the secret itself.
        return Err(
            "invalid reference: the name in ${…} must be letters, digits and _ (not starting with a digit); expected ${VAR}, ${VAR:-default} or ${file:PATH}, or $${ for a literal ${"
                .to_string(),
        );
    }
    match (env.get(name), default) {
        (Some(""), Some(d)) => Ok(d.to_string()),
        (Some(v), _) => Ok(v.to_string()),
        (None, Some(d)) => Ok(d.to_string()),
        (None, None) => Err(format!("environment variable {name} is not set")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve() {
        let env = Env::from_pairs([("A", "alpha"), ("EMPTY", "")]);
        assert_eq!(expand_str("x${A}y", &env).unwrap(), "xalphay");
        assert_eq!(expand_str("${B:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand_str("${EMPTY:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand_str("$${A} $5", &env).unwrap(), "${A} $5");
        assert_eq!(
            expand_str("${MISSING}", &env).unwrap_err(),
            "environment variable MISSING is not set"
        );
        assert!(expand_str("${A", &env).is_err());
        assert!(expand_str("${bad name}", &env).is_err());
    }

    #[test]
    fn file_reference_reads_and_trims_one_newline() {
        let dir = std::env::temp_dir().join(format!("authsidecar-src-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret.txt"), "s3cr3t\n").unwrap();
        let env = Env::from_pairs::<[(&str, &str); 0], _, _>([]).with_base_dir(&dir);
        assert_eq!(expand_str("${file:secret.txt}", &env).unwrap(), "s3cr3t");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn syntax_errors_do_not_echo_the_line() {
        let err = resolve("a = \"secret-canary", &Env::default()).unwrap_err();
        let msg = err[0].to_string();
        assert!(msg.contains("line 1"), "{msg}");
        assert!(!msg.contains("secret-canary"), "{msg}");
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let env = Env::from_pairs([
            ("AUTHSIDECAR__PROXY__LISTEN", "127.0.0.1:9999"),
            ("AUTHSIDECAR__PROXY__MAX_BODY_BYTES", "2048"),
            ("UNRELATED", "x"),
        ]);
        let (t, errors, _) = resolve(
            "[proxy]\nlisten = \"127.0.0.1:1\"\n[profiles.Demo]\ntype = \"none\"\n",
            &env,
        )
        .unwrap();
        assert!(errors.is_empty());
        assert_eq!(t["proxy"]["listen"].as_str(), Some("127.0.0.1:9999"));
        assert_eq!(t["proxy"]["max_body_bytes"].as_integer(), Some(2048));
        // keys from the file keep their case
        assert!(t["profiles"].get("Demo").is_some());
    }
}
