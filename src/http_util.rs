//! Two small encoders that several listeners share: the credential of `Authorization: Basic` (static
//! `basic` profiles, end users' entered credentials, connectors, OAuth `client_secret_basic`) and HTML
//! escaping (the sign-in pages and the admin console). A leaf: no state, no I/O.

use base64::Engine;

use crate::inject::encode::encode;

/// How the user-id and the password are written before `user-id ":" password` is base64-encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BasicEncoding {
    /// As they are, in UTF-8 (RFC 7617 §2 and §2.1): static `basic` profiles, end users' credentials,
    /// a connector's `Proxy-Authorization`. The user-id must not contain `:` (RFC 7617 §2); the config
    /// and the start page refuse one before a credential is built.
    Plain,
    /// Each form-urlencoded first (RFC 6749 §2.3.1): OAuth 2.0 `client_secret_basic`, so a client id
    /// or secret with `:`, `%`, a space or non-ASCII characters reaches the IdP intact. Every byte but
    /// `A-Z a-z 0-9 - . _ ~` is percent-encoded (a space as `%20`, which a form decoder reads as a space).
    FormUrlencoded,
}

/// The credential of `Authorization: Basic <credential>` (or `Proxy-Authorization`): base64, standard
/// alphabet with padding, of `user-id ":" password`, the two parts written as `encoding` says.
pub fn basic_credentials(user_id: &str, password: &str, encoding: BasicEncoding) -> String {
    let joined = match encoding {
        BasicEncoding::Plain => format!("{user_id}:{password}"),
        BasicEncoding::FormUrlencoded => format!("{}:{}", encode(user_id), encode(password)),
    };
    base64::engine::general_purpose::STANDARD.encode(joined)
}

/// `s` for HTML text or a quoted attribute value: `&` `<` `>` `"` `'` become `&amp;` `&lt;` `&gt;`
/// `&quot;` `&#39;`, and every control character (tab and line breaks included) becomes a space, so
/// nothing a user or an IdP sends can open a tag, leave an attribute or hide in a page.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::encode::decode_form;

    fn unbase64(s: &str) -> String {
        let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn basic_follows_rfc_7617() {
        // RFC 7617 §2 and §2.1 (charset="UTF-8").
        assert_eq!(
            basic_credentials("Aladdin", "open sesame", BasicEncoding::Plain),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(
            basic_credentials("test", "123\u{a3}", BasicEncoding::Plain),
            "dGVzdDoxMjPCow=="
        );
        // The password may hold ':' (only the first one separates) and anything else, as it is.
        assert_eq!(
            unbase64(&basic_credentials("u", "p:a%s s&", BasicEncoding::Plain)),
            "u:p:a%s s&"
        );
        assert_eq!(basic_credentials("", "", BasicEncoding::Plain), "Og==");
    }

    #[test]
    fn client_secret_basic_form_urlencodes_both_parts_first() {
        // RFC 6749 §2.3.1: each part form-urlencoded, then joined with ':' and base64-encoded.
        let id = "client:1 é";
        let secret = "s3:cr%t+&=/ ~";
        let joined = unbase64(&basic_credentials(
            id,
            secret,
            BasicEncoding::FormUrlencoded,
        ));
        assert_eq!(joined, "client%3A1%20%C3%A9:s3%3Acr%25t%2B%26%3D%2F%20~");
        // Exactly one ':' is left, and a form decoder gives back both parts.
        let (i, s) = joined.split_once(':').unwrap();
        assert!(!s.contains(':'));
        assert_eq!((decode_form(i), decode_form(s)), (id.into(), secret.into()));
        // With only unreserved characters both ways give the same credential.
        assert_eq!(
            basic_credentials(
                "demo-client",
                "demo_secret.1~",
                BasicEncoding::FormUrlencoded
            ),
            basic_credentials("demo-client", "demo_secret.1~", BasicEncoding::Plain)
        );
    }

    #[test]
    fn html_escape_escapes_the_five_characters_and_controls() {
        assert_eq!(
            html_escape("<a href=\"x\" title='y'>&amp;</a>"),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(html_escape("a\r\nb\tc\u{0}d\u{7f}e\u{85}f"), "a  b c d e f");
        assert_eq!(
            html_escape("plain text, é ü 日本 🙂"),
            "plain text, é ü 日本 🙂"
        );
        assert_eq!(html_escape(""), "");
    }
}
