#!/usr/bin/env python3
"""fake_cloud.py - a local stand-in for AssemblyAI and an OpenAI-compatible
chat API, for sluice's tests. Python 3 standard library only.

It speaks the wire formats the cloud stages use:
  AssemblyAI (Authorization: <key>, no "Bearer")
    POST /v2/upload               raw bytes -> {"upload_url"}
    POST /v2/transcript           {audio_url, speech_models, ...} -> {id, status}
    GET  /v2/transcript/<id>      queued -> processing -> completed | error
    GET  /v2/transcript?limit=N&before_id=&after_id=&status=
                                  {"page_details": {limit, result_count,
                                  current_url, prev_url, next_url},
                                  "transcripts": [{id, resource_url, status,
                                  created, completed, audio_url, error}]},
                                  newest first (the real list endpoint)
    errors are {"error": "..."}
  OpenAI (Authorization: Bearer <key>)
    POST /v1/chat/completions     {model, messages, response_format, ...}
    errors are {"error": {"message", "type", "param", "code"}}
A wrong or missing key gets 401.

As with the real services, a request whose answer is lost (reset,
truncated, malformed, empty, big, timeout) has still been carried out: the
transcript is created (counted in transcripts_created), the upload stored
(counted in uploads_unanswered; "uploads" counts answered ones), the chat
completion counted. Status faults (NNN, 429, quota) are refused requests.

The transcript of an uploaded file is the file's own text when it is UTF-8
text with lines "Speaker: words" (tests upload such "media"); any other
audio gets a built-in interview. The chat reply is derived from the prompt:
for the schema named "interview_analysis" one insight per transcript line
with a cue word and one persona per speaker; for any other JSON schema a
minimal instance of the schema filled from the prompt; without a schema a
line of text.

Faults, per route (upload, transcript, poll, list, chat), are consumed one per
request, in order, from a plan given with --faults
'chat=500,429*2;upload=reset' or POSTed to /_faults as
{"chat": ["500", "429"]}; with --fault-rate P --seed S every request with an
empty plan draws a fault from --fault-kinds with probability P. Fault
tokens:
  NNN          that HTTP status with an error body in the API's format
  429          rate limited, Retry-After: 1
  429ms        rate limited, retry-after-ms: 250 and Retry-After: 5
  quota        429 with code insufficient_quota
  timeout      sleep --slow-seconds before answering (the client times out)
  sleep:MS     answer normally after MS milliseconds
  slowread:MS  read the request body in 64 KiB steps, MS ms apart
  reset        send half of the body, then reset the connection
  truncated    a complete HTTP response whose JSON is cut short
  malformed    a complete HTTP response whose body is not JSON
  empty        a 200 response with an empty body
  big          a 4 MiB JSON body
  html502      a 502 whose body is an HTML page (a proxy's)
  nanretry     a 503 with retry-after-ms: NaN
  nul          the good reply plus a string holding \u0000
  error        (poll) the transcript ends in status "error"
  schema       (chat) content that breaks the requested schema
  length       (chat) finish_reason "length" with cut content
  refusal      (chat) a refusal instead of content

POST /echo answers {"received": <the JSON body>, "method", "token_ok":
whether X-Token carried the OpenAI key} (a webhook receiver for the http
stage); its log entries keep the Idempotency-Key header.

GET /_stats returns counters and a log of requests (with the bodies of chat
requests); POST /_reset clears them. It listens on --host (default
127.0.0.1) and --port (default 0: any free port); the chosen port is printed
on stdout as "PORT <n>".
"""
import argparse
import datetime
import hashlib
import json
import random
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_TRANSCRIPT = (
    "Interviewer: Thanks for joining. How do you handle invoices today?\n"
    "Dana: Honestly it is frustrating, the export is slow and I redo it by hand every week.\n"
    "Interviewer: What would make it better?\n"
    "Dana: I wish the reports were automatic, that would save me hours.\n"
    "Interviewer: Anything you like about the current tool?\n"
    "Dana: I love how simple the search is.\n"
)

