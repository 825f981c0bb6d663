//! `[admin] profiles_dir = "DIR"`: one profile per file, added to the config as if written in it.
//!
//! Each `DIR/NAME.toml` holds the keys of `[profiles.NAME]` at its top level (no table header):
//! the file name is the profile's name. Files are read in name order; names starting with `.` and
//! names not ending in `.toml` are skipped (the profile form writes `.NAME.toml.tmp` and renames
//! it). A missing folder holds no profiles (the form creates it on its first save).
//!
//! The files are read before the environment overrides and the `${…}` references, so both apply to
//! them as to the main file. A name the main file also defines is an error naming both files; a
//! file that is not TOML is an error naming the file. Errors of the checks that follow carry their
//! key path (`profiles.NAME.token_url`) and the file they come from.

use std::path::{Path, PathBuf};

use super::{ConfigError, Env};

/// The suffix of a profile file.
pub const EXTENSION: &str = ".toml";

/// A profile as the profile form has it, standing in for its file (`None`: the file is gone).
#[derive(Debug)]
pub struct FormProfile {
    pub name: String,
    pub table: Option<toml::Table>,
}

/// Which profiles came from which file of `profiles_dir`.
#[derive(Debug, Default, Clone)]
pub struct Origins {
    pub files: Vec<(String, PathBuf)>,
}

impl Origins {
    /// Each error about a profile read from a file names that file.
    pub fn annotate(&self, errors: Vec<ConfigError>) -> Vec<ConfigError> {
        errors
            .into_iter()
            .map(|mut e| {
                let file = self.files.iter().find(|(name, _)| {
                    let head = format!("profiles.{name}");
                    e.path == head
                        || e.path.starts_with(&format!("{head}."))
                        || e.path.starts_with(&format!("{head}["))
                });
                if let Some((_, f)) = file {
                    e.message = format!("{} (in {})", e.message, f.display());
                }
                e
            })
            .collect()
    }
}

/// The folder `[admin] profiles_dir` of the main file names (or `AUTHSIDECAR__ADMIN__PROFILES_DIR`),
/// relative to the config file's folder.
pub fn dir_of(file: &toml::Table, env: &Env) -> Result<Option<PathBuf>, ConfigError> {
    let from_file = file
        .get("admin")
        .and_then(toml::Value::as_table)
        .and_then(|a| a.get("profiles_dir"));
    let dir = match (env.get("AUTHSIDECAR__ADMIN__PROFILES_DIR"), from_file) {
        (Some(d), _) => d.to_string(),
        (None, None) => return Ok(None),
        (None, Some(toml::Value::String(d))) => d.clone(),
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "admin.profiles_dir",
                "invalid type; expected a folder path",
            ))
        }
    };
    if dir.is_empty() {
        return Err(ConfigError::new(
            "admin.profiles_dir",
            "empty; expected a folder path",
        ));
    }
    let p = Path::new(&dir);
    Ok(Some(if p.is_relative() {
        env.base_dir().join(p)
    } else {
        p.to_path_buf()
    }))
}

/// The file of profile `name` in `dir`.
pub fn file_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{EXTENSION}"))
}

