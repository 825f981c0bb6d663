//! The one masking function for reports that may quote what an identity provider echoed back (the
//! "test authorization" report of `authsidecar test-auth` and `POST /admin/profiles/{name}/test`).
//!
//! An echoing token endpoint shows a secret not only as it is but in the forms it travelled in, so a
//! [`Redactor`] is built from the profile's secret values and masks every form of each:
//!
//! - raw;
//! - percent-encoded, byte by byte, with upper- or lower-case hex, each unreserved character left raw
//!   or encoded, a space as `%20` or `+` (form encoding); any mix of these;
//! - JSON-escaped: `\u00XX` (either case, UTF-16 surrogate pairs for characters outside the BMP),
//!   `\/`, `\"`, `\\` and the short control escapes; mixed with the above;
//! - split by a line fold (CRLF or LF then spaces or tabs, raw or JSON-escaped) between any two
//!   characters;
//! - base64 (standard and URL-safe alphabets, padded or not) of the secret in its raw and
//!   form-encoded forms at any alignment: this covers the secret's own base64 and
//!   `Authorization: Basic base64(id ":" secret)`. The whole base64 run that contains it is masked.
//!
//! A secret shorter than [`MIN_LEN`] characters is not masked on its own (it would mask ordinary
//! words); `base64(client_id ":" secret)` is masked whatever the secret's length. If the patterns
//! cannot be built, [`Redactor::mask`] withholds the text entirely rather than show it unmasked.

use base64::Engine;
use regex::{Regex, RegexBuilder};

/// Shortest secret masked wherever it appears.
pub const MIN_LEN: usize = 4;

/// Longest secret for which the base64 forms are masked (the patterns grow with the length).
const MAX_BASE64_LEN: usize = 512;

/// What replaces a text that could not be masked.
pub const WITHHELD: &str = "[withheld: could not be masked]";

/// A line fold, raw (`CRLF SP`) or JSON-escaped (`\r\n `). Matching runs on the text as it is and on
/// the text with its folds taken out: with exactly one space or tab after the line break (a fold put
/// between two characters), with all of them, and with all of them replaced by one space (an HTTP
/// obs-fold). A secret split by a fold is then still found, and masked with the fold.
const FOLDS: [(&str, &str); 3] = [
    (r"\r?\n[ \t]|(?:\\r)?\\n(?:[ \t]|\\t)", ""),
    (r"\r?\n[ \t]+|(?:\\r)?\\n(?:[ \t]|\\t)+", ""),
    (r"\r?\n[ \t]+|(?:\\r)?\\n(?:[ \t]|\\t)+", " "),
];

struct Rule {
    /// Raw, percent-encoded, form-encoded and JSON-escaped forms.
    text: Regex,
    /// Cores of the base64 forms; a match masks its whole base64 run.
    base64: Option<Regex>,
    /// Length shown in the mask (characters of the secret).
    len: usize,
}

/// Masks every encoded form of a set of secret values. Build one per report.
pub struct Redactor {
    rules: Vec<Rule>,
    /// Exact `base64(id ":" secret)` credentials (client authentication), any secret length.
    credentials: Vec<String>,
    broken: bool,
}

/// `[redacted len=N]`.
pub fn redacted_len(n: usize) -> String {
    format!("[redacted len={n}]")
}

/// One case-insensitive hex digit as a pattern.
fn hex_digit(n: u8) -> String {
    let d = char::from_digit(u32::from(n & 15), 16).unwrap_or('0');
    if d.is_ascii_digit() {
        d.to_string()
    } else {
        format!("[{d}{}]", d.to_ascii_uppercase())
    }
}

fn folded(atoms: &[String]) -> String {
    atoms.concat()
}

