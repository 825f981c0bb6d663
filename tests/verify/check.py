#!/usr/bin/env python3
"""Checks signatures made by src/sign with independent implementations.

Reads a JSON array of cases on stdin (tests/integration/signing.rs writes them), prints one line per
case ("ok ID" or "FAIL ID: why") and a closing "N passed, N failed"; exits 1 when any failed, 3 when
a package is missing.

| kind   | checked by |
| ------ | ---------- |
| oauth1 | oauthlib's server side: ResourceEndpoint (access token), SignatureOnlyEndpoint (two-legged),
|        | RequestTokenEndpoint and AccessTokenEndpoint (three-legged steps), each with its own
|        | parsing of the header, query or form body and its verify_* functions |
| jwt    | PyJWT (with cryptography) verifies signature, alg and claims; jwcrypto computes the RFC 7638
|        | thumbprint; hashlib the certificate's x5t#S256 |
| hmac   | this script renders the string_to_sign itself (plain string replacement) and computes the
|        | HMAC with Python's hmac/hashlib |
| sigv4  | botocore's SigV4Auth / S3SigV4Auth signs the same request at the same instant; the
|        | Authorization headers must be equal |
"""
import base64
import datetime
import hashlib
import hmac
import json
import sys
import time

try:
    import botocore.auth
    import botocore.awsrequest
    import botocore.config
    import botocore.credentials
    import jwt
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from jwcrypto import jwk
    from oauthlib.oauth1 import (
        AccessTokenEndpoint,
        RequestTokenEndpoint,
        RequestValidator,
        ResourceEndpoint,
        SignatureOnlyEndpoint,
    )
    from oauthlib.oauth1.rfc5849 import SIGNATURE_METHODS
except ImportError as e:  # pragma: no cover
    print(f"missing Python package {e.name}: run scripts/setup.sh (it installs tests/verify/requirements.txt into .venv)")
    sys.exit(3)


class Validator(RequestValidator):
    """Accepts exactly the case's client and token; nonces must not repeat (fresh per request)."""

    enforce_ssl = False
    allowed_signature_methods = SIGNATURE_METHODS
    seen_nonces = set()

    def __init__(self, case):
        super().__init__()
        self.case = case

    # Key formats are the server's policy, not the signature's: accept the case's.
    def check_client_key(self, client_key):
        return client_key == self.case["consumer_key"]

    def check_access_token(self, token):
        return token == self.case.get("token")

    def check_request_token(self, token):
        return token == self.case.get("token")

    @property
    def dummy_client(self):
        return "dummy_client"

    @property
    def dummy_access_token(self):
        return "dummy_access_token"

    @property
    def dummy_request_token(self):
        return "dummy_request_token"

    def validate_timestamp_and_nonce(self, client_key, timestamp, nonce, request, request_token=None, access_token=None):
        if nonce in Validator.seen_nonces:
            return False
        Validator.seen_nonces.add(nonce)
        return True

    def validate_client_key(self, client_key, request):
        return client_key == self.case["consumer_key"]

    def validate_access_token(self, client_key, token, request):
        return token == self.case.get("token")

    def validate_request_token(self, client_key, token, request):
        return token == self.case.get("token")

    def validate_verifier(self, client_key, token, verifier, request):
        return verifier == self.case.get("verifier")

    def validate_realms(self, client_key, token, request, uri=None, realms=None):
        return True

    def validate_requested_realms(self, client_key, realms, request):
        return True

    def validate_redirect_uri(self, client_key, redirect_uri, request):
        return redirect_uri == self.case.get("callback")

    def get_default_realms(self, client_key, request):
        return []

    def get_realms(self, token, request):
        return []

    def get_client_secret(self, client_key, request):
        return self.case.get("consumer_secret") or ""

    def get_access_token_secret(self, client_key, token, request):
        return self.case.get("token_secret") or ""

    def get_request_token_secret(self, client_key, token, request):
        return self.case.get("token_secret") or ""

    def get_rsa_key(self, client_key, request):
        return self.case["rsa_public_key"]

    def invalidate_request_token(self, client_key, request_token, request):
        pass


def raw_param(wire, name):
    """The still-encoded value of `name=` in a query or form string."""
    for pair in wire.split("&"):
        if pair.startswith(name + "="):
            return pair[len(name) + 1 :]
    return None


