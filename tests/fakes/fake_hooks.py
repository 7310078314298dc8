#!/usr/bin/env python3
"""fake_hooks.py - a recorder standing in for a Slack incoming webhook, a
generic webhook and Sentry's envelope endpoint, for sluice's alert and
Sentry tests. Python 3 standard library only.

Every POST is appended to --log as one JSON line:
  {"path", "t" (Unix seconds, float), "status" (what was answered),
   "body" (text), "sig_ok" (webhook: the X-Sluice-Signature header is the
   HMAC-SHA256 of "<X-Sluice-Timestamp>.<body>" keyed by --secret; null
   when the request carries no signature), "auth" (X-Sentry-Auth or null)}
The first --fail-429 requests are answered 429 with Retry-After:
--retry-after seconds; the rest 200 "ok". Prints "PORT <n>" when listening.
"""
import argparse
import hashlib
import hmac
import http.server
import json
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, default=0)
ap.add_argument("--log", required=True)
ap.add_argument("--secret", default="")
ap.add_argument("--fail-429", type=int, default=0)
ap.add_argument("--retry-after", type=int, default=2)
args = ap.parse_args()
lock = threading.Lock()
state = {"left429": args.fail_429}


class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        sig = self.headers.get("X-Sluice-Signature")
        ts = self.headers.get("X-Sluice-Timestamp")
        sig_ok = None
        if sig is not None:
            want = hmac.new(args.secret.encode(), (ts or "").encode() + b"." +
                            body, hashlib.sha256).hexdigest()
            sig_ok = hmac.compare_digest(sig, "sha256=" + want)
        with lock:
            status = 200
            if state["left429"] > 0:
                state["left429"] -= 1
                status = 429
            rec = {"path": self.path, "t": time.time(), "status": status,
                   "body": body.decode("utf-8", "replace"), "sig_ok": sig_ok,
                   "auth": self.headers.get("X-Sentry-Auth")}
            with open(args.log, "a") as f:
                f.write(json.dumps(rec) + "\n")
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", str(args.retry_after))
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


srv = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), H)
print("PORT %d" % srv.server_address[1], flush=True)
srv.serve_forever()
