use super::*;

const RSA_PKCS1: &str = include_str!("../../tests/data/sign/rsa-pkcs1.pem");
const EC_SEC1: &str = include_str!("../../tests/data/sign/ec-sec1.pem");

#[test]
fn rfc5849_section_3_4_1_1_example_base_string() {
    let client = Client::new(
        SignatureMethod::HmacSha1,
        "9djdj82h48djs9d2",
        Some("unused"),
        None,
    )
    .unwrap();
    let mut proto = Protocol::new("7d8f3e4a", 137131201).with_token("kkk9d7dh3k39sjv7", "x");
    proto.version = false;
    let req = Request {
        method: "POST",
        scheme: "http",
        authority: "example.com",
        path: "/request",
        query: Some("b5=%3D%253D&a3=a&c%40=&a2=r%20b"),
        headers: crate::sign::FORM_HEADERS,
        body: b"c2&a3=2+q",
    };
    let signed = client.sign(&req, &proto).unwrap();
    assert_eq!(
        signed.base_string(),
        "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q%26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk9d7dh3k39sjv7"
    );
}

/// OAuth Core 1.0 Appendix A.5 (the photos example), the vector most libraries test against.
#[test]
fn oauth_core_appendix_a5_hmac_sha1_signature() {
    let client = Client::new(
        SignatureMethod::HmacSha1,
        "dpf43f3p2l4k3l03",
        Some("kd94hf93k423kf44"),
        None,
    )
    .unwrap();
    let proto = Protocol::new("kllo9940pd9333jh", 1191242096)
        .with_token("nnch734d00sl2jdk", "pfkkdhi9sl3r4s00");
    let req = Request {
        method: "GET",
        scheme: "http",
        authority: "photos.example.net",
        path: "/photos",
        query: Some("file=vacation.jpg&size=original"),
        headers: &[],
        body: b"",
    };
    let signed = client.sign(&req, &proto).unwrap();
    assert_eq!(
        signed.base_string(),
        "GET&http%3A%2F%2Fphotos.example.net%2Fphotos&file%3Dvacation.jpg%26oauth_consumer_key%3Ddpf43f3p2l4k3l03%26oauth_nonce%3Dkllo9940pd9333jh%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1191242096%26oauth_token%3Dnnch734d00sl2jdk%26oauth_version%3D1.0%26size%3Doriginal"
    );
    assert_eq!(signed.signature(), "tR3+Ty81lMeYAr/Fid0kMTYa/WM=");
    assert_eq!(
        signed.authorization(Some("http://photos.example.net/")),
        "OAuth realm=\"http://photos.example.net/\", oauth_consumer_key=\"dpf43f3p2l4k3l03\", \
         oauth_nonce=\"kllo9940pd9333jh\", oauth_signature=\"tR3%2BTy81lMeYAr%2FFid0kMTYa%2FWM%3D\", \
         oauth_signature_method=\"HMAC-SHA1\", oauth_timestamp=\"1191242096\", \
         oauth_token=\"nnch734d00sl2jdk\", oauth_version=\"1.0\""
    );
    assert_eq!(
        signed.form_encoded(),
        "oauth_consumer_key=dpf43f3p2l4k3l03&oauth_nonce=kllo9940pd9333jh&\
         oauth_signature=tR3%2BTy81lMeYAr%2FFid0kMTYa%2FWM%3D&oauth_signature_method=HMAC-SHA1&\
         oauth_timestamp=1191242096&oauth_token=nnch734d00sl2jdk&oauth_version=1.0"
    );
}