def check_oauth1_plaintext_with_client(case):
    """PLAINTEXT in the query or a form body, checked against oauthlib's client.

    oauthlib's server decodes oauth_* values from the query and the body twice (once as
    form-urlencoded, then utils.unescape in collect_parameters), so it refuses a PLAINTEXT signature
    whose secrets have characters that need encoding, even one its own client made. Its client
    follows RFC 5849 §3.4.4 and §3.5.2/3.5.3: the same nonce and timestamp must give our wire value.
    """
    from oauthlib.oauth1 import Client

    placement = case["placement"]
    ours = case["uri"].split("?", 1)[1] if placement == "query" else case["body"]
    client = Client(
        case["consumer_key"],
        client_secret=case["consumer_secret"],
        resource_owner_key=case.get("token"),
        resource_owner_secret=case.get("token_secret"),
        signature_method="PLAINTEXT",
        signature_type="QUERY" if placement == "query" else "BODY",
        nonce=raw_param(ours, "oauth_nonce"),
        timestamp=raw_param(ours, "oauth_timestamp"),
    )
    # oauthlib's client wants the bare media type (parameters do not change what is signed).
    form = case["headers"].get("Content-Type", "").startswith("application/x-www-form-urlencoded")
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if form else {}
    body = case.get("body_unsigned") if form else None
    uri, _, body = client.sign(case["uri_unsigned"], case["http_method"], body, headers)
    theirs = uri.split("?", 1)[1] if placement == "query" else body
    if raw_param(ours, "oauth_signature") != raw_param(theirs, "oauth_signature"):
        return f"oauth_signature={raw_param(ours, 'oauth_signature')}; oauthlib's client: {raw_param(theirs, 'oauth_signature')}"
    return None


def check_oauth1(case):
    if case["signature_method"] == "PLAINTEXT" and case.get("placement") in ("query", "form"):
        return check_oauth1_plaintext_with_client(case)
    v = Validator(case)
    args = (case["uri"], case["http_method"], case.get("body") or None, case.get("headers") or {})
    flow = case["flow"]
    if flow == "resource":
        ok, request = ResourceEndpoint(v).validate_protected_resource_request(*args)
    elif flow == "two_legged":
        ok, request = SignatureOnlyEndpoint(v).validate_request(*args)
    elif flow == "request_token":
        e = RequestTokenEndpoint(v)
        request = e._create_request(*args)
        e._check_transport_security(request)
        e._check_mandatory_parameters(request)
        ok, request = e.validate_request_token_request(request)
    elif flow == "access_token":
        e = AccessTokenEndpoint(v)
        request = e._create_request(*args)
        e._check_transport_security(request)
        e._check_mandatory_parameters(request)
        ok, request = e.validate_access_token_request(request)
    else:
        return f"unknown flow {flow}"
    if not ok:
        log = getattr(request, "validator_log", None) if request is not None else None
        return f"oauthlib refused the request ({log})"
    if request.signature_method != case["signature_method"]:
        return f"signature method {request.signature_method}"
    return None


def check_jwt(case):
    alg = case["alg"]
    key = case.get("public_key") or base64.b64decode(case["secret_b64"])
    header = jwt.get_unverified_header(case["token"])
    try:
        claims = jwt.decode(
            case["token"],
            key,
            algorithms=[alg],
            audience=case["aud"],
            options={"require": ["iat", "exp"]},
        )
    except jwt.PyJWTError as e:
        return f"PyJWT refused it: {e!r}"
    if header.get("alg") != alg or header.get("typ") != "JWT":
        return f"header {header}"
    for name, want in case["claims"].items():
        if claims.get(name) != want:
            return f"claim {name} = {claims.get(name)!r}, expected {want!r}"
    if case.get("lifetime") is not None and claims["exp"] - claims["iat"] != case["lifetime"]:
        return f"lifetime {claims['exp'] - claims['iat']}"
    kid = case.get("kid")
    if kid == "thumbprint":
        want = jwk.JWK.from_pem(case["public_key"].encode()).thumbprint()
        if header.get("kid") != want:
            return f"kid {header.get('kid')} is not jwcrypto's thumbprint {want}"
    elif kid == "x5t#S256":
        cert = x509.load_pem_x509_certificate(case["cert"].encode())
        want = base64.urlsafe_b64encode(hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()).rstrip(b"=").decode()
        if header.get("kid") != want or header.get("x5t#S256") != want:
            return f"kid {header.get('kid')} / x5t#S256 {header.get('x5t#S256')}, expected {want}"
        if cert.public_key().public_numbers() != serialization.load_pem_public_key(case["public_key"].encode()).public_numbers():
            return "the certificate is not the signing key's"
    elif kid is not None and header.get("kid") != kid:
        return f"kid {header.get('kid')}, expected {kid}"
    return None


