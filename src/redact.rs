//! The one masking function for reports that may quote what an identity provider echoed back (the
//! "test authorization" report of `authsidecar test-auth` and `POST /admin/profiles/{name}/test`).
//!
//! An echoing token endpoint shows a secret not only as it is but in the forms it travelled in, so a
//! [`Redactor`] is built from the profile's secret values and masks every form of each. Each
//! character of a secret may be written in any of these ways, in any mix:
//!
//! - raw;
//! - percent-encoded, byte by byte, with upper- or lower-case hex, once or more (`%26`, `%2526`,
//!   `%252526`); a space also as `+` (form encoding) or that `+` encoded again (`%2B`, `%252B`);
//! - JSON-escaped: `\u00XX` (either case, UTF-16 surrogate pairs for characters outside the BMP),
//!   `\/`, `\"`, `\\` and the short control escapes, with the backslash itself escaped any number
//!   of times (`\\u0026`, `\\\"`: a JSON text quoted in another) or percent-encoded (`%5Cu0026`);
//! - `\xHH` per UTF-8 byte (C, Python);
//! - an HTML entity: `&amp;` `&lt;` `&gt;` `&quot;` `&apos;` (any letter case), decimal (`&#39;`,
//!   `&#90;`) or hex (`&#x5A;`, `&#X5a;`) for any character, with or without leading zeros or the
//!   final `;`, escaped again (`&amp;lt;`), percent-encoded (`%26lt%3B`) or JSON-escaped
//!   (`\u0026lt;`, as Go writes `&`).
//!
//! The whole secret may also be:
//! - the hex of the bytes of one of its [`sent_forms`] (either case, inside a longer hex dump too);
//! - split by a line fold (CRLF or LF then spaces or tabs, raw or JSON-escaped) between any two
//!   characters;
//! - base64 (standard and URL-safe alphabets, padded or not) of the secret in its raw and
//!   form-encoded forms at any alignment, with `+` and `/` also JSON-escaped, percent-encoded (once
//!   or more) or HTML entities: this covers the secret's own base64 and
//!   `Authorization: Basic base64(id ":" secret)`. The whole base64 run that contains it is masked.
//!
//! The forms are built once per [`Redactor`] (one per report) as one regular expression per secret
//! whose size grows linearly with the secret's length (a few hundred bytes of pattern per
//! character), never with the text masked: the layered encodings are patterns inside patterns
//! (`%(?:25)*`, a backslash repeated), not an enumeration of combinations.
//!
//! A secret shorter than [`MIN_LEN`] characters is not masked on its own, in any form (it would mask
//! ordinary words and entities such as `&lt;`); `base64(client_id ":" secret)` is masked whatever the
//! secret's length. The hex form of a secret at that length is 8 hex digits, which ordinary hex
//! (trace ids, hashes) holds by chance about once in 4 billion positions. Received tokens (which may
//! be kilobytes long) get only the raw, percent-encoded and JSON-escaped forms (each once or more),
//! not HTML entities, `\xHH`, hex or base64: that keeps their pattern about as small as before (an
//! 8 KiB token builds in a few hundred milliseconds). If the patterns cannot be built,
//! [`Redactor::mask`] withholds the text entirely rather than show it unmasked.

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
    /// Every textual form (see the module documentation) and the hex forms.
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

/// The start of a percent escape, encoded once or more (`%`, `%25`, `%2525`, …).
const PCT: &str = "%(?:25)*";

/// The start of a JSON or C escape: a backslash, itself escaped any number of times (`\`, `\\`,
/// `\\\`, … as a string escaped twice or more has them), or percent-encoded (`%5C`).
const BS: &str = r"(?:\\|%(?:25)*5[cC])+";

/// The start of an HTML entity: `&` raw, JSON-escaped (`\u0026`, as Go's encoder writes it),
/// or percent-encoded; then any number of `amp;` (HTML-escaped twice or more).
const AMP: &str = r"(?:&|(?:\\|%(?:25)*5[cC])+u0026|%(?:25)*26)(?:[aA][mM][pP];)*";