/// Every way one character of a secret may be written (a fold may split an escape too).
fn char_pattern(c: char) -> String {
    let mut alts = vec![regex::escape(c.encode_utf8(&mut [0; 4]))];
    let mut pct = Vec::new();
    for b in c.encode_utf8(&mut [0; 4]).bytes() {
        pct.extend(["%".to_string(), hex_digit(b >> 4), hex_digit(b)]);
    }
    alts.push(folded(&pct));
    if c == ' ' {
        alts.push(r"\+".to_string());
    }
    let mut json = Vec::new();
    for unit in c.encode_utf16(&mut [0; 2]).iter() {
        json.extend([r"\\".to_string(), "u".to_string()]);
        for shift in [12, 8, 4, 0] {
            json.push(hex_digit((unit >> shift) as u8));
        }
    }
    alts.push(folded(&json));
    let short = match c {
        '/' => "/",
        '"' => "\"",
        '\\' => r"\\",
        '\n' => "n",
        '\r' => "r",
        '\t' => "t",
        '\u{8}' => "b",
        '\u{c}' => "f",
        _ => "",
    };
    if !short.is_empty() {
        alts.push(format!(r"\\{short}"));
    }
    format!("(?:{})", alts.join("|"))
}

/// The pattern of every textual form of `secret`.
fn text_pattern(secret: &str) -> String {
    secret.chars().map(char_pattern).collect()
}

/// Percent-encodes `s`: bytes for which `keep` holds stay raw, a space is `+` when `plus`, hex in
/// lower case when `lower`.
fn percent(s: &str, keep: fn(u8) -> bool, plus: bool, lower: bool) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if keep(b) {
            out.push(b as char);
        } else if b == b' ' && plus {
            out.push('+');
        } else if lower {
            out.push_str(&format!("%{b:02x}"));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The forms a secret is sent in before base64: raw; form-urlencoded as the `oauth2` crate does it
/// (`*-._` raw, space `+`); RFC 3986 unreserved raw (space `%20` or `+`); everything but letters and
/// digits encoded; each encoding with upper- and lower-case hex.
pub fn sent_forms(secret: &str) -> Vec<String> {
    let form: fn(u8) -> bool = |b| b.is_ascii_alphanumeric() || b"*-._".contains(&b);
    let unreserved: fn(u8) -> bool = |b| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    let alnum: fn(u8) -> bool = |b| b.is_ascii_alphanumeric();
    let mut out = vec![secret.to_string()];
    for lower in [false, true] {
        out.push(percent(secret, form, true, lower));
        out.push(percent(secret, unreserved, false, lower));
        out.push(percent(secret, unreserved, true, lower));
        out.push(percent(secret, alnum, false, lower));
    }
    out.sort();
    out.dedup();
    out
}

/// The base64 characters that depend only on `bytes`, for each of the 3 alignments `bytes` can have
/// inside a longer base64 text (standard alphabet).
fn base64_cores(bytes: &[u8]) -> Vec<String> {
    let n = bytes.len();
    let mut out = Vec::new();
    for k in 0..3 {
        let mut buf = vec![0u8; k];
        buf.extend_from_slice(bytes);
        let enc = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&buf);
        // Character i holds bits [6i, 6i + 6) of the input: keep those inside `bytes`.
        let first = (8 * k).div_ceil(6);
        let last = (8 * (k + n)) / 6;
        if let Some(core) = enc.get(first..last) {
            out.push(core.to_string());
        }
    }
    out
}

/// A base64 core as a pattern (`/` also as `\/` or `%2F`, `+` as `%2B`).
fn base64_pattern(core: &str) -> String {
    core.chars()
        .map(|c| match c {
            '/' => r"(?:/|\\/|%2[fF])".to_string(),
            '+' => r"(?:\+|%2[bB])".to_string(),
            c => regex::escape(c.encode_utf8(&mut [0; 4])),
        })
        .collect()
}

fn build(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(pattern)
        .size_limit(64 << 20)
        .dfa_size_limit(64 << 20)
        .build()
        .ok()
}

fn is_base64_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"+/_-\\%".contains(&b)
}

