use super::*;

const RSA: &str = include_str!("../../tests/data/sign/rsa-pkcs8.pem");
const RSA1024: &str = include_str!("../../tests/data/sign/rsa1024-pkcs1.pem");
const RSA_E3: &str = include_str!("../../tests/data/sign/rsa-e3-pkcs8.pem");
const EC: &str = include_str!("../../tests/data/sign/ec-sec1.pem");
const ED: &str = include_str!("../../tests/data/sign/ed25519-pkcs8.pem");
const CERT: &str = include_str!("../../tests/data/sign/rsa-cert.pem");
const SERVICE_ACCOUNT: &str = include_str!("../../tests/data/sign/service-account.json");

fn b64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

fn part(token: &str, i: usize) -> Value {
    serde_json::from_slice(&b64(token.split('.').nth(i).unwrap())).unwrap()
}

/// RFC 7515 Appendix A.1: HS256 over the exact header and payload bytes of the example.
#[test]
fn rfc7515_appendix_a1_hs256() {
    let key = b64(
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
    );
    let token = Signer::hs256(&key)
        .sign_parts(
            b"{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}",
            b"{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}",
        )
        .unwrap();
    assert_eq!(
        token,
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.\
         eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.\
         dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    );
}

/// RFC 8037 Appendix A.3 (thumbprint) and A.4 (Ed25519 signature, deterministic).
#[test]
fn rfc8037_ed25519_examples() {
    let seed = b64("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A");
    // PKCS#8 v1 wrapping of the seed: what OpenSSL writes.
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&seed);
    let key = PrivateKey::from_pkcs8_der(&der).unwrap();
    assert_eq!(
        key.jwk_thumbprint(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
    let token = Signer::new(Algorithm::EdDsa, &key)
        .unwrap()
        .sign_parts(b"{\"alg\":\"EdDSA\"}", b"Example of Ed25519 signing")
        .unwrap();
    assert_eq!(
        token,
        "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.\
         hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
    );
}

#[test]
fn every_algorithm_signs_with_its_key_and_only_with_it() {
    let rsa = PrivateKey::from_pem(RSA.as_bytes()).unwrap();
    let ec = PrivateKey::from_pem(EC.as_bytes()).unwrap();
    let ed = PrivateKey::from_pem(ED.as_bytes()).unwrap();
    let claims: Map<String, Value> = serde_json::from_str(r#"{"a":1}"#).unwrap();
    for (alg, key, sig_len) in [
        (Algorithm::Rs256, &rsa, 256),
        (Algorithm::Ps256, &rsa, 256),
        (Algorithm::Es256, &ec, 64),
        (Algorithm::EdDsa, &ed, 64),
    ] {
        assert_eq!(
            Algorithm::default_for(key.kind()) == alg,
            alg != Algorithm::Ps256
        );
        let token = Signer::new(alg, key).unwrap().sign(&claims).unwrap();
        assert_eq!(part(&token, 0)["alg"], alg.as_str());
        assert_eq!(b64(token.split('.').nth(2).unwrap()).len(), sig_len);
    }
    assert_eq!(
        Signer::new(Algorithm::Es256, &rsa).unwrap_err(),
        SignError::KeyMismatch {
            key: "RSA",
            alg: "ES256"
        }
    );
    assert!(Signer::new(Algorithm::Rs256, &ec).is_err());
    assert!(Signer::new(Algorithm::Hs256, &ed).is_err());
    let small = PrivateKey::from_pem(RSA1024.as_bytes()).unwrap();
    assert_eq!(
        Signer::new(Algorithm::Rs256, &small)
            .unwrap_err()
            .to_string(),
        "the RSA key has 1024 bits; RS256 needs at least 2048"
    );
    let e3 = PrivateKey::from_pem(RSA_E3.as_bytes()).unwrap();
    let err = Signer::new(Algorithm::Ps256, &e3).unwrap_err().to_string();
    assert!(err.starts_with("the RSA key cannot sign PS256 ("), "{err}");
    // OAuth 1.0a's RSA methods (RustCrypto) still take it.
    let client = crate::sign::oauth1::Client::new(
        crate::sign::oauth1::SignatureMethod::RsaSha1,
        "c",
        None,
        Some(&e3),
    );
    assert!(client.is_ok());
}

#[test]
fn client_assertion_has_the_rfc7523_claims() {
    let rsa = PrivateKey::from_pem(RSA.as_bytes()).unwrap();
    let signer = Signer::new(Algorithm::Rs256, &rsa)
        .unwrap()
        .with_thumbprint_kid();
    let jti = fresh_jti();
    assert_eq!(b64(&jti).len(), 16);
    let t = client_assertion(
        &signer,
        "client-1",
        "https://idp.example/token",
        1_700_000_000,
        &jti,
    )
    .unwrap();
    assert_eq!(
        part(&t, 0),
        serde_json::json!({"alg":"RS256","typ":"JWT","kid": rsa.jwk_thumbprint()})
    );
    assert_eq!(
        part(&t, 1),
        serde_json::json!({"iss":"client-1","sub":"client-1","aud":"https://idp.example/token",
                           "jti": jti,"iat":1_700_000_000u64,"exp":1_700_000_060u64})
    );
    assert_ne!(fresh_jti(), jti);
    let a = fresh_client_assertion(&signer, "client-1", "https://idp.example/token").unwrap();
    let b = fresh_client_assertion(&signer, "client-1", "https://idp.example/token").unwrap();
    assert_ne!(part(&a, 1)["jti"], part(&b, 1)["jti"]);
    let iat = part(&a, 1)["iat"].as_u64().unwrap();
    assert!(iat.abs_diff(crate::sign::unix_now()) < 5);
    assert_eq!(part(&a, 1)["exp"].as_u64(), Some(iat + 60));
}

#[test]
fn certificate_sets_x5t_s256_and_kid() {
    let rsa = PrivateKey::from_pem(RSA.as_bytes()).unwrap();
    let s = Signer::new(Algorithm::Ps256, &rsa)
        .unwrap()
        .with_certificate(CERT.as_bytes())
        .unwrap();
    let t = x5t_s256(CERT.as_bytes()).unwrap();
    assert_eq!(s.kid(), Some(t.as_str()));
    assert_eq!(s.header()["x5t#S256"], t.as_str());
    let given = Signer::new(Algorithm::Ps256, &rsa)
        .unwrap()
        .with_kid("mine")
        .with_certificate(CERT.as_bytes())
        .unwrap();
    assert_eq!(given.kid(), Some("mine"));
}

#[test]
fn bearer_assertion_lifetime_is_bounded() {
    let s = Signer::hs256(b"secret");
    let claims: Map<String, Value> =
        serde_json::from_str(r#"{"iss":"a","sub":"u","aud":"https://t","scope":"x y","iat":1}"#)
            .unwrap();
    let t = bearer_assertion(&s, &claims, 1000, DEFAULT_ASSERTION_LIFETIME).unwrap();
    let c = part(&t, 1);
    assert_eq!(
        (c["iat"].as_u64(), c["exp"].as_u64()),
        (Some(1000), Some(4600))
    );
    assert_eq!(c["scope"], "x y");
    assert!(bearer_assertion(&s, &claims, 1000, 59).is_err());
    assert!(bearer_assertion(&s, &claims, 1000, 3601).is_err());
    assert!(bearer_assertion(&s, &claims, 1000, 60).is_ok());
}

#[test]
fn google_service_account_key() {
    let sa = ServiceAccount::from_json(SERVICE_ACCOUNT.as_bytes()).unwrap();
    assert_eq!(
        sa.client_email,
        "signer@authsidecar-test.iam.gserviceaccount.com"
    );
    assert_eq!(sa.token_uri, "https://oauth2.googleapis.com/token");
    let signer = sa.signer().unwrap();
    assert_eq!(signer.kid(), Some(sa.private_key_id.as_str()));
    let claims = sa.claims(Some("https://www.googleapis.com/auth/cloud-platform"), None);
    let t = bearer_assertion(&signer, &claims, 10, DEFAULT_ASSERTION_LIFETIME).unwrap();
    assert_eq!(part(&t, 1)["iss"], sa.client_email.as_str());
    assert_eq!(part(&t, 1)["aud"], "https://oauth2.googleapis.com/token");
    assert!(part(&t, 1).get("sub").is_none());

    let shown = format!("{sa:?}");
    assert!(
        !shown.contains("BEGIN") && shown.contains("[redacted]"),
        "{shown}"
    );
    assert_eq!(
        ServiceAccount::from_json(b"{\"private_key\": 5}").unwrap_err(),
        ServiceAccountError::Missing("private_key")
    );
    assert_eq!(
        ServiceAccount::from_json(b"{\"type\":\"authorized_user\"}").unwrap_err(),
        ServiceAccountError::Type
    );
    let bad = SERVICE_ACCOUNT.replace("MII", "MIX");
    let err = ServiceAccount::from_json(bad.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("the service-account key's private_key:"),
        "{err}"
    );
    assert!(matches!(
        ServiceAccount::from_json(b"{\"a\":").unwrap_err(),
        ServiceAccountError::Json(1, _)
    ));
}

#[test]
fn hs256_key_never_prints() {
    let s = Signer::hs256(b"client-secret-value").with_kid("k1");
    let shown = format!("{s:?}");
    assert!(!shown.contains("client-secret-value") && shown.contains("k1"));
}