/// `#` of a numeric entity, raw or percent-encoded.
const HASH: &str = "(?:#|%(?:25)*23)";

/// The `;` that ends an entity: raw, percent-encoded, or left out (HTML accepts `&lt` and `&#60`).
const SEMI: &str = "(?:;|%(?:25)*3[bB])?";

/// One case-insensitive hex digit as a pattern.
fn hex_digit(n: u8) -> String {
    let d = char::from_digit(u32::from(n & 15), 16).unwrap_or('0');
    if d.is_ascii_digit() {
        d.to_string()
    } else {
        format!("[{d}{}]", d.to_ascii_uppercase())
    }
}

/// Two case-insensitive hex digits.
fn hex_byte(b: u8) -> String {
    hex_digit(b >> 4) + &hex_digit(b)
}

/// A number in case-insensitive hex, without leading zeros.
fn hex_number(n: u32) -> String {
    format!("{n:x}")
        .bytes()
        .map(|d| match d {
            b'a'..=b'f' => format!("[{}{}]", d as char, d.to_ascii_uppercase() as char),
            d => (d as char).to_string(),
        })
        .collect()
}

/// `c` raw or as an HTML entity: named (`&amp;` `&lt;` `&gt;` `&quot;` `&apos;`, any letter case),
/// decimal (`&#90;`) or hex (`&#x5A;`), with leading zeros or none, HTML-escaped more than once.
fn literal(c: char) -> String {
    let name = match c {
        '&' => "[aA][mM][pP]",
        '<' => "[lL][tT]",
        '>' => "[gG][tT]",
        '"' => "[qQ][uU][oO][tT]",
        '\'' => "[aA][pP][oO][sS]",
        _ => "",
    };
    let cp = u32::from(c);
    let mut entity = format!("{HASH}(?:0*{cp}|[xX]0*{})", hex_number(cp));
    if !name.is_empty() {
        entity = format!("{name}|{entity}");
    }
    // The raw character last: the regex prefers earlier alternatives, and `&` must not stop a match
    // before the `amp;` that follows it.
    format!(
        "(?:{AMP}(?:{entity}){SEMI}|{})",
        regex::escape(c.encode_utf8(&mut [0; 4]))
    )
}

/// Every way one character of a secret may be written. Each escape's own special characters (`%`,
/// `\`, `&`, `#`, `;`) are patterns too, so layers of encoding combine: `%2526` (percent-encoded
/// twice), `\\u0026` (JSON-escaped twice), `&amp;lt;`, `%26lt%3B`, `\u0026lt;`, … Without `full`
/// (received tokens, which may be kilobytes long) only raw, percent-encoded and JSON-escaped.
fn char_pattern(c: char, full: bool) -> String {
    let mut utf8 = [0; 4];
    let bytes = c.encode_utf8(&mut utf8).as_bytes();
    let raw = regex::escape(c.encode_utf8(&mut [0; 4]));
    // Percent-encoded, per UTF-8 byte.
    let mut alts = vec![bytes
        .iter()
        .map(|&b| format!("{PCT}{}", hex_byte(b)))
        .collect()];
    if c == ' ' {
        // Form encoding: `+`, then that `+` encoded again.
        alts.push(if full { literal('+') } else { r"\+".into() });
        alts.push(format!("{PCT}2[bB]"));
    }
    // After a backslash: JSON `\uXXXX` per UTF-16 unit, `\xHH` per UTF-8 byte (C, Python), or a
    // JSON short escape.
    let mut escaped = Vec::new();
    let mut json = "u".to_string();
    for (i, unit) in c.encode_utf16(&mut [0; 2]).iter().enumerate() {
        if i > 0 {
            json.push_str(&format!("{BS}u"));
        }
        for shift in [12, 8, 4, 0] {
            json.push_str(&hex_digit((unit >> shift) as u8));
        }
    }
    escaped.push(json);
    if full {
        let x: Vec<String> = bytes
            .iter()
            .map(|&b| format!("[xX]{}", hex_byte(b)))
            .collect();
        escaped.push(x.join(BS));
    }
    let short = match c {
        '/' | '"' | '\\' => Some(c),
        '\n' => Some('n'),
        '\r' => Some('r'),
        '\t' => Some('t'),
        '\u{8}' => Some('b'),
        '\u{c}' => Some('f'),
        _ => None,
    };
    if let Some(s) = short {
        escaped.push(if full {
            // Percent-encoded too when the escaped text went into a URL (`%5C%22`).
            format!("{PCT}{}|{}", hex_byte(s as u8), literal(s))
        } else {
            regex::escape(s.encode_utf8(&mut [0; 4]))
        });
    }
    alts.push(format!("{BS}(?:{})", escaped.join("|")));
    // Raw (or an HTML entity) last, for the reason given in `literal`.
    alts.push(if full { literal(c) } else { raw });
    format!("(?:{})", alts.join("|"))
}

