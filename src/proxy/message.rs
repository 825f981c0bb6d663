//! HTTP/1 message rules (RFC 9112, RFC 9110), written once for every front end and transport:
//! `Connection` options, `Transfer-Encoding` and `Content-Length` of requests and answers, how an
//! answer's body is delimited, which answer header fields reach the caller, and the limits on an
//! upstream answer's head. The HTTP/1 fast path applies them to the bytes it parses; the general
//! path applies them to the header maps hyper builds.

use http::{HeaderMap, Method};

use crate::error::{ErrorCode, ProxyError};

/// Most header fields in an upstream answer's head, on every path.
pub const MAX_ANSWER_HEADERS: usize = 128;
/// Largest upstream answer head (status line and header fields), on every path.
pub const MAX_ANSWER_HEAD: usize = 64 * 1024;
/// Most interim (1xx) answers before the final one; more is a broken upstream.
pub const MAX_INTERIM_ANSWERS: usize = 16;
/// Most trailer fields in a chunked answer body; more fails the body (hyper's client applies its
/// header-field limit, `MAX_ANSWER_HEADERS`, to trailers).
pub const MAX_TRAILER_FIELDS: usize = MAX_ANSWER_HEADERS;
/// A chunked answer body's trailer section (its fields and final CRLF) must stay under this many
/// bytes, or the body fails (hyper's limit).
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Chunk-extension bytes in one chunked answer body (all its chunk-size lines together) must stay
/// under this, or the body fails (hyper's limit).
pub const MAX_CHUNK_EXTENSION_BYTES: u64 = 16 * 1024;

/// A `Connection` header's options: `close`, `keep-alive`, and the other names it lists (lowercase),
/// which are hop-by-hop for this message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConnectionOptions {
    pub close: bool,
    pub keep_alive: bool,
    pub listed: Vec<String>,
}

/// Reads every `Connection` value of a message.
pub fn connection_options<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> ConnectionOptions {
    let mut o = ConnectionOptions::default();
    for v in values {
        for t in v.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if t.eq_ignore_ascii_case(b"close") {
                o.close = true;
            } else if t.eq_ignore_ascii_case(b"keep-alive") {
                o.keep_alive = true;
            } else if !t.is_empty() {
                o.listed
                    .push(String::from_utf8_lossy(t).to_ascii_lowercase());
            }
        }
    }
    o
}

/// A request's `Transfer-Encoding` (RFC 9112 §6.1): `Ok(true)` when it is `chunked`, once and
/// alone; `Ok(false)` when there is none; any other coding, or `chunked` twice, is refused.
pub fn request_chunked<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<bool, &'static str> {
    let (mut chunked, mut other) = (0usize, false);
    for v in values {
        for c in v.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if c.eq_ignore_ascii_case(b"chunked") {
                chunked += 1;
            } else if !c.is_empty() {
                other = true;
            }
        }
    }
    if other || chunked > 1 {
        return Err(
            "Transfer-Encoding must be chunked, once: other or repeated codings are refused",
        );
    }
    Ok(chunked == 1)
}

/// An answer's `Transfer-Encoding`: `None` without one, else whether its last coding is `chunked`
/// (anything else runs until the upstream closes).
pub fn answer_chunked<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<bool> {
    let mut last = None;
    for v in values {
        if let Some(t) = v
            .rsplit(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .find(|t| !t.is_empty())
        {
            last = Some(t.eq_ignore_ascii_case(b"chunked"));
        } else if last.is_none() {
            last = Some(false);
        }
    }
    last
}

/// Every `Content-Length` value of a message, which must agree: `Ok(None)` without one.
pub fn content_length<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<u64>, &'static str> {
    let mut length: Option<u64> = None;
    for v in values {
        // Usually one value of digits alone.
        if let Some(n) = digits(v) {
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length values");
            }
            length = Some(n);
            continue;
        }
        for part in v.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            let n = digits(part).ok_or("invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length values");
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// A non-empty run of ASCII digits as a number (none on overflow or any other byte).
fn digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() {
        return None;
    }
    b.iter().try_fold(0u64, |n, &c| {
        if c.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(c - b'0'))
        } else {
            None
        }
    })
}

