"""A webhook receiver built on the Standard Webhooks reference library (tests/integration/webhooks.rs).

Every request is verified with ``standardwebhooks.Webhook(secret).verify(body, headers)`` and
recorded as one JSON line in --out: {"id", "verified", "status", "type", "data", "body",
"error", "start", "end"}. A request that does not verify is answered 400. The first --fail-first
requests are answered 503 (a receiver that is not ready), after being recorded. --delay-ms holds
every answer back that long ("start" and "end" are when the request arrived and was answered, in
seconds), so a test can see whether two attempts of one delivery overlapped.

Usage: webhook_receiver.py --secret whsec_... --out FILE [--port N] [--fail-first N] [--delay-ms N]
Prints "listening on PORT" once it listens (port 0: the OS chooses).
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secret", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--fail-first", type=int, default=0)
    ap.add_argument("--delay-ms", type=int, default=0)
    args = ap.parse_args()
    hook = Webhook(args.secret)
    lock = threading.Lock()
    seen = {"n": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            start = time.time()
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            record = {
                "id": headers.get("webhook-id"),
                "body": body.decode("utf-8", "replace"),
                "headers": headers,
            }
            try:
                payload = hook.verify(body, headers)
                record.update(verified=True, type=payload.get("type"), data=payload.get("data"))
                status = 204
            except WebhookVerificationError as e:
                record.update(verified=False, error=str(e))
                status = 400
            with lock:
                seen["n"] += 1
                if status == 204 and seen["n"] <= args.fail_first:
                    status = 503
            time.sleep(args.delay_ms / 1000)
            record.update(status=status, start=start, end=time.time())
            with lock:
                with open(args.out, "a") as f:
                    f.write(json.dumps(record) + "\n")
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