/// The pattern of every textual form of `secret`: the forms of each character above, in any mix,
/// or the hex of the bytes of one of its sent forms (either letter case).
fn text_pattern(secret: &str, full: bool) -> String {
    let chars: String = secret.chars().map(|c| char_pattern(c, full)).collect();
    if !full {
        return chars;
    }
    let hex: Vec<String> = sent_forms(secret)
        .iter()
        .map(|f| f.bytes().map(hex_byte).collect())
        .collect();
    format!("{chars}|{}", hex.join("|"))
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

/// A base64 core as a pattern (`/` and `+` also JSON-escaped, percent-encoded or as HTML entities).
fn base64_pattern(core: &str) -> String {
    core.chars()
        .map(|c| match c {
            '/' => format!("(?:{}|{BS}/|{PCT}2[fF])", literal('/')),
            '+' => format!("(?:{}|{PCT}2[bB])", literal('+')),
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
            let Some(text) = build(&text_pattern(value, all_forms)) else {
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

    /// Every character the new forms treat specially, a space and non-ASCII (2-, 3- and 4-byte).
    const SPECIAL: &str = "Q&<>\"'+/=% ü€😀9";

    /// `s` HTML-escaped as most templates do (`&#39;` for `'`).
    fn html(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
    }

    /// Each character for which `pick` holds as a numeric entity (`hex`: `&#x5A;`, else `&#90;`).
    fn entities(s: &str, hex: bool, upper: bool, pick: impl Fn(usize, char) -> bool) -> String {
        s.chars()
            .enumerate()
            .map(|(i, c)| match (pick(i, c), hex, upper) {
                (false, ..) => c.to_string(),
                (true, false, _) => format!("&#{};", u32::from(c)),
                (true, true, false) => format!("&#x{:x};", u32::from(c)),
                (true, true, true) => format!("&#x{:X};", u32::from(c)),
            })
            .collect()
    }

    /// Percent-encodes every byte but ASCII letters and digits (upper-case hex).
    fn pct_all(s: &str) -> String {
        pct_hex(s, false)
    }

    fn pct_hex(s: &str, lower: bool) -> String {
        s.bytes()
            .map(|b| match (b.is_ascii_alphanumeric(), lower) {
                (true, _) => (b as char).to_string(),
                (false, false) => format!("%{b:02X}"),
                (false, true) => format!("%{b:02x}"),
            })
            .collect()
    }

    /// JSON-escapes `s` as Go's encoder does: `"` `\\` escaped, `&` `<` `>` and non-ASCII as `\uXXXX`.
    fn json_go(s: &str) -> String {
        let mut out = String::new();
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_ascii() && !"&<>".contains(c) => out.push(c),
                c => {
                    for u in c.encode_utf16(&mut [0; 2]).iter() {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
            }
        }
        out
    }

    /// Asserts that every form is masked inside ordinary text, and the text around it is kept.
    fn assert_all_masked(r: &Redactor, forms: &[String]) {
        for f in forms {
            for text in [format!("before {f} after"), format!("x={f}&y=1"), f.clone()] {
                let out = r.mask(&text);
                assert!(!out.contains(f.as_str()), "{f:?} in {out:?}");
                assert!(out.contains("[redacted len="), "{f:?}: {out:?}");
                if text.starts_with("before") {
                    assert!(
                        out.starts_with("before ") && out.ends_with(" after"),
                        "{f:?}: {out:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn html_escaped_secrets_are_masked() {
        let r = Redactor::new([SPECIAL], [], None);
        let forms = vec![
            html(SPECIAL),
            html(SPECIAL).replace("&#39;", "&apos;"),
            html(SPECIAL).replace("&#39;", "&#039;"),
            // Escaped twice and three times.
            html(&html(SPECIAL)),
            html(&html(&html(SPECIAL))),
            // Upper-case names, and no `;` (HTML accepts both).
            html(SPECIAL)
                .replace("&amp;", "&AMP;")
                .replace("&lt;", "&LT;"),
            html(SPECIAL).replace("&gt;", "&gt"),
            // HTML-escaped, then percent-encoded or JSON-escaped (Go writes `&` as `\u0026`).
            pct_all(&html(SPECIAL)),
            json_go(&html(SPECIAL)),
        ];
        assert_all_masked(&r, &forms);
    }

    #[test]
    fn numeric_html_entities_are_masked_for_every_character_or_some() {
        let r = Redactor::new([SPECIAL], [], None);
        let mut forms = Vec::new();
        for (hex, upper) in [(false, false), (true, false), (true, true)] {
            forms.push(entities(SPECIAL, hex, upper, |_, _| true));
            forms.push(entities(SPECIAL, hex, upper, |i, _| i % 2 == 0));
            forms.push(entities(SPECIAL, hex, upper, |_, c| {
                !c.is_ascii_alphanumeric()
            }));
            forms.push(entities(SPECIAL, hex, upper, |_, c| c == '/'));
        }
        // Leading zeros, `&#X…`, no `;`, and entities HTML-escaped once more.
        forms.push(SPECIAL.replace('/', "&#0047;").replace('=', "&#X3D;"));
        forms.push(SPECIAL.replace('/', "&#47"));
        forms.push(entities(SPECIAL, true, false, |_, _| true).replace('&', "&amp;"));
        // A mix with the older forms: percent-encoded and JSON-escaped characters.
        forms.push(
            entities(SPECIAL, false, false, |i, _| i < 4)
                .replace(' ', "+")
                .replace('€', "\\u20ac"),
        );
        assert_all_masked(&r, &forms);
    }

    #[test]
    fn secrets_percent_encoded_twice_are_masked() {
        let r = Redactor::new([SPECIAL], [], None);
        let mut forms = Vec::new();
        for once in sent_forms(SPECIAL) {
            forms.push(pct_all(&once));
            forms.push(pct_hex(&pct_hex(&once, true), true));
            // Three times.
            forms.push(pct_all(&pct_all(&once)));
        }
        // Only some escapes encoded again.
        forms.push(pct_all(SPECIAL).replacen('%', "%25", 3));
        assert!(forms.iter().any(|f| f.contains("%2526")), "{forms:?}");
        assert_all_masked(&r, &forms);
    }

    #[test]
    fn hex_of_a_secrets_bytes_is_masked() {
        let r = Redactor::new([SPECIAL], [], None);
        let mut forms = Vec::new();
        for s in sent_forms(SPECIAL) {
            let lower: String = s.bytes().map(|b| format!("{b:02x}")).collect();
            forms.push(lower.to_uppercase());
            forms.push(lower);
        }
        // Inside a longer hex dump, and as `\xHH` escapes (C, Python bytes).
        let dump: String = format!("id=1&client_secret={SPECIAL}&x")
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        let escaped: String = SPECIAL.bytes().map(|b| format!("\\x{b:02x}")).collect();
        let masked = r.mask(&dump);
        let end = format!("{}2678", redacted_len(SPECIAL.chars().count()));
        assert!(
            masked.starts_with("69643d3126") && masked.ends_with(&end),
            "{masked}"
        );
        forms.push(escaped);
        assert_all_masked(&r, &forms);
    }

    #[test]
    fn secrets_json_escaped_twice_are_masked() {
        let r = Redactor::new([SPECIAL], [], None);
        // A JSON document quoted as a string inside another (and a third time).
        let once = json_go(SPECIAL);
        let twice = json_go(&once);
        let thrice = json_go(&twice);
        assert!(
            twice.contains("\\\\u0026") && twice.contains("\\\\\\\""),
            "{twice}"
        );
        let slashes = json_escaped(SPECIAL, false);
        let forms = vec![
            once,
            twice,
            thrice,
            json_go(&slashes),
            // JSON inside a URL: `\` percent-encoded.
            pct_all(&json_go(SPECIAL)),
        ];
        assert_all_masked(&r, &forms);
    }

    #[test]
    fn basic_credentials_are_masked_in_every_alignment_and_encoding() {
        let r = Redactor::new([SPECIAL], [], Some("my client"));
        let mut forms = Vec::new();
        for id in ["my+client", "my%20client"] {
            for sec in sent_forms(SPECIAL) {
                let b64 = STANDARD.encode(format!("{id}:{sec}"));
                forms.push(format!("Basic {b64}"));
                // Quoted in HTML or a URL: `+` `/` `=` escaped.
                forms.push(html(&b64).replace('/', "&#x2F;").replace('+', "&#43;"));
                forms.push(pct_all(&pct_all(&b64)));
                forms.push(b64.replace('/', "\\\\/"));
            }
        }
        // The secret's own base64 inside a longer text, each alignment.
        for prefix in ["", "a", "ab"] {
            forms.push(STANDARD.encode(format!("{prefix}{SPECIAL}")));
            forms.push(URL_SAFE_NO_PAD.encode(format!("{prefix}{SPECIAL}")));
        }
        assert_all_masked(&r, &forms);
    }

    #[test]
    fn ordinary_text_with_escapes_is_left_alone() {
        let r = Redactor::new(
            [SPECIAL, "hunter2-canary"],
            ["tok-123456"],
            Some("my client"),
        );
        let text = concat!(
            "<p title=\"a&amp;b\">&lt;x&gt; &#90;&#x5A; &apos;q&apos; &quot;</p>\n",
            "error_uri=https://idp.example/help?req=grant_type%3Dclient_credentials%2526scope%253Dread\n",
            "{\"nested\":\"{\\\"a\\\":\\\"\\\\u0026\\\\u00e9\\\"}\"}\n",
            "trace=4f2a9c0d8e7b6a5f4e3d2c1b0a998877 sha=deadbeefcafebabe \\x41\\x42\n",
            "Basic bXkgY2xpZW50Om90aGVyLXNlY3JldA== hunter2 hunter2-canar",
        );
        assert_eq!(r.mask(text), text);
        // The old rule stands: a value under MIN_LEN characters is not masked on its own, in any form.
        let short = Redactor::new(["&<>"], [], None);
        let text = "a &amp;&lt;&gt; b %2526%253C%253E c 263c3e";
        assert_eq!(short.mask(text), text);
    }

    #[test]
    fn patterns_stay_small_for_long_secrets_and_tokens() {
        let secret: String = SPECIAL.chars().cycle().take(MAX_BASE64_LEN).collect();
        let token: String = "eyJhbGciOiJSUzI1NiJ9.abc-_"
            .chars()
            .cycle()
            .take(4096)
            .collect();
        let r = Redactor::new([secret.as_str()], [token.as_str()], Some("id"));
        assert!(!r.broken);
        let text = format!("a {} b {} c", html(&secret), token);
        assert_eq!(
            r.mask(&text),
            "a [redacted len=512] b [redacted len=4096] c"
        );
    }
}