/// How an answer's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes: the caller's connection closes after it too.
    Close,
}

/// What kind of answer a status is, for a proxy that never asked to switch protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    /// 1xx other than 101: skipped; the final answer follows.
    Interim,
    Final,
}

/// Checks an upstream answer's status: below 100 is invalid, 101 is refused (the sidecar never
/// forwards `Upgrade`, so no upstream was asked to switch), other 1xx are interim.
pub fn answer_status(status: u16) -> Result<StatusKind, ProxyError> {
    match status {
        0..=99 => Err(invalid_answer("the answer's status is not 100-999")),
        101 => Err(invalid_answer("the upstream switched protocols unasked")),
        100..=199 => Ok(StatusKind::Interim),
        _ => Ok(StatusKind::Final),
    }
}

/// The answer's framing for a request with `method` (RFC 9112 §6.3): a HEAD answer, 204 and 304
/// have no body; `Transfer-Encoding` wins over `Content-Length`; a coding other than chunked, or
/// neither header, runs until close.
pub fn answer_framing(
    method: &Method,
    status: u16,
    chunked: Option<bool>,
    length: Option<u64>,
) -> Framing {
    let bodiless = *method == Method::HEAD || status == 204 || status == 304;
    match (bodiless, chunked, length) {
        (true, _, _) => Framing::Empty,
        (false, Some(true), _) => Framing::Chunked,
        (false, Some(false), _) => Framing::Close,
        (false, None, Some(n)) => Framing::Length(n),
        (false, None, None) => Framing::Close,
    }
}

/// Whether an answer header field reaches the caller (of a request with `method`): hop-by-hop
/// fields (RFC 9110 §7.6.1, and those the answer's `Connection` lists) never do. `Content-Length`
/// does only when it frames the body (`Framing::Length`), or in an answer to HEAD, and never on a
/// 204 or 304 (RFC 9110 §8.6; a proxy removes it beside `Transfer-Encoding`, RFC 9112 §6.3).
/// `Trailer` does only when the body is chunked: no other framing carries trailer fields. The
/// proxy writes its own framing fields.
pub fn answer_field_kept(
    name: &str,
    method: &Method,
    status: u16,
    framing: Framing,
    listed: &[String],
) -> bool {
    if super::headers::is_hop_by_hop(name) || listed.iter().any(|l| l.eq_ignore_ascii_case(name)) {
        return false;
    }
    if name.eq_ignore_ascii_case("content-length") {
        return !matches!(status, 204 | 304)
            && (matches!(framing, Framing::Length(_)) || *method == Method::HEAD);
    }
    if name.eq_ignore_ascii_case("trailer") {
        return framing == Framing::Chunked;
    }
    true
}

/// An answer as hyper read it, made ready for the caller by the same rules: its status checked,
/// and every field `answer_field_kept` refuses removed. Returns the framing.
pub fn clean_answer(
    method: &Method,
    status: u16,
    reason_len: usize,
    headers: &mut HeaderMap,
) -> Result<Framing, ProxyError> {
    answer_status(status)?;
    // The head as it came: status line (`HTTP/1.1 200 ` + reason + CRLF), fields, blank line.
    let head = 17
        + reason_len
        + headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head > MAX_ANSWER_HEAD {
        return Err(invalid_answer("the answer's head is too large"));
    }
    let chunked = answer_chunked(
        headers
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .map(|v| v.as_bytes()),
    );
    let length = content_length(
        headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .map(|v| v.as_bytes()),
    )
    .map_err(invalid_answer)?;
    let framing = answer_framing(method, status, chunked, length);
    let listed = connection_options(
        headers
            .get_all(http::header::CONNECTION)
            .iter()
            .map(|v| v.as_bytes()),
    )
    .listed;
    let drop: Vec<http::HeaderName> = headers
        .keys()
        .filter(|k| !answer_field_kept(k.as_str(), method, status, framing, &listed))
        .cloned()
        .collect();
    for name in drop {
        headers.remove(name);
    }
    Ok(framing)
}