impl Redactor {
    /// A redactor for `secrets` (client secret, username, password: every form is masked) and
    /// `tokens` (tokens just received: masked raw and in textual forms, not as base64). With
    /// `client_id`, `base64(id ":" secret)` of each secret's sent forms is masked too.
    pub fn new<'a>(
        secrets: impl IntoIterator<Item = &'a str>,
        tokens: impl IntoIterator<Item = &'a str>,
        client_id: Option<&str>,
    ) -> Redactor {
        let mut r = Redactor {
            rules: Vec::new(),
            credentials: Vec::new(),
            broken: false,
        };
        let mut values: Vec<(&str, bool)> = secrets
            .into_iter()
            .map(|s| (s, true))
            .chain(tokens.into_iter().map(|s| (s, false)))
            .filter(|(s, _)| !s.is_empty())
            .collect();
        // Longer first: a secret that contains another is masked whole.
        values.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        for (value, all_forms) in values {
            if all_forms {
                if let Some(id) = client_id {
                    for id in sent_forms(id) {
                        for sec in sent_forms(value) {
                            let pair = format!("{id}:{sec}");
                            for engine in [
                                base64::engine::general_purpose::STANDARD,
                                base64::engine::general_purpose::URL_SAFE,
                            ] {
                                let b = engine.encode(&pair);
                                r.credentials.push(b.trim_end_matches('=').to_string());
                            }
                        }
                    }
                }
            }
            let len = value.chars().count();
            if len < MIN_LEN {
                continue;
            }
            let Some(text) = build(&text_pattern(value)) else {
                r.broken = true;
                continue;
            };
            let mut base64 = None;
            if all_forms && value.len() <= MAX_BASE64_LEN {
                let mut cores: Vec<String> = Vec::new();
                for form in sent_forms(value) {
                    for core in base64_cores(form.as_bytes()) {
                        let url_safe = core.replace('+', "-").replace('/', "_");
                        cores.push(core);
                        cores.push(url_safe);
                    }
                }
                cores.retain(|c| c.len() >= MIN_LEN);
                cores.sort();
                cores.dedup();
                if !cores.is_empty() {
                    let alts: Vec<String> = cores.iter().map(|c| base64_pattern(c)).collect();
                    base64 = build(&format!("(?:{})", alts.join("|")));
                    if base64.is_none() {
                        r.broken = true;
                    }
                }
            }
            r.rules.push(Rule { text, base64, len });
        }
        r.credentials.sort_by_key(|c| std::cmp::Reverse(c.len()));
        r.credentials.dedup();
        r
    }

    /// `text` with every form of every secret replaced by `[redacted len=N]` (N: the secret's length
    /// in characters, or the base64 run's), or [`WITHHELD`] when the patterns could not be built.
    pub fn mask(&self, text: &str) -> String {
        if self.broken {
            return WITHHELD.to_string();
        }
        // Ranges of `text` to mask, with the length shown.
        let mut found: Vec<(usize, usize, usize)> = Vec::new();
        self.find(text, &(0..=text.len()).collect::<Vec<_>>(), &mut found);
        for (fold, replacement) in FOLDS {
            let Some(fold) = build(fold) else {
                return WITHHELD.to_string();
            };
            // `at[i]`: where byte i of `flat` was in `text`.
            let mut flat = String::with_capacity(text.len());
            let mut at: Vec<usize> = Vec::with_capacity(text.len() + 1);
            let mut last = 0;
            for m in fold.find_iter(text) {
                flat.push_str(&text[last..m.start()]);
                at.extend(last..m.start());
                flat.push_str(replacement);
                at.extend(std::iter::repeat_n(m.start(), replacement.len()));
                last = m.end();
            }
            if last == 0 {
                continue;
            }
            flat.push_str(&text[last..]);
            at.extend(last..text.len());
            at.push(text.len());
            self.find(&flat, &at, &mut found);
        }
        if found.is_empty() {
            return text.to_string();
        }
        found.sort();
        let mut merged: Vec<(usize, usize, usize)> = Vec::new();
        for (s, e, n) in found {
            match merged.last_mut() {
                Some(m) if s < m.1 => m.1 = m.1.max(e),
                _ => merged.push((s, e, n)),
            }
        }
        let mut out = String::with_capacity(text.len());
        let mut pos = 0;
        for (s, e, n) in merged {
            out.push_str(&text[pos..s]);
            out.push_str(&redacted_len(n));
            pos = e;
        }
        out.push_str(&text[pos..]);
        out
    }

    /// Adds the ranges of every secret's forms in `flat`, as ranges of the original text (`at`).
    fn find(&self, flat: &str, at: &[usize], found: &mut Vec<(usize, usize, usize)>) {
        // From where the first byte was to just after the last one.
        let mut add = |s: usize, e: usize, n: usize| found.push((at[s], at[e - 1] + 1, n));
        for c in &self.credentials {
            for (i, _) in flat.match_indices(c.as_str()) {
                add(i, i + c.len(), c.len());
            }
        }
        for rule in &self.rules {
            if let Some(re) = &rule.base64 {
                for (s, e, n) in base64_runs(flat, re) {
                    add(s, e, n);
                }
            }
            for m in rule.text.find_iter(flat) {
                add(m.start(), m.end(), rule.len);
            }
        }
    }
}

