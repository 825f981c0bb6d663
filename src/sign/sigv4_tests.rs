//! The whole AWS test suite runs in `tests/integration/signing.rs`; these are the published examples
//! from AWS's documentation and the rules in isolation.

use super::*;

/// Signs `(method, uri, body)` (`None`: an unsigned payload) with these headers.
fn sign(
    signer: &Signer,
    req: &(&str, &str, Option<&[u8]>),
    headers: &[(&str, &str)],
    t: u64,
) -> Result<Signed, SignError> {
    let (method, uri, body) = *req;
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let hs: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    let r = Request {
        method,
        scheme: "https",
        authority: "",
        path,
        query,
        headers: &hs,
        body: body.unwrap_or_default(),
    };
    let payload = if body.is_some() {
        Payload::Signed
    } else {
        Payload::Unsigned
    };
    signer.sign(&r, payload, t)
}

/// The S3 documentation's "GET object" example (Signature Version 4, header authorization).
#[test]
fn s3_documentation_get_object_example() {
    let signer = Signer::new(
        Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        "us-east-1",
        "s3",
    );
    let req: (&str, &str, Option<&[u8]>) = ("GET", "/test.txt", Some(b""));
    let headers = [
        ("Host", "examplebucket.s3.amazonaws.com"),
        ("Range", "bytes=0-9"),
    ];
    let signed = sign(&signer, &req, &headers, 1_369_353_600).unwrap();
    assert_eq!(
        String::from_utf8(signed.canonical_request().to_vec()).unwrap(),
        "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
         x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
         x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        signed.signature(),
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    );
    assert_eq!(
        signed.authorization(),
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
         SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
         Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    );
}

#[test]
fn s3_encodes_the_path_once_other_services_twice() {
    let creds = Credentials::new("AKID", "secret");
    let req: (&str, &str, Option<&[u8]>) = ("GET", "/a%20b/./c$d/../e?x=1", None);
    let line = |service: &str| {
        let signer = Signer::new(creds.clone(), "eu-west-1", service);
        let s = sign(&signer, &req, &[("host", "h")], 0).unwrap();
        let cr = String::from_utf8(s.canonical_request().to_vec()).unwrap();
        cr.lines().nth(1).unwrap().to_string()
    };
    assert_eq!(line("s3"), "/a%20b/./c%24d/../e");
    assert_eq!(line("execute-api"), "/a%2520b/e");
}

#[test]
fn unsigned_payload_and_session_token_headers() {
    let signer = Signer::new(
        Credentials::new("AKID", "secret").with_session_token("tok/en+=="),
        "us-east-1",
        "s3",
    );
    let req: (&str, &str, Option<&[u8]>) = ("PUT", "/k", None);
    let s = sign(
        &signer,
        &req,
        &[
            ("Host", "b.s3.amazonaws.com"),
            ("X-Amz-Date", "stale"),
            ("Authorization", "stale"),
            ("User-Agent", "x"),
            ("x-amz-meta-a", "  1   2 "),
            ("X-Amz-Meta-A", "3"),
        ],
        1_440_938_160,
    )
    .unwrap();
    let names: Vec<_> = s.headers().iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "x-amz-date",
            "x-amz-content-sha256",
            "x-amz-security-token",
            "authorization"
        ]
    );
    assert_eq!(s.headers()[0].1, "20150830T123600Z");
    assert_eq!(s.headers()[1].1, "UNSIGNED-PAYLOAD");
    assert_eq!(s.headers()[2].1, "tok/en+==");
    let cr = String::from_utf8(s.canonical_request().to_vec()).unwrap();
    assert!(cr.contains("\nx-amz-meta-a:1 2,3\n"), "{cr}");
    assert!(!cr.contains("stale") && !cr.contains("user-agent"), "{cr}");
    assert!(cr.ends_with(
        "\nhost;x-amz-content-sha256;x-amz-date;x-amz-meta-a;x-amz-security-token\nUNSIGNED-PAYLOAD"
    ));
}

#[test]
fn a_request_without_host_is_refused() {
    let signer = Signer::new(Credentials::new("AKID", "secret"), "us-east-1", "sts");
    let req: (&str, &str, Option<&[u8]>) = ("GET", "/", Some(b""));
    assert_eq!(
        sign(&signer, &req, &[("accept", "*/*")], 0).unwrap_err(),
        SignError::NoHost
    );
}

#[test]
fn canonical_query_decodes_and_encodes_again() {
    let mut out = Vec::new();
    canonical_query("b=2&a=%7e&a=1&c&=z&a+b=%2b&&", &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "=z&a=1&a=~&a%2Bb=%2B&b=2&c="
    );
}

#[test]
fn path_normalization() {
    assert_eq!(normalize("/"), "/");
    assert_eq!(normalize("//"), "/");
    assert_eq!(normalize("//example//"), "/example/");
    assert_eq!(normalize("/example1/example2/../.."), "/");
    assert_eq!(normalize("/./example"), "/example");
    assert_eq!(normalize("/a/b/../c/"), "/a/c/");
}

#[test]
fn credentials_never_print() {
    let c = Credentials::new("AKID", "wJalrXUtnFEMI").with_session_token("FwoGZXIvYXdz");
    let signer = Signer::new(c, "r", "s");
    let shown = format!("{signer:?}");
    assert!(shown.contains("AKID"));
    assert!(
        !shown.contains("wJalrXUtnFEMI") && !shown.contains("FwoGZXIvYXdz"),
        "{shown}"
    );
    let req: (&str, &str, Option<&[u8]>) = ("GET", "/", None);
    let signed = sign(&signer, &req, &[("host", "h")], 0).unwrap();
    let shown = format!("{signed:?}");
    assert!(
        !shown.contains("FwoGZXIvYXdz") && shown.contains("x-amz-security-token"),
        "{shown}"
    );
}
