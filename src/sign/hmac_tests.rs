use super::*;

fn req(body: &[u8]) -> Request<'_> {
    Request {
        method: "POST",
        scheme: "https",
        authority: "api.example.com",
        path: "/v1/payments",
        query: Some("a=1&b=2"),
        headers: &[],
        body,
    }
}

fn moment() -> Moment {
    Moment::new(1_700_000_000_123, [0xab; 16])
}

fn sig(tpl: &str, key: &str, ke: SecretEncoding, alg: Algorithm, body: &[u8]) -> String {
    Signer::new(tpl, key, ke, alg, Encoding::Hex)
        .unwrap()
        .sign(&req(body), &moment())
}

/// RFC 4231 (HMAC-SHA256/512) and RFC 2202 (HMAC-SHA1) test cases 1, 2, 3 and 6.
#[test]
fn rfc4231_and_rfc2202_vectors() {
    let k1 = "0b".repeat(20);
    use Algorithm::*;
    use SecretEncoding::*;
    assert_eq!(
        sig("Hi There", &k1, Hex, Sha256, b""),
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    );
    assert_eq!(
        sig("Hi There", &k1, Hex, Sha512, b""),
        "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"
    );
    assert_eq!(
        sig("Hi There", &k1, Hex, Sha1, b""),
        "b617318655057264e28bc0b6fb378c8ef146be00"
    );
    let jefe = "what do ya want for nothing?";
    assert_eq!(
        sig(jefe, "Jefe", Utf8, Sha256, b""),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        sig(jefe, "Jefe", Utf8, Sha512, b""),
        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
    );
    assert_eq!(
        sig(jefe, "SmVmZQ==", Base64, Sha1, b""),
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    );
    // Case 3: binary data, here as the body.
    assert_eq!(
        sig("{{body}}", &"aa".repeat(20), Hex, Sha256, &[0xdd; 50]),
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"
    );
    // Case 6: a key longer than the block size.
    assert_eq!(
        sig(
            "Test Using Larger Than Block-Size Key - Hash Key First",
            &"AA".repeat(131),
            Hex,
            Sha256,
            b""
        ),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

#[test]
fn every_variable_renders_once_per_request() {
    let s = Signer::new(
        "{{method}}\\n{{path}}\n{{query}}|{{host}}|{{body}}|{{body_sha256}}|{{timestamp}}|{{timestamp_ms}}|{{date}}|{{nonce}}|{{ timestamp }}",
        "k",
        SecretEncoding::Utf8,
        Algorithm::Sha256,
        Encoding::Base64,
    )
    .unwrap();
    let rendered = String::from_utf8(s.string_to_sign(&req(b"{}"), &moment())).unwrap();
    assert_eq!(
        rendered,
        "POST\n/v1/payments\na=1&b=2|api.example.com|{}|\
         44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a|1700000000|\
         1700000000123|Tue, 14 Nov 2023 22:13:20 GMT|abababababababababababababababab|1700000000"
    );
    let expected = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k"),
        rendered.as_bytes(),
    );
    assert_eq!(
        s.sign(&req(b"{}"), &moment()),
        STANDARD.encode(expected.as_ref())
    );
    assert!(s.uses(Field::Body));
    let no_body = Signer::new(
        "{{method}}",
        "k",
        SecretEncoding::Utf8,
        Algorithm::Sha1,
        Encoding::Hex,
    )
    .unwrap();
    assert!(!no_body.uses(Field::Body) && !no_body.uses(Field::BodySha256));
}

#[test]
fn fresh_moments_differ_and_nonces_are_128_bit_hex() {
    let (a, b) = (Moment::fresh(), Moment::fresh());
    assert_ne!(a.nonce(), b.nonce());
    assert_eq!(a.nonce().len(), 32);
    assert!(a
        .nonce()
        .bytes()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(a.timestamp().len(), 10);
    assert!(a.timestamp_ms().starts_with(a.timestamp()));
}

#[test]
fn configuration_errors_name_the_problem() {
    let e = Signer::new(
        "{{verb}}",
        "k",
        SecretEncoding::Utf8,
        Algorithm::Sha256,
        Encoding::Hex,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "string_to_sign: unknown variable \"verb\"; expected one of method, path, query, host, body, body_sha256, timestamp, timestamp_ms, date, nonce"
    );
    let e = Signer::new(
        "x",
        "not hex!",
        SecretEncoding::Hex,
        Algorithm::Sha256,
        Encoding::Hex,
    )
    .unwrap_err();
    assert_eq!(e, HmacError::Secret("hex"));
    assert!(!e.to_string().contains("not hex!"));
    assert_eq!(
        Signer::new(
            "x",
            "@@",
            SecretEncoding::Base64,
            Algorithm::Sha256,
            Encoding::Hex
        )
        .unwrap_err(),
        HmacError::Secret("base64")
    );
    assert!(Signer::new(
        "{{method",
        "k",
        SecretEncoding::Utf8,
        Algorithm::Sha256,
        Encoding::Hex
    )
    .is_err());
    assert_eq!(Algorithm::parse("sha512"), Some(Algorithm::Sha512));
    assert_eq!(Algorithm::parse("SHA256"), None);
}

#[test]
fn the_key_never_prints() {
    let s = Signer::new(
        "{{method}}",
        "hunter2-secret",
        SecretEncoding::Utf8,
        Algorithm::Sha256,
        Encoding::Hex,
    )
    .unwrap();
    assert!(!format!("{s:?}").contains("hunter2"));
}
