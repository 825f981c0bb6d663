//! Log output: text or JSON lines on stderr, levels from `RUST_LOG` (default `info`).
//!
//! Every event is exactly one line. JSON escapes by itself; in text lines a CR or LF inside a
//! message or field (a value that came from a caller, an IdP or a file) is written as `\r` / `\n`,
//! so nothing can forge a second log line. Query strings in the access log have the values of
//! credential-carrying parameters replaced by `REDACTED` ([`redact_query`]).

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Installs the global subscriber.
pub fn init(format: Format) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into files or collectors.
    let ansi = io::IsTerminal::is_terminal(&io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(OneLine(io::stderr));
    match format {
        Format::Text => builder.init(),
        Format::Json => builder.json().init(),
    }
}

/// A [`MakeWriter`] whose writers turn CR and LF inside an event into `\r` and `\n`; only the
/// event's final newline stays.
#[derive(Clone, Copy)]
pub struct OneLine<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = OneLineWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter(self.0.make_writer())
    }
}

pub struct OneLineWriter<W>(W);

/// `buf` with CR/LF escaped, except one trailing LF.
pub fn escape_line(buf: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let (body, end) = match buf.strip_suffix(b"\n") {
        Some(b) => (b, &b"\n"[..]),
        None => (buf, &b""[..]),
    };
    if !body.iter().any(|b| *b == b'\n' || *b == b'\r') {
        return std::borrow::Cow::Borrowed(buf);
    }
    let mut out = Vec::with_capacity(buf.len() + 8);
    for b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b => out.push(*b),
        }
    }
    out.extend_from_slice(end);
    std::borrow::Cow::Owned(out)
}

impl<W: Write> Write for OneLineWriter<W> {
    // The fmt layer formats a whole event into one buffer and writes it at once.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&escape_line(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Query parameter names whose values are always written as `REDACTED` (compared without case).
pub const SECRET_QUERY_NAMES: &[&str] = &[
    "access_token",
    "refresh_token",
    "id_token",
    "token",
    "code",
    "state",
    "client_secret",
    "password",
    "secret",
    "api_key",
    "apikey",
    "key",
    "sig",
    "signature",
    "auth",
    "authorization",
];

/// `query` with the value of every parameter named in [`SECRET_QUERY_NAMES`] or in `extra` (the
/// names a profile injects) replaced by `REDACTED`. Other parameters are kept as sent.
pub fn redact_query(query: &str, extra: &[String]) -> String {
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        let decoded = percent_encoding::percent_decode_str(&name.replace('+', " "))
            .decode_utf8_lossy()
            .to_ascii_lowercase();
        let secret = SECRET_QUERY_NAMES.contains(&decoded.as_str())
            || extra.iter().any(|e| e.eq_ignore_ascii_case(&decoded));
        if secret && pair.contains('=') {
            out.push_str(name);
            out.push_str("=REDACTED");
        } else {
            out.push_str(pair);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_is_one_line() {
        assert_eq!(&*escape_line(b"plain\n"), b"plain\n");
        assert_eq!(
            &*escape_line(b"a\r\nforged: line\nend\n"),
            b"a\\r\\nforged: line\\nend\n"
        );
        assert_eq!(&*escape_line(b"no newline\rx"), b"no newline\\rx");
        let mut out = Vec::new();
        OneLineWriter(&mut out).write_all(b"x\ny\n").unwrap();
        assert_eq!(out, b"x\\ny\n");
    }

    #[test]
    fn credential_query_values_are_redacted() {
        let extra = vec!["sig-param".to_string()];
        assert_eq!(
            redact_query(
                "limit=5&access_token=abc&Api_Key=k&x=1&sig-param=zz&code",
                &extra
            ),
            "limit=5&access_token=REDACTED&Api_Key=REDACTED&x=1&sig-param=REDACTED&code"
        );
        assert_eq!(redact_query("%74oken=abc", &[]), "%74oken=REDACTED");
        assert_eq!(redact_query("a=1&b=2", &[]), "a=1&b=2");
    }
}
