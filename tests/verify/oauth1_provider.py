#!/usr/bin/env python3
"""A small OAuth 1.0a provider built on oauthlib's server side: an independent implementation the
sidecar's three-legged flow runs against (tests/integration/oauth1_flow.rs).

    oauth1_provider.py --consumer-key KEY [--consumer-secret SECRET] [--rsa-public-key PEM]

Listens on 127.0.0.1, port 0, and prints "listening on PORT" (then nothing else on stdout).

| path | oauthlib endpoint |
| ---- | ----------------- |
| POST /request_token | RequestTokenEndpoint.create_request_token_response |
| GET  /authorize?oauth_token=…[&user=NAME] | AuthorizationEndpoint.create_authorization_response: approves at once (user "oauthlib-user" by default) and redirects to the callback |
| POST /access_token | AccessTokenEndpoint.create_access_token_response |
| ANY  /protected/… | ResourceEndpoint.validate_protected_resource_request: 200 with JSON {"verified": true, "user", "signature_method", "path", "query"}, else 401 |

Every request's signature, timestamp and nonce (never seen before) are checked by oauthlib; request
tokens and verifiers are single use.
"""
import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

try:
    from oauthlib.oauth1 import (
        AccessTokenEndpoint,
        AuthorizationEndpoint,
        RequestTokenEndpoint,
        RequestValidator,
        ResourceEndpoint,
    )
    from oauthlib.oauth1.rfc5849 import SIGNATURE_METHODS
except ImportError as e:  # pragma: no cover
    print(f"missing Python package {e.name}: run scripts/setup.sh", file=sys.stderr)
    sys.exit(3)


class Store:
    def __init__(self):
        self.lock = threading.Lock()
        self.request_tokens = {}  # token -> {"secret", "callback", "verifier", "user"}
        self.access_tokens = {}  # token -> {"secret", "user"}
        self.nonces = set()


class Validator(RequestValidator):
    enforce_ssl = False
    allowed_signature_methods = SIGNATURE_METHODS

    def __init__(self, args, store):
        super().__init__()
        self.args = args
        self.store = store

    # Key formats are the provider's policy: the consumer key is the configured one.
    def check_client_key(self, client_key):
        return client_key == self.args.consumer_key

    @property
    def dummy_client(self):
        return "dummy_client"

    @property
    def dummy_request_token(self):
        return "dummy_request_token"

    @property
    def dummy_access_token(self):
        return "dummy_access_token"

    def validate_client_key(self, client_key, request):
        return client_key == self.args.consumer_key

    def get_client_secret(self, client_key, request):
        return self.args.consumer_secret or ""

    def get_rsa_key(self, client_key, request):
        return self.args.rsa_public_key_pem

    def validate_timestamp_and_nonce(self, client_key, timestamp, nonce, request, request_token=None, access_token=None):
        key = (client_key, timestamp, nonce, request_token, access_token)
        with self.store.lock:
            if key in self.store.nonces:
                return False
            self.store.nonces.add(key)
            return True

    def validate_requested_realms(self, client_key, realms, request):
        return True

    def validate_realms(self, client_key, token, request, uri=None, realms=None):
        return True

    def get_default_realms(self, client_key, request):
        return []

    def get_realms(self, token, request):
        return []

    def verify_realms(self, token, realms, request):
        return True

    def validate_redirect_uri(self, client_key, redirect_uri, request):
        return redirect_uri.startswith("http://") or redirect_uri.startswith("https://")

    # Request tokens.
    def save_request_token(self, token, request):
        with self.store.lock:
            self.store.request_tokens[token["oauth_token"]] = {
                "secret": token["oauth_token_secret"],
                "callback": request.redirect_uri,
                "verifier": None,
                "user": None,
            }

    def verify_request_token(self, token, request):
        return token in self.store.request_tokens

    def get_redirect_uri(self, token, request):
        return self.store.request_tokens[token]["callback"]

    def save_verifier(self, token, verifier, request):
        with self.store.lock:
            t = self.store.request_tokens[token]
            t["verifier"] = verifier["oauth_verifier"]
            t["user"] = verifier.get("user", "oauthlib-user")

    def validate_request_token(self, client_key, token, request):
        return token in self.store.request_tokens

    def get_request_token_secret(self, client_key, token, request):
        t = self.store.request_tokens.get(token)
        return t["secret"] if t else "dummy"

    def validate_verifier(self, client_key, token, verifier, request):
        t = self.store.request_tokens.get(token)
        if t is None or t["verifier"] != verifier:
            return False
        request.user = t["user"]
        return True

    def invalidate_request_token(self, client_key, request_token, request):
        with self.store.lock:
            self.store.request_tokens.pop(request_token, None)

    # Access tokens.
    def save_access_token(self, token, request):
        with self.store.lock:
            self.store.access_tokens[token["oauth_token"]] = {
                "secret": token["oauth_token_secret"],
                "user": request.user,
            }

    def validate_access_token(self, client_key, token, request):
        return token in self.store.access_tokens

    def get_access_token_secret(self, client_key, token, request):
        t = self.store.access_tokens.get(token)
        return t["secret"] if t else "dummy"