/// The profiles of `dir`, by name, in name order. A file that cannot be read or parsed is an error
/// naming it.
pub fn read_dir(dir: &Path) -> Result<Vec<(String, PathBuf, toml::Table)>, Vec<ConfigError>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(vec![ConfigError::new(
                "admin.profiles_dir",
                format!("cannot read {}: {e}", dir.display()),
            )])
        }
    };
    let mut files: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let file = e.file_name().to_str()?.to_string();
            let name = file.strip_suffix(EXTENSION)?.to_string();
            (!file.starts_with('.')).then(|| (name, e.path()))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (name, path) in files {
        if !super::validate::valid_name(&name) {
            errors.push(ConfigError::new(
                "admin.profiles_dir",
                format!(
                    "{}: the file name must be the profile's name (letters, digits, -, _ and .) followed by {EXTENSION}",
                    path.display()
                ),
            ));
            continue;
        }
        match read_file(&path) {
            Ok(t) => out.push((name, path, t)),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// One profile file's table; errors name the file, never its text (it may hold a secret).
pub fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            "admin.profiles_dir",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    parse(&text)
        .map_err(|m| ConfigError::new("admin.profiles_dir", format!("{}: {m}", path.display())))
}

/// A profile file's text as a table; a syntax error says where, never what the line holds.
pub fn parse(text: &str) -> Result<toml::Table, String> {
    text.parse().map_err(|e: toml::de::Error| {
        let (line, col) = e
            .span()
            .map(|s| super::source::line_col(text, s.start))
            .unwrap_or((0, 0));
        format!(
            "TOML syntax error at line {line}, column {col}: {}",
            e.message()
        )
    })
}

/// Adds the profiles of `profiles_dir` (with the profile form's stand-in, if any) to the main
/// file's table.
pub(super) fn merge(file: &mut toml::Table, env: &Env) -> Result<Origins, Vec<ConfigError>> {
    let Some(dir) = dir_of(file, env).map_err(|e| vec![e])? else {
        if env.form.is_some() {
            return Err(vec![ConfigError::new(
                "admin.profiles_dir",
                "not set: the profile form writes its profiles there",
            )]);
        }
        return Ok(Origins::default());
    };
    let mut found = read_dir(&dir)?;
    if let Some(form) = &env.form {
        found.retain(|(n, _, _)| *n != form.name);
        if let Some(t) = &form.table {
            found.push((form.name.clone(), file_of(&dir, &form.name), t.clone()));
        }
    }
    let profiles = match file
        .entry("profiles")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
    {
        toml::Value::Table(t) => t,
        // The checks of `[profiles]` say what is wrong with it.
        _ => return Ok(Origins::default()),
    };
    let main = env
        .file
        .as_ref()
        .map_or("the main config file".to_string(), |f| {
            f.display().to_string()
        });
    let mut origins = Origins::default();
    let mut errors = Vec::new();
    for (name, path, table) in found {
        if profiles.contains_key(&name) {
            errors.push(ConfigError::new(
                &format!("profiles.{name}"),
                format!(
                    "defined twice: in {main} and in {}; keep one",
                    path.display()
                ),
            ));
            continue;
        }
        profiles.insert(name.clone(), toml::Value::Table(table));
        origins.files.push((name, path));
    }
    if errors.is_empty() {
        Ok(origins)
    } else {
        Err(errors)
    }
}

/// Writes `text` to `path` whole or not at all: a temporary file beside it, synced, then renamed
/// over it (and the folder synced), so a reader sees the old file or the new one.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("profile");
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("authsidecar-pdir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn files_are_added_and_a_clash_names_both_files() {
        let d = dir("clash");
        std::fs::write(d.join("extra.toml"), "type = \"none\"\n").unwrap();
        std::fs::write(d.join("notes.txt"), "ignored").unwrap();
        std::fs::write(d.join(".extra.toml.1.tmp"), "ignored").unwrap();
        let env = Env::default().with_base_dir(&d);
        let mut t: toml::Table =
            "[admin]\nprofiles_dir = \".\"\n[profiles.main]\ntype = \"none\"\n"
                .parse()
                .unwrap();
        let origins = merge(&mut t, &env).unwrap();
        assert_eq!(origins.files.len(), 1);
        assert!(t["profiles"].get("extra").is_some());
        assert!(t["profiles"].get("main").is_some());

        std::fs::write(d.join("main.toml"), "type = \"none\"\n").unwrap();
        let mut t: toml::Table =
            "[admin]\nprofiles_dir = \".\"\n[profiles.main]\ntype = \"none\"\n"
                .parse()
                .unwrap();
        let mut env = env.clone();
        env.file = Some(d.join("sidecar.toml"));
        let e = merge(&mut t, &env).unwrap_err();
        assert_eq!(e[0].path, "profiles.main");
        assert!(e[0].message.contains("sidecar.toml"), "{e:?}");
        assert!(e[0].message.contains("main.toml"), "{e:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_bad_file_is_named_without_its_text() {
        let d = dir("bad");
        std::fs::write(d.join("p.toml"), "client_secret = \"canary-77").unwrap();
        let e = read_dir(&d).unwrap_err();
        let msg = e[0].to_string();
        assert!(msg.contains("p.toml") && msg.contains("line 1"), "{msg}");
        assert!(!msg.contains("canary-77"), "{msg}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn atomic_writes_replace_the_file() {
        let d = dir("write");
        let f = d.join("sub").join("p.toml");
        write_atomic(&f, "a = 1\n").unwrap();
        write_atomic(&f, "a = 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "a = 2\n");
        assert_eq!(std::fs::read_dir(d.join("sub")).unwrap().count(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
