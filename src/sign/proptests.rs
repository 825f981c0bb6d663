//! Properties over arbitrary input: the signers see callers' queries, paths, headers and bodies.

use proptest::prelude::*;

use super::{hmac, oauth1, percent_decode, sigv4, PrivateKey, NOT_UNRESERVED};

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..64)
}

proptest! {
    /// Whatever the request, the OAuth 1.0a base string is three §3.6-encoded parts joined by `&`.
    #[test]
    fn oauth1_base_string_is_always_encoded(
        method in "[A-Za-z]{1,8}",
        authority in "[a-zA-Z0-9.:\\[\\]-]{0,20}",
        path in "\\PC{0,30}",
        query in proptest::option::of("\\PC{0,40}"),
        body in proptest::option::of(bytes()),
        nonce in "[A-Za-z0-9]{1,30}",
    ) {
        let client = oauth1::Client::new(oauth1::SignatureMethod::HmacSha256, "ck", Some("cs"), None).unwrap();
        let req = oauth1::Request {
            method: &method,
            scheme: "https",
            authority: &authority,
            path: &path,
            query: query.as_deref(),
            headers: if body.is_some() { super::FORM_HEADERS } else { &[] },
            body: body.as_deref().unwrap_or_default(),
        };
        match client.sign(&req, &oauth1::Protocol::new(&nonce, 1)) {
            Ok(s) => {
                let b = s.base_string();
                prop_assert_eq!(b.matches('&').count(), 2);
                prop_assert!(b.bytes().all(|c| c.is_ascii_alphanumeric() || b"-._~%&".contains(&c)), "{}", b);
            }
            Err(e) => prop_assert!(matches!(e, super::SignError::BadUri(_)), "{e}"),
        }
    }

    /// A §3.6-encoded pair decodes back to its bytes, and encoding it again changes nothing.
    #[test]
    fn oauth1_encoding_round_trips(value in bytes()) {
        let encoded = percent_encoding::percent_encode(&value, NOT_UNRESERVED).to_string();
        prop_assert_eq!(percent_decode(encoded.as_bytes(), true), value);
        let again = percent_encoding::percent_encode(&percent_decode(encoded.as_bytes(), false), NOT_UNRESERVED).to_string();
        prop_assert_eq!(again, encoded);
    }

    /// SigV4 never panics on a request's URI and headers, and signs each header name once, sorted.
    #[test]
    fn sigv4_canonical_headers_are_sorted_and_unique(
        uri in "/\\PC{0,40}",
        headers in proptest::collection::vec(("[A-Za-z][A-Za-z0-9_-]{0,8}", bytes()), 0..6),
        s3 in any::<bool>(),
    ) {
        let signer = sigv4::Signer::new(sigv4::Credentials::new("AKID", "secret"), "us-east-1", if s3 { "s3" } else { "execute-api" });
        let all: Vec<(&str, &[u8])> = std::iter::once(("Host", &b"h"[..])).chain(headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()))).collect();
        let (path, query) = match uri.split_once('?') { Some((p, q)) => (p, Some(q)), None => (uri.as_str(), None) };
        let req = super::Request { method: "GET", scheme: "https", authority: "h", path, query, headers: &all, body: b"" };
        let signed = signer.sign(&req, sigv4::Payload::Signed, 1_700_000_000).unwrap();
        let auth = signed.authorization();
        let list = auth.split("SignedHeaders=").nth(1).unwrap().split(',').next().unwrap();
        let names: Vec<&str> = list.split(';').collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        prop_assert_eq!(names, sorted);
        let cr = signed.canonical_request();
        prop_assert!(cr.split(|&b| b == b'\n').nth(1).unwrap().iter().all(|c| c.is_ascii_alphanumeric() || b"-._~%/".contains(c)));
    }

    /// Key parsing never panics, whatever the bytes, with or without a PEM frame around them.
    #[test]
    fn key_parsing_never_panics(body in bytes(), label in prop_oneof![
        Just("RSA PRIVATE KEY"), Just("PRIVATE KEY"), Just("EC PRIVATE KEY"), Just("CERTIFICATE")
    ]) {
        use base64::Engine as _;
        let _ = PrivateKey::from_pem(&body);
        let pem = format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            base64::engine::general_purpose::STANDARD.encode(&body)
        );
        prop_assert!(PrivateKey::from_pem(pem.as_bytes()).is_err());
    }

    /// Any string_to_sign either parses or is refused; none panics.
    #[test]
    fn hmac_templates_never_panic(t in "\\PC{0,40}") {
        let _ = hmac::Signer::new(&t, "k", hmac::SecretEncoding::Utf8, hmac::Algorithm::Sha256, hmac::Encoding::Hex);
    }
}