/// The whole base64 run around each match of `re`: (start, end, length in characters).
fn base64_runs(text: &str, re: &Regex) -> Vec<(usize, usize, usize)> {
    let bytes = text.as_bytes();
    re.find_iter(text)
        .map(|m| {
            let (mut s, mut e) = (m.start(), m.end());
            // Left: base64 characters (not `=`, which only ends a run).
            while s > 0 && is_base64_byte(bytes[s - 1]) {
                s -= 1;
            }
            while e < bytes.len() && (is_base64_byte(bytes[e]) || bytes[e] == b'=') {
                e += 1;
            }
            (s, e, e - s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    const SECRET: &str = "s~e cr+e/t&k=y-é€😀";

    fn json_escaped(s: &str, upper: bool) -> String {
        let mut out = String::new();
        for c in s.chars() {
            if c == '/' {
                out.push_str("\\/");
            } else if c.is_ascii() {
                out.push(c);
            } else {
                for u in c.encode_utf16(&mut [0; 2]).iter() {
                    let h = format!("\\u{u:04x}");
                    out.push_str(&if upper {
                        h.to_uppercase().replace("\\U", "\\u")
                    } else {
                        h
                    });
                }
            }
        }
        out
    }

    #[test]
    fn every_encoded_form_of_a_secret_is_masked() {
        let r = Redactor::new([SECRET], [], Some("my client"));
        let mut forms = sent_forms(SECRET);
        forms.push(json_escaped(SECRET, false));
        forms.push(json_escaped(SECRET, true));
        // A mix: `~` encoded, the rest raw, lower-case hex.
        forms.push(SECRET.replace('~', "%7e"));
        forms.push(STANDARD.encode(SECRET));
        forms.push(URL_SAFE_NO_PAD.encode(SECRET));
        for id in ["my+client", "my%20client"] {
            for sec in sent_forms(SECRET) {
                forms.push(STANDARD.encode(format!("{id}:{sec}")));
            }
        }
        // base64 at every alignment inside a longer text.
        for prefix in ["", "a", "ab"] {
            forms.push(STANDARD.encode(format!("{prefix}{SECRET}")));
        }
        // Split by line folds, raw and JSON-escaped.
        forms.push(SECRET.replacen("cr", "c\r\n r", 1));
        forms.push(SECRET.replacen("cr", "c\\r\\n\\tr", 1));
        // ... also inside an escape.
        forms.push(SECRET.replacen('~', "%7\r\n E", 1));
        forms.push(json_escaped(SECRET, false).replacen("u00e9", "u0\\n 0e9", 1));
        forms.push(
            STANDARD.encode(SECRET).split_at(5).0.to_string()
                + "\r\n "
                + STANDARD.encode(SECRET).split_at(5).1,
        );
        for f in &forms {
            let text = format!("before {f} after");
            let out = r.mask(&text);
            assert!(!out.contains(f.as_str()), "{f:?} in {out:?}");
            assert!(
                out.starts_with("before ") && out.ends_with(" after"),
                "{out:?}"
            );
            assert!(out.contains("[redacted len="), "{out:?}");
        }
    }

    #[test]
    fn other_text_is_left_alone_and_short_values_are_not_masked() {
        let r = Redactor::new(["abc", "hunter2-canary"], ["tok-123456"], None);
        let text = "grant_type=client_credentials&scope=abc read";
        assert_eq!(r.mask(text), text);
        assert_eq!(
            r.mask("x hunter2-canary tok-123456 y"),
            "x [redacted len=14] [redacted len=10] y"
        );
    }

    #[test]
    fn cores_are_the_characters_that_depend_on_the_secret_only() {
        for prefix in ["", "x", "xy", "xyz", "wxyz"] {
            let whole = STANDARD.encode(format!("{prefix}secret-value"));
            assert!(
                base64_cores(b"secret-value")
                    .iter()
                    .any(|c| whole.contains(c.as_str())),
                "{prefix}"
            );
        }
    }
}