/// Whether the caller accepts trailer fields in a chunked answer (`TE: trailers`, RFC 9110
/// §10.1.4), read as hyper reads it: a list element that is exactly `trailers` (`trailers` takes
/// no parameters), in a value of visible ASCII.
pub fn accepts_trailers<'a>(te_values: impl IntoIterator<Item = &'a [u8]>) -> bool {
    te_values.into_iter().any(|v| {
        v.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
            && v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
    })
}

/// The field names one `Trailer` value lists, as hyper reads them: a value that is not visible
/// ASCII lists none; names that are not valid field names are skipped.
pub fn trailer_names(value: &[u8]) -> impl Iterator<Item = http::HeaderName> + '_ {
    let text = http::HeaderValue::from_bytes(value)
        .ok()
        .and_then(|v| v.to_str().ok().map(|_| value));
    text.into_iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .filter_map(|n| http::HeaderName::from_bytes(n.trim_ascii()).ok())
}

/// Whether a trailer field the answer declared in `Trailer` may reach the caller: fields that
/// frame, route, authenticate or describe the content never do (as hyper's encoder decides).
pub fn trailer_field_allowed(name: &http::HeaderName) -> bool {
    use http::header::*;
    !matches!(
        *name,
        AUTHORIZATION
            | CACHE_CONTROL
            | CONTENT_ENCODING
            | CONTENT_LENGTH
            | CONTENT_RANGE
            | CONTENT_TYPE
            | HOST
            | MAX_FORWARDS
            | SET_COOKIE
            | TRAILER
            | TRANSFER_ENCODING
            | TE
    )
}