#[test]
fn realm_is_a_quoted_string() {
    let client = Client::new(SignatureMethod::HmacSha1, "ck", Some("cs"), None).unwrap();
    let req = Request {
        method: "GET",
        scheme: "https",
        authority: "h",
        path: "/",
        query: None,
        headers: &[],
        body: b"",
    };
    let signed = client.sign(&req, &Protocol::new("n", 1)).unwrap();
    let h = signed.authorization(Some(r#"1234567_SB1 "a\b""#));
    assert!(
        h.starts_with(r#"OAuth realm="1234567_SB1 \"a\\b\"", oauth_consumer_key="ck", "#),
        "{h}"
    );
    assert!(signed
        .authorization(None)
        .starts_with("OAuth oauth_consumer_key=\"ck\", "));
}

#[test]
fn plaintext_signature_is_the_encoded_secrets() {
    let client = Client::new(SignatureMethod::Plaintext, "ck", Some("k d&"), None).unwrap();
    let proto = Protocol::new("n", 1).with_token("t", "s+~");
    let req = Request {
        method: "GET",
        scheme: "https",
        authority: "api.example.com",
        path: "/",
        query: None,
        headers: &[],
        body: b"",
    };
    assert_eq!(
        client.sign(&req, &proto).unwrap().signature(),
        "k%20d%26&s%2B~"
    );
    // Without a token, the key still ends with "&".
    let proto = Protocol::new("n", 1);
    assert_eq!(client.sign(&req, &proto).unwrap().signature(), "k%20d%26&");
}

#[test]
fn rfc5849_base_string_uri_examples() {
    // §3.4.1.2.
    assert_eq!(
        base_string_uri("HTTP", "EXAMPLE.COM:80", "/r%20v/X").unwrap(),
        "http://example.com/r%20v/X"
    );
    assert_eq!(
        base_string_uri("https", "www.example.net:8080", "/").unwrap(),
        "https://www.example.net:8080/"
    );
    assert_eq!(
        base_string_uri("https", "Example.com:443", "").unwrap(),
        "https://example.com/"
    );
    assert_eq!(
        base_string_uri("http", "[::1]:8080", "/a").unwrap(),
        "http://[::1]:8080/a"
    );
    assert_eq!(
        base_string_uri("http", "[::1]:80", "/a").unwrap(),
        "http://[::1]/a"
    );
    assert!(base_string_uri("http", ":80", "/").is_err());
    assert!(base_string_uri("http", "h:8x", "/").is_err());
}

#[test]
fn duplicate_names_sort_by_value_and_oauth_params_by_name() {
    let client = Client::new(SignatureMethod::HmacSha256, "ck", Some("cs"), None).unwrap();
    let proto = Protocol::new("abc", 1_700_000_000);
    let req = Request {
        method: "post",
        scheme: "https",
        authority: "h",
        path: "/p",
        query: Some("a=2&a=10&a=1&b"),
        headers: crate::sign::FORM_HEADERS,
        body: b"z=%7e&a=+",
    };
    let s = client.sign(&req, &proto).unwrap();
    assert!(
        s.base_string().starts_with(
            "POST&https%3A%2F%2Fh%2Fp&a%3D%2520%26a%3D1%26a%3D10%26a%3D2%26b%3D%26oauth_consumer_key"
        ),
        "{}",
        s.base_string()
    );
    assert!(s.base_string().ends_with("oauth_version%3D1.0%26z%3D~"));
    let names: Vec<_> = s.params().iter().map(|(n, _)| *n).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
}

#[test]
fn rsa_methods_sign_with_a_key_and_need_no_secret() {
    let key = PrivateKey::from_pem(RSA_PKCS1.as_bytes()).unwrap();
    let req = Request {
        method: "GET",
        scheme: "https",
        authority: "jira.example.com",
        path: "/rest/api/2/myself",
        query: None,
        headers: &[],
        body: b"",
    };
    for m in [SignatureMethod::RsaSha1, SignatureMethod::RsaSha256] {
        let client = Client::new(m, "jira", None, Some(&key)).unwrap();
        let proto = Protocol::new("n", 1).with_token("t", "");
        let a = client.sign(&req, &proto).unwrap();
        let b = client.sign(&req, &proto).unwrap();
        // PKCS#1 v1.5 is deterministic: blinding does not change the signature.
        assert_eq!(a.signature(), b.signature());
        assert_eq!(STANDARD.decode(a.signature()).unwrap().len(), 256);
    }
    assert_eq!(
        Client::new(SignatureMethod::RsaSha1, "c", Some("s"), None).unwrap_err(),
        SignError::Missing {
            method: "RSA-SHA1",
            what: "an RSA private key"
        }
    );
    let ec = PrivateKey::from_pem(EC_SEC1.as_bytes()).unwrap();
    assert_eq!(
        Client::new(SignatureMethod::RsaSha256, "c", None, Some(&ec)).unwrap_err(),
        SignError::KeyMismatch {
            key: "EC P-256",
            alg: "RSA-SHA256"
        }
    );
    assert!(Client::new(SignatureMethod::HmacSha1, "c", None, Some(&key)).is_err());
}

#[test]
fn secrets_never_print() {
    let client = Client::new(SignatureMethod::HmacSha1, "ck", Some("s3cr3t-value"), None).unwrap();
    let shown = format!("{client:?}");
    assert!(!shown.contains("s3cr3t-value"), "{shown}");
    let t = Token {
        token: "tok",
        secret: "t0ken-secret",
    };
    assert!(!format!("{t:?}").contains("t0ken-secret"));
    let proto = Protocol::new("n", 1).with_token("tok", "t0ken-secret");
    assert!(!format!("{proto:?}").contains("t0ken-secret"));
    let plaintext =
        Client::new(SignatureMethod::Plaintext, "ck", Some("s3cr3t-value"), None).unwrap();
    let req = Request {
        method: "GET",
        scheme: "https",
        authority: "h",
        path: "/",
        query: None,
        headers: &[],
        body: b"",
    };
    let signed = plaintext.sign(&req, &proto).unwrap();
    let shown = format!("{signed:?}");
    assert!(
        !shown.contains("s3cr3t") && shown.contains("oauth_nonce"),
        "{shown}"
    );
}

#[test]
fn nonces_are_fresh_alphanumeric_and_24_long() {
    let a = fresh_nonce();
    let b = fresh_nonce();
    assert_ne!(a, b);
    assert_eq!(a.len(), 24);
    assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
}

#[test]
fn form_content_types() {
    assert!(is_form(b"application/x-www-form-urlencoded"));
    assert!(is_form(
        b"Application/X-WWW-Form-Urlencoded ; charset=utf-8"
    ));
    assert!(!is_form(b"application/json"));
    assert!(!is_form(b"multipart/form-data; boundary=x"));
}

#[test]
fn method_names_round_trip() {
    for m in SignatureMethod::ALL {
        assert_eq!(SignatureMethod::parse(m.as_str()), Some(m));
    }
    assert_eq!(SignatureMethod::parse("hmac-sha1"), None);
}