def make_handler(validator):
    request_tokens = RequestTokenEndpoint(validator)
    authorization = AuthorizationEndpoint(validator)
    access_tokens = AccessTokenEndpoint(validator)
    resource = ResourceEndpoint(validator)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet: stdout carries the port line only
            sys.stderr.write("oauth1_provider: " + (fmt % args) + "\n")

        def answer(self, status, headers, body):
            body = (body or "").encode() if isinstance(body, (str, type(None))) else body
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def request_parts(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            uri = f"http://{self.headers['Host']}{self.path}"
            headers = {k: v for k, v in self.headers.items()}
            return uri, body or None, headers

        def handle_any(self):
            uri, body, headers = self.request_parts()
            path = urlsplit(self.path).path
            method = self.command
            if method == "POST" and path == "/request_token":
                h, b, s = request_tokens.create_request_token_response(uri, method, body, headers)
                return self.answer(s, h, b)
            if method == "GET" and path == "/authorize":
                query = parse_qs(urlsplit(self.path).query)
                user = query.get("user", ["oauthlib-user"])[0]
                try:
                    h, b, s = authorization.create_authorization_response(
                        uri, method, body, headers, credentials={"user": user}
                    )
                except Exception as e:  # an unknown or used token
                    return self.answer(400, {"Content-Type": "text/plain"}, f"refused: {e}")
                return self.answer(s, h, b)
            if method == "POST" and path == "/access_token":
                h, b, s = access_tokens.create_access_token_response(uri, method, body, headers)
                return self.answer(s, h, b)
            if path.startswith("/protected/"):
                ok, request = resource.validate_protected_resource_request(uri, method, body, headers)
                if not ok:
                    log = getattr(request, "validator_log", None)
                    return self.answer(401, {"Content-Type": "application/json"}, json.dumps({"verified": False, "log": str(log)}))
                user = validator.store.access_tokens[request.resource_owner_key]["user"]
                return self.answer(
                    200,
                    {"Content-Type": "application/json"},
                    json.dumps(
                        {
                            "verified": True,
                            "user": user,
                            "signature_method": request.signature_method,
                            "path": path,
                            "query": urlsplit(self.path).query,
                        }
                    ),
                )
            return self.answer(404, {"Content-Type": "text/plain"}, "not found")

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--consumer-key", required=True)
    p.add_argument("--consumer-secret", default="")
    p.add_argument("--rsa-public-key")
    args = p.parse_args()
    args.rsa_public_key_pem = open(args.rsa_public_key).read() if args.rsa_public_key else None
    validator = Validator(args, Store())
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(validator))
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