CUES = [
    ("pain_point", ("frustrat", "slow", "hard", "annoy", "broken", "by hand", "problem")),
    ("wish", ("wish", "would love", "would be", "want", "need")),
    ("praise", ("love", "great", "simple", "easy", "like how")),
]


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.plan = {}
        self.rng = random.Random(args.seed)
        self.fault_kinds = [k for k in args.fault_kinds.split(",") if k]
        self.uploads = {}  # url -> bytes
        self.transcripts = {}  # id -> dict
        self.seq = 0  # creation order of transcripts
        self.reset()
        if args.faults:
            self.add_plan(parse_plan(args.faults))

    def reset(self):
        self.stats = {
            "uploads": 0, "uploads_started": 0, "uploads_incomplete": 0,
            "upload_bytes": 0, "uploads_unanswered": 0,
            "transcripts_created": 0, "polls": 0, "lists": 0,
            "chat": 0, "chat_by_chunk": {}, "unauthorized": 0,
            "faults": {}, "requests": [],
        }

    def add_plan(self, plan):
        for route, toks in plan.items():
            self.plan.setdefault(route, []).extend(toks)

    def next_fault(self, route):
        with self.lock:
            q = self.plan.get(route)
            if q:
                return q.pop(0)
            if self.args.fault_rate > 0 and self.fault_kinds:
                if self.rng.random() < self.args.fault_rate:
                    kinds = [k for k in self.fault_kinds if applies(k, route)]
                    if kinds:
                        return self.rng.choice(kinds)
        return None

    def count(self, key, n=1):
        with self.lock:
            self.stats[key] += n

    def log(self, entry):
        with self.lock:
            self.stats["requests"].append(entry)
            f = entry.get("fault")
            if f:
                self.stats["faults"][f] = self.stats["faults"].get(f, 0) + 1


def applies(kind, route):
    if kind in ("error",):
        return route == "poll"
    if kind in ("schema", "length", "refusal", "quota", "429ms"):
        return route == "chat"
    if kind.startswith("slowread"):
        return route == "upload"
    return True


# Faults after which the request has been carried out, only its answer lost.
ANSWER_LOST = ("reset", "truncated", "malformed", "empty", "big", "timeout")


def answer_lost(fault):
    return fault in ANSWER_LOST or (fault or "").startswith("sleep:")


def parse_plan(text):
    plan = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        route, _, toks = part.partition("=")
        out = []
        for tok in toks.split(","):
            tok = tok.strip()
            if not tok:
                continue
            n = 1
            if "*" in tok:
                tok, _, cnt = tok.partition("*")
                n = int(cnt)
            out.extend([tok] * n)
        plan.setdefault(route.strip(), []).extend(out)
    return plan