def check_hmac(case):
    parts = case["parts"]
    body = base64.b64decode(parts["body_b64"])
    values = {
        "method": parts["method"].encode(),
        "path": parts["path"].encode(),
        "query": parts["query"].encode(),
        "host": parts["host"].encode(),
        "body": body,
        "body_sha256": hashlib.sha256(body).hexdigest().encode(),
        "timestamp": str(parts["unix_ms"] // 1000).encode(),
        "timestamp_ms": str(parts["unix_ms"]).encode(),
        "date": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(parts["unix_ms"] // 1000)).encode(),
        "nonce": parts["nonce_hex"].encode(),
    }
    # An independent rendering: the literal "\n", then each {{name}} (spaces allowed inside).
    tpl = case["template"].replace("\\n", "\n").encode()
    out, rest = b"", tpl
    while b"{{" in rest:
        before, _, after = rest.partition(b"{{")
        name, _, rest = after.partition(b"}}")
        out += before + values[name.strip().decode()]
    out += rest
    if out != base64.b64decode(case["rendered_b64"]):
        return f"rendered string differs: {out!r}"
    secret = case["secret"]
    key = {
        "utf8": lambda: secret.encode(),
        "base64": lambda: base64.b64decode(secret),
        "hex": lambda: bytes.fromhex(secret),
    }[case["secret_encoding"]]()
    mac = hmac.new(key, out, getattr(hashlib, case["algorithm"])).digest()
    want = mac.hex() if case["encoding"] == "hex" else base64.b64encode(mac).decode()
    if case["signature"] != want:
        return f"signature {case['signature']}, Python's hmac says {want}"
    return None


def check_sigv4(case):
    creds = botocore.credentials.Credentials(case["access_key_id"], case["secret_access_key"], case.get("session_token"))
    body = base64.b64decode(case["body_b64"])
    req = botocore.awsrequest.AWSRequest(method=case["method"], url=case["url"], data=body)
    for name, value in case["headers"]:
        req.headers[name] = value  # HTTPHeaders: a repeated name adds a value
    unsigned = case["payload"] == "unsigned"
    if case["service"] == "s3":
        signer = botocore.auth.S3SigV4Auth(creds, "s3", case["region"])
        if unsigned:
            req.context["client_config"] = botocore.config.Config(s3={"payload_signing_enabled": False})
    else:
        signer = botocore.auth.SigV4Auth(creds, case["service"], case["region"])
        # botocore signs x-amz-content-sha256 when it is present; its value comes from hashlib here.
        req.headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD" if unsigned else hashlib.sha256(body).hexdigest()
    at = datetime.datetime.fromtimestamp(case["unix_time"], datetime.timezone.utc).replace(tzinfo=None)
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda *a, **k: at
    try:
        signer.add_auth(req)
        canonical = signer.canonical_request(req)
    finally:
        botocore.auth.get_current_datetime = original
    if req.headers["Authorization"] != case["authorization"]:
        return (
            f"botocore: {req.headers['Authorization']}\n  ours:     {case['authorization']}\n"
            f"  botocore canonical request:\n{canonical}\n  ours:\n{case['canonical_request']}"
        )
    want_sha = req.headers.get("X-Amz-Content-SHA256")
    if want_sha != case["content_sha256"]:
        return f"x-amz-content-sha256 {case['content_sha256']}, botocore {want_sha}"
    return None


CHECKS = {"oauth1": check_oauth1, "jwt": check_jwt, "hmac": check_hmac, "sigv4": check_sigv4}


def main():
    cases = json.load(sys.stdin)
    passed = failed = 0
    counts = {}
    for case in cases:
        try:
            why = CHECKS[case["kind"]](case)
        except Exception as e:  # a checker that crashes is a failed case, with the reason
            why = f"{type(e).__name__}: {e}"
        if why is None:
            passed += 1
            counts[case["kind"]] = counts.get(case["kind"], 0) + 1
            print(f"ok {case['id']}")
        else:
            failed += 1
            print(f"FAIL {case['id']}: {why}")
    print("verified: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