/// The error for an upstream answer that breaks these rules (502 `upstream_unavailable`).
pub fn invalid_answer(what: &str) -> ProxyError {
    ProxyError::new(
        ErrorCode::UpstreamUnavailable,
        format!("the upstream connection failed: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&'static str]) -> Vec<&'static [u8]> {
        s.iter().map(|x| x.as_bytes()).collect()
    }

    #[test]
    fn connection_options_are_read_from_every_value() {
        let o = connection_options(v(&["Keep-Alive, X-Hop", " close ,", "te"]));
        assert!(o.close && o.keep_alive);
        assert_eq!(o.listed, vec!["x-hop", "te"]);
        assert_eq!(connection_options(v(&[])), ConnectionOptions::default());
    }

    #[test]
    fn request_codings_other_than_one_chunked_are_refused() {
        assert_eq!(request_chunked(v(&[])), Ok(false));
        assert_eq!(request_chunked(v(&["Chunked"])), Ok(true));
        for bad in [
            &["gzip, chunked"][..],
            &["chunked", "chunked"],
            &["chunked, chunked"],
            &["identity"],
        ] {
            assert!(request_chunked(v(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn answer_codings_and_lengths() {
        assert_eq!(answer_chunked(v(&[])), None);
        assert_eq!(answer_chunked(v(&["gzip, chunked"])), Some(true));
        assert_eq!(answer_chunked(v(&["chunked, gzip"])), Some(false));
        assert_eq!(content_length(v(&["5", "5"])), Ok(Some(5)));
        assert_eq!(content_length(v(&["5, 5"])), Ok(Some(5)));
        assert!(content_length(v(&["5", "6"])).is_err());
        assert!(content_length(v(&["+5"])).is_err());
        assert!(content_length(v(&[""])).is_err());
        assert!(content_length(v(&["18446744073709551616"])).is_err());
        assert_eq!(
            content_length(v(&["18446744073709551615"])),
            Ok(Some(u64::MAX))
        );
        assert!(content_length(v(&["1 2"])).is_err());
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        let get = Method::GET;
        assert_eq!(
            answer_framing(&Method::HEAD, 200, Some(true), Some(3)),
            Framing::Empty
        );
        assert_eq!(answer_framing(&get, 204, None, Some(3)), Framing::Empty);
        assert_eq!(answer_framing(&get, 304, None, Some(3)), Framing::Empty);
        assert_eq!(
            answer_framing(&get, 200, Some(true), Some(3)),
            Framing::Chunked
        );
        assert_eq!(
            answer_framing(&get, 200, Some(false), Some(3)),
            Framing::Close
        );
        assert_eq!(answer_framing(&get, 200, None, Some(3)), Framing::Length(3));
        assert_eq!(answer_framing(&get, 200, None, None), Framing::Close);
    }

    #[test]
    fn statuses() {
        assert!(answer_status(99).is_err());
        assert!(answer_status(101).is_err());
        assert_eq!(answer_status(100).unwrap(), StatusKind::Interim);
        assert_eq!(answer_status(103).unwrap(), StatusKind::Interim);
        assert_eq!(answer_status(200).unwrap(), StatusKind::Final);
    }

    #[test]
    fn cleaning_drops_framing_and_hop_by_hop_fields() {
        let mut h = HeaderMap::new();
        h.insert("content-length", "5".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("connection", "x-hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        assert_eq!(
            clean_answer(&Method::GET, 200, 2, &mut h).unwrap(),
            Framing::Chunked
        );
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            vec!["x-keep"]
        );

        let mut h = HeaderMap::new();
        h.insert("content-length", "0".parse().unwrap());
        assert_eq!(
            clean_answer(&Method::GET, 204, 10, &mut h).unwrap(),
            Framing::Empty
        );
        assert!(h.is_empty());

        let mut h = HeaderMap::new();
        h.insert("content-length", "7".parse().unwrap());
        clean_answer(&Method::HEAD, 200, 2, &mut h).unwrap();
        assert_eq!(h["content-length"], "7");
        assert!(clean_answer(&Method::GET, 101, 19, &mut HeaderMap::new()).is_err());
    }

    #[test]
    fn framing_fields_pass_only_where_they_frame() {
        let (get, head) = (Method::GET, Method::HEAD);
        let kept =
            |name, m: &Method, status, framing| answer_field_kept(name, m, status, framing, &[]);
        assert!(kept("Content-Length", &get, 200, Framing::Length(2)));
        assert!(kept("content-length", &head, 200, Framing::Empty));
        for (m, status, framing) in [
            (&get, 304, Framing::Empty),
            (&head, 304, Framing::Empty),
            (&get, 204, Framing::Empty),
            (&get, 200, Framing::Chunked),
            (&get, 200, Framing::Close),
        ] {
            assert!(!kept("content-length", m, status, framing), "{m} {status}");
        }
        assert!(kept("Trailer", &get, 200, Framing::Chunked));
        for framing in [Framing::Empty, Framing::Length(2), Framing::Close] {
            assert!(!kept("trailer", &get, 200, framing), "{framing:?}");
        }
        assert!(!answer_field_kept(
            "trailer",
            &get,
            200,
            Framing::Chunked,
            &["trailer".into()]
        ));
    }

    #[test]
    fn trailer_names_are_read_as_hyper_reads_them() {
        let names = |v: &[u8]| trailer_names(v).map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(names(b"X-A, x-b,,bad name ,x-c"), vec!["x-a", "x-b", "x-c"]);
        assert!(names(b"x-a, \xe9").is_empty());
        assert!(!trailer_field_allowed(&http::header::CONTENT_TYPE));
        assert!(trailer_field_allowed(&http::HeaderName::from_static(
            "x-sum"
        )));
    }

    #[test]
    fn trailers_are_accepted_only_when_asked_for() {
        assert!(accepts_trailers(v(&["trailers"])));
        assert!(accepts_trailers(v(&["gzip;q=1, Trailers"])));
        assert!(!accepts_trailers(v(&["gzip"])));
        assert!(!accepts_trailers(v(&["trailers;q=1"])));
        assert!(accepts_trailers(v(&["gzip", "trailers"])));
        assert!(!accepts_trailers(v(&[])));
    }
}
