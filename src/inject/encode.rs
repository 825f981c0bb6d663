//! Encoders for the query string, form bodies and path segments.

use std::borrow::Cow;

use percent_encoding::{percent_decode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986 unreserved characters (ALPHA / DIGIT / "-" / "." / "_" / "~") is encoded.
/// Used for path segments (RFC 6570 simple expansion) and for query/form names and values, where it is
/// a valid form-urlencoding (space becomes `%20`).
pub const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub fn encode(s: &str) -> impl std::fmt::Display + '_ {
    percent_encoding::utf8_percent_encode(s, NOT_UNRESERVED)
}

/// Decodes a form-urlencoded name or value (`+` is a space).
fn decode_form_name(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.iter().any(|&b| b == b'%' || b == b'+') {
        return Cow::Borrowed(raw);
    }
    let plus: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    Cow::Owned(percent_decode(&plus).collect())
}

/// The first value named `name` among parsed form pairs, when it is not empty.
pub fn form_value(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
}

/// Parses a form-urlencoded string into decoded `(name, value)` pairs (lossy UTF-8).
pub fn parse_form(input: &[u8]) -> Vec<(String, String)> {
    input
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |&b| b == b'=');
            let n = it.next().unwrap_or_default();
            let v = it.next().unwrap_or_default();
            (
                String::from_utf8_lossy(&decode_form_name(n)).into_owned(),
                String::from_utf8_lossy(&decode_form_name(v)).into_owned(),
            )
        })
        .collect()
}

/// Decodes one form-urlencoded component.
pub fn decode_form(raw: &str) -> String {
    String::from_utf8_lossy(&decode_form_name(raw.as_bytes())).into_owned()
}

/// Appends `name=value`, both encoded, to `out`.
fn push_pair(out: &mut Vec<u8>, name: &str, value: &str) {
    use std::io::Write;
    let _ = write!(out, "{}={}", encode(name), encode(value));
}

/// Rewrites a form-urlencoded string (a query or a form body): every pair whose decoded name is one
/// of `set`'s names is removed, everything else is kept byte for byte (empty pairs too), and the new
/// pairs are appended.
pub fn rewrite_pairs(input: &[u8], set: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + 64);
    let mut first = true;
    if !input.is_empty() {
        for pair in input.split(|&b| b == b'&') {
            let name = pair.split(|&b| b == b'=').next().unwrap_or(pair);
            let decoded = decode_form_name(name);
            if !pair.is_empty() && set.iter().any(|(n, _)| n.as_bytes() == &*decoded) {
                continue;
            }
            if !first {
                out.push(b'&');
            }
            first = false;
            out.extend_from_slice(pair);
        }
    }
    for (n, v) in set {
        if !first {
            out.push(b'&');
        }
        first = false;
        push_pair(&mut out, n, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_clients_copies_and_keeps_the_rest() {
        let q = b"b=2&api_key=evil&x=%41+b&api%5Fkey=evil2&api+key=keep&&z";
        assert_eq!(
            rewrite_pairs(q, &[("api_key", "s&=+ #%é")]),
            b"b=2&x=%41+b&api+key=keep&&z&api_key=s%26%3D%2B%20%23%25%C3%A9"
        );
    }

    #[test]
    fn empty_input_gets_only_the_new_pair() {
        assert_eq!(rewrite_pairs(b"", &[("k", "v")]), b"k=v");
    }

    #[test]
    fn path_encoding_keeps_one_segment() {
        assert_eq!(encode("a/b").to_string(), "a%2Fb");
        assert_eq!(encode("%2F").to_string(), "%252F");
        assert_eq!(encode("..%2f").to_string(), "..%252f");
        assert_eq!(encode("a b?#;").to_string(), "a%20b%3F%23%3B");
    }
}