def transcript_text(data):
    """The transcript of uploaded bytes: the bytes themselves when they are
    "Speaker: words" text, else the built-in interview."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return DEFAULT_TRANSCRIPT
    lines = [l for l in text.splitlines() if l.strip()]
    if lines and all(re.match(r"^[A-Za-z][\w .'-]{0,40}:\s", l) for l in lines):
        return "\n".join(lines) + "\n"
    return DEFAULT_TRANSCRIPT


def utterances_of(text):
    out, t = [], 0
    for line in text.splitlines():
        speaker, _, words = line.partition(":")
        words = words.strip()
        n = len(words.split())
        ws = []
        for w in words.split():
            ws.append({"text": w, "start": t, "end": t + 300, "confidence": 0.95,
                       "speaker": speaker.strip()})
            t += 320
        out.append({"speaker": speaker.strip(), "text": words,
                    "start": ws[0]["start"] if ws else t,
                    "end": ws[-1]["end"] if ws else t,
                    "confidence": 0.95, "words": ws})
        del n
    return out


def analysis_of(prompt):
    """Deterministic insights and personas from the transcript lines in a
    prompt ("Speaker: words" lines)."""
    insights, speakers = [], []
    for line in prompt.splitlines():
        m = re.match(r"^([A-Za-z][\w .'-]{0,40}):\s+(.+)$", line.strip())
        if not m:
            continue
        speaker, words = m.group(1).strip(), m.group(2).strip()
        if speaker.lower() in ("interviewer", "host", "transcript", "chunk"):
            continue
        if speaker not in speakers:
            speakers.append(speaker)
        low = words.lower()
        for kind, cues in CUES:
            if any(c in low for c in cues):
                insights.append({
                    "kind": kind, "content": "%s: %s" % (kind.replace("_", " "), words[:80]),
                    "quote": words, "speaker": speaker, "confidence": 0.8,
                })
                break
    personas = [{"name": s, "role": "participant",
                 "description": "Speaks %d line(s) in this part of the interview"
                 % sum(1 for l in prompt.splitlines() if l.strip().startswith(s + ":")),
                 "traits": ["detail-oriented"]} for s in speakers]
    return {"insights": insights, "personas": personas}


def instance_of(schema, prompt):
    """A minimal instance of a JSON schema, with strings from the prompt."""
    t = schema.get("type")
    if isinstance(t, list):
        t = [x for x in t if x != "null"][0] if t else "string"
    if "enum" in schema:
        return schema["enum"][0]
    if t == "object":
        props = schema.get("properties", {})
        req = schema.get("required", list(props))
        return {k: instance_of(props.get(k, {}), prompt) for k in req}
    if t == "array":
        return [instance_of(schema.get("items", {}), prompt)]
    if t == "integer":
        return 1
    if t == "number":
        return 0.5
    if t == "boolean":
        return True
    if t == "null":
        return None
    return "generated from: " + prompt[:60]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-cloud/1"

    def log_message(self, fmt, *args):  # quiet
        pass

    # ---- plumbing ----------------------------------------------------------
    @property
    def st(self):
        return self.server.state

    def read_body(self, slow_ms=0):
        """Returns (bytes, complete)."""
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            data = b""
            while True:
                line = self.rfile.readline()
                if not line:
                    return data, False
                size = int(line.strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return data, True
                chunk = self.rfile.read(size)
                self.rfile.readline()
                data += chunk
        n = int(self.headers.get("Content-Length") or 0)
        parts, got = [], 0
        while got < n:
            if slow_ms:
                time.sleep(slow_ms / 1000.0)
            try:
                chunk = self.rfile.read(min(65536, n - got)) if slow_ms else self.rfile.read(n - got)
            except OSError:
                chunk = b""
            if not chunk:
                return b"".join(parts), False
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts), True

    def send(self, status, obj=None, raw=None, headers=None):
        body = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def error_body(self, api, status, message, code=None, etype=None):
        if api == "assemblyai":
            return {"error": message}
        return {"error": {"message": message, "type": etype or "server_error",
                          "param": None, "code": code}}

    def reset_connection(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                   struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def authorized(self, api):
        got = self.headers.get("Authorization")
        if api == "assemblyai":
            want = self.st.args.assemblyai_key
            ok = want is None or got == want
        else:
            want = self.st.args.openai_key
            ok = want is None or got == "Bearer " + want
        if not ok:
            self.st.count("unauthorized")
            msg = ("Authentication error, API token missing/invalid"
                   if api == "assemblyai" else "Incorrect API key provided")
            self.send(401, self.error_body(api, 401, msg, "invalid_api_key",
                                           "invalid_request_error"))
        return ok

    def apply_fault(self, api, route, fault, good):
        """Answers with fault applied to the good reply (a dict), or returns
        False when the fault does not replace the answer."""
        if fault is None:
            return False
        if fault == "timeout":
            time.sleep(self.st.args.slow_seconds)
            return False
        if fault.startswith("sleep:"):
            time.sleep(int(fault[6:]) / 1000.0)
            return False
        if fault.startswith("slowread"):
            return False
        if fault == "429":
            self.send(429, self.error_body(api, 429, "Too many requests",
                                           "rate_limit_exceeded", "requests"),
                      headers={"Retry-After": "1"})
            return True
        if fault == "429ms":
            self.send(429, self.error_body(api, 429, "Rate limit reached",
                                           "rate_limit_exceeded", "requests"),
                      headers={"retry-after-ms": "250", "Retry-After": "5"})
            return True
        if fault == "quota":
            self.send(429, self.error_body(
                api, 429, "You exceeded your current quota, please check your "
                "plan and billing details.", "insufficient_quota",
                "insufficient_quota"))
            return True
        if re.fullmatch(r"\d{3}", fault):
            status = int(fault)
            self.send(status, self.error_body(api, status, "injected %d" % status))
            return True
        if fault == "reset":
            self.reset_connection(200, good)
            return True
        if fault == "truncated":
            raw = json.dumps(good).encode()
            self.send(200, raw=raw[: max(1, len(raw) // 2)])
            return True
        if fault == "malformed":
            self.send(200, raw=b'{"id": oops, this is not json]')
            return True
        if fault == "empty":
            self.send(200, raw=b"")
            return True
        if fault == "big":
            self.send(200, {"padding": "x" * (4 << 20)})
            return True
        if fault == "html502":
            page = (b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway"
                    b"</title></head>\n<body><h1>Bad Gateway</h1><p>The proxy "
                    b"received an invalid response.</p>" + b"<!-- pad -->" * 200
                    + b"</body></html>\n")
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return True
        if fault == "nanretry":
            self.send(503, self.error_body(api, 503, "overloaded"),
                      headers={"retry-after-ms": "NaN"})
            return True
        if fault == "nul":
            obj = dict(good)
            obj["note"] = "before\u0000after"
            self.send(200, obj)
            return True
        return False

    # ---- routes ------------------------------------------------------------
    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/_stats":
            with self.st.lock:
                body = json.dumps(self.st.stats).encode()
            self.send(200, raw=body)
            return
        m = re.fullmatch(r"/v2/transcript/([\w-]+)", path)
        if m:
            self.poll(m.group(1))
            return
        if path == "/v2/transcript":
            self.list_transcripts()
            return
        self.send(404, {"error": "Not found"})

    def do_POST(self):
        path = self.path.split("?")[0]
        if path == "/_faults":
            data, _ = self.read_body()
            with self.st.lock:
                self.st.add_plan({k: list(v) for k, v in json.loads(data).items()})
            self.send(200, {"ok": True})
            return
        if path == "/_reset":
            self.read_body()
            with self.st.lock:
                self.st.reset()
                self.st.plan = {}
            self.send(200, {"ok": True})
            return
        if path == "/v2/upload":
            self.upload()
        elif path == "/v2/transcript":
            self.create_transcript()
        elif path == "/v1/chat/completions":
            self.chat()
        elif path == "/echo":
            self.echo()
        else:
            self.read_body()
            self.send(404, {"error": "Not found"})

    def upload(self):
        fault = self.st.next_fault("upload")
        slow = int(fault.split(":")[1]) if fault and fault.startswith("slowread:") else 0
        self.st.count("uploads_started")
        data, complete = self.read_body(slow)
        if complete and not self.authorized("assemblyai"):
            return
        self.st.log({"peer_port": self.client_address[1], "at": time.time(),
                     "route": "upload", "bytes": len(data), "complete": complete,
                     "fault": fault})
        if not complete:
            self.st.count("uploads_incomplete")
            self.close_connection = True
            return
        url = "https://cdn.assemblyai.invalid/upload/%s" % uuid.uuid4()
        good = {"upload_url": url}
        if answer_lost(fault) and fault != "timeout":
            with self.st.lock:  # stored; the client never learns the URL
                self.st.uploads[url] = data
                self.st.stats["uploads_unanswered"] += 1
        if self.apply_fault("assemblyai", "upload", fault, good):
            return
        with self.st.lock:
            self.st.uploads[url] = data
            self.st.stats["uploads"] += 1
            self.st.stats["upload_bytes"] += len(data)
            self.st.stats.setdefault("upload_sha256", []).append(
                hashlib.sha256(data).hexdigest())
        self.send(200, good)

    def create_transcript(self):
        data, _ = self.read_body()
        fault = self.st.next_fault("transcript")
        if not self.authorized("assemblyai"):
            return
        try:
            req = json.loads(data)
        except ValueError:
            self.send(400, {"error": "Invalid JSON body"})
            return
        self.st.log({"peer_port": self.client_address[1], "at": time.time(),
                     "route": "transcript", "body": req, "fault": fault})
        if not isinstance(req.get("audio_url"), str):
            self.send(400, {"error": "audio_url is required"})
            return
        sm = req.get("speech_models")
        if sm is not None and not (isinstance(sm, list) and all(isinstance(x, str) for x in sm)):
            self.send(400, {"error": "speech_models must be a list of strings"})
            return
        tid = str(uuid.uuid4())
        good = {"id": tid, "status": "queued", "audio_url": req["audio_url"]}
        if answer_lost(fault):
            self.create(tid, req)
        if self.apply_fault("assemblyai", "transcript", fault, good):
            return
        if not answer_lost(fault):
            self.create(tid, req)
        self.send(200, good)

    def create(self, tid, req):
        with self.st.lock:
            audio = self.st.uploads.get(req["audio_url"], b"")
            self.st.seq += 1
            self.st.transcripts[tid] = {
                "request": req, "polls": 0, "seq": self.st.seq,
                "created": datetime.datetime.now(datetime.timezone.utc)
                .replace(tzinfo=None).isoformat(timespec="microseconds"),
                "text": transcript_text(audio),
            }
            self.st.stats["transcripts_created"] += 1

    def list_transcripts(self):
        """GET /v2/transcript: the account's transcripts, newest first, in
        pages (limit 1..200, default 10; before_id: older than that one;
        after_id: newer; status filter)."""
        fault = self.st.next_fault("list")
        if not self.authorized("assemblyai"):
            return
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        arg = lambda k: (q.get(k) or [None])[0]
        try:
            limit = int(arg("limit") or 10)
        except ValueError:
            limit = 0
        if not 1 <= limit <= 200:
            self.send(400, {"error": "limit must be between 1 and 200"})
            return
        self.st.count("lists")
        self.st.log({"peer_port": self.client_address[1], "at": time.time(),
                     "route": "list", "fault": fault})
        with self.st.lock:
            items = sorted(self.st.transcripts.items(),
                           key=lambda kv: -kv[1]["seq"])
            seq_of = {tid: t["seq"] for tid, t in items}
            before, after = arg("before_id"), arg("after_id")
            if before is not None:
                items = [kv for kv in items if kv[1]["seq"] < seq_of.get(before, 0)]
            if after is not None:
                items = [kv for kv in items if kv[1]["seq"] > seq_of.get(after, 1 << 62)]
                items = items[-limit:]  # the oldest ones newer than after_id
            items = [(tid, t, self.status_of(t)) for tid, t in items]
            if arg("status"):
                items = [x for x in items if x[2] == arg("status")]
            page, more = items[:limit], len(items) > limit
        base = "https://api.assemblyai.com/v2/transcript?limit=%d" % limit
        good = {
            "page_details": {
                "limit": limit, "result_count": len(page),
                "current_url": base + "".join(
                    "&%s=%s" % (k, v[0]) for k, v in q.items() if k != "limit"),
                "prev_url": base + "&before_id=" + page[-1][0] if page and more else None,
                "next_url": base + "&after_id=" + page[0][0] if page else None,
            },
            "transcripts": [{
                "id": tid,
                "resource_url": "https://api.assemblyai.com/v2/transcript/" + tid,
                "status": status, "created": t["created"],
                "completed": t["created"] if status in ("completed", "error") else None,
                "audio_url": t["request"]["audio_url"],
                "error": "Transcoding failed" if status == "error" else None,
            } for tid, t, status in page],
        }
        if not self.apply_fault("assemblyai", "list", fault, good):
            self.send(200, good)

    def status_of(self, t):
        if t.get("failed"):
            return "error"
        if t["polls"] == 0:
            return "queued"
        if t["polls"] <= self.st.args.polls_before_complete:
            return "processing"
        return "completed"

    def poll(self, tid):
        fault = self.st.next_fault("poll")
        if not self.authorized("assemblyai"):
            return
        with self.st.lock:
            t = self.st.transcripts.get(tid)
            if t is not None:
                t["polls"] += 1
                self.st.stats["polls"] += 1
        self.st.log({"peer_port": self.client_address[1], "at": time.time(),
                     "route": "poll", "id": tid, "fault": fault})
        if t is None:
            self.send(404, {"error": "Transcript not found"})
            return
        n = self.st.args.polls_before_complete
        if fault == "error":
            t["failed"] = True
        if t.get("failed"):
            good = {"id": tid, "status": "error", "text": None,
                    "error": "Transcoding failed: the file does not appear to contain audio."}
        elif t["polls"] <= n:
            good = {"id": tid, "status": "queued" if t["polls"] == 1 else "processing",
                    "text": None}
        else:
            utts = utterances_of(t["text"])
            words = [w for u in utts for w in u["words"]]
            good = {"id": tid, "status": "completed",
                    "text": " ".join(u["text"] for u in utts),
                    "utterances": utts if t["request"].get("speaker_labels") else None,
                    "words": words, "confidence": 0.95,
                    "audio_duration": (words[-1]["end"] // 1000) if words else 0,
                    "language_code": t["request"].get("language_code", "en_us"),
                    "speech_model": (t["request"].get("speech_models") or ["best"])[0]}
        if fault == "error" or not self.apply_fault("assemblyai", "poll", fault, good):
            self.send(200, good)

    def chat(self):
        data, _ = self.read_body()
        fault = self.st.next_fault("chat")
        if not self.authorized("openai"):
            return
        try:
            req = json.loads(data)
        except ValueError:
            self.send(400, self.error_body("openai", 400, "We could not parse the JSON body",
                                           None, "invalid_request_error"))
            return
        msgs = req.get("messages")
        if not isinstance(req.get("model"), str) or not isinstance(msgs, list) or not msgs:
            self.send(400, self.error_body("openai", 400, "model and messages are required",
                                           None, "invalid_request_error"))
            return
        prompt = "\n".join(m.get("content", "") for m in msgs
                           if isinstance(m, dict) and isinstance(m.get("content"), str))
        user = "\n".join(m.get("content", "") for m in msgs
                         if isinstance(m, dict) and m.get("role") == "user"
                         and isinstance(m.get("content"), str))
        cm = re.search(r"[Cc]hunk (\d+)(?:/| of )(\d+)", prompt)
        chunk = "%s/%s" % (cm.group(1), cm.group(2)) if cm else None
        with self.st.lock:
            self.st.stats["chat"] += 1
            if chunk:
                byc = self.st.stats["chat_by_chunk"]
                byc[chunk] = byc.get(chunk, 0) + 1
        self.st.log({"peer_port": self.client_address[1], "at": time.time(),
                     "route": "chat", "chunk": chunk, "fault": fault, "body": req})

        rf = req.get("response_format") or {}
        schema, name = None, None
        if rf.get("type") == "json_schema":
            js = rf.get("json_schema") or {}
            schema, name = js.get("schema"), js.get("name")
        if name == "interview_analysis":
            content = analysis_of(user)
        elif schema is not None:
            content = instance_of(schema, user)
        elif rf.get("type") == "json_object":
            content = {"text": "generated from: " + user[:60]}
        else:
            content = None
        text = json.dumps(content) if content is not None else "Generated: " + user[:200]
        finish, refusal = "stop", None
        if fault == "schema":
            text = json.dumps({"unexpected": True, "insights": "not a list"})
        elif fault == "length":
            text, finish = text[: len(text) // 2], "length"
        elif fault == "refusal":
            text, refusal = None, "I'm sorry, I can't help with that."
        good = {
            "id": "chatcmpl-%s" % uuid.uuid4().hex[:12], "object": "chat.completion",
            "created": int(time.time()), "model": req["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                 "refusal": refusal},
                         "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text or "") // 4,
                      "total_tokens": (len(prompt) + len(text or "")) // 4},
        }
        if fault in ("schema", "length", "refusal") or not self.apply_fault(
                "openai", "chat", fault, good):
            self.send(200, good)


    def echo(self):
        """A webhook receiver: answers what it got (never the headers, only
        whether the expected token came)."""
        data, _ = self.read_body()
        fault = self.st.next_fault("echo")
        token = self.headers.get("X-Token")
        try:
            body = json.loads(data) if data else None
        except ValueError:
            body = data.decode("utf-8", "replace")
        self.st.log({"peer_port": self.client_address[1], "at": time.time(),
                     "route": "echo", "fault": fault, "body": body,
                     "content_type": self.headers.get("Content-Type"),
                     "idempotency_key": self.headers.get("Idempotency-Key")})
        good = {"received": body, "method": self.command,
                "token_ok": token is not None and token == self.st.args.openai_key}
        if not self.apply_fault("openai", "echo", fault, good):
            self.send(200, good)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):  # a reset client is normal
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--assemblyai-key", default=None)
    ap.add_argument("--openai-key", default=None)
    ap.add_argument("--faults", default="")
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--fault-kinds", default="500,503,429,reset,truncated,malformed")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--slow-seconds", type=float, default=5.0)
    ap.add_argument("--polls-before-complete", type=int, default=2)
    args = ap.parse_args()
    srv = Server((args.host, args.port), Handler)
    srv.state = State(args)
    print("PORT %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
