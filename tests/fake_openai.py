"""A fake OpenAI-compatible server on 127.0.0.1 for tests: counts requests, answers deterministically, and
can fail on cue (HTTP 500, 429 with Retry-After, hang, trickle one byte at a time).

    with FakeOpenAI() as srv:
        srv.script = ["500", "429:1"]   # the next requests fail like this, in order, then all succeed
        srv.url                          # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:8]


def example(schema: dict[str, Any], salt: str) -> Any:
    """A deterministic instance of a (simple) JSON schema."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][int(salt, 16) % len(schema["enum"])]
    t = schema.get("type", "object")
    t = t[0] if isinstance(t, list) else t
    if t == "object":
        props = schema.get("properties", {})
        return {k: example(v, digest(salt, k)) for k, v in props.items()}
    if t == "array":
        return [example(schema.get("items", {"type": "string"}), salt)] * max(1, schema.get("minItems", 1))
    if t == "integer":
        lo, hi = schema.get("minimum", 0), schema.get("maximum", 100)
        return lo + int(salt, 16) % (hi - lo + 1)
    if t == "number":
        return float(schema.get("minimum", 0)) + 0.5
    if t == "boolean":
        return int(salt, 16) % 2 == 0
    if t == "null":
        return None
    s = "v" + salt
    return s[:schema["maxLength"]] if "maxLength" in schema else s


def default_text(body: dict[str, Any]) -> str:
    msgs = body.get("messages") or [{"content": body.get("prompt", "")}]
    last = str(msgs[-1].get("content", ""))
    rf = body.get("response_format") or {}
    if rf.get("type") == "json_schema":
        schema = rf["json_schema"]["schema"]
        return json.dumps(example(schema, digest(msgs, body.get("seed"))), ensure_ascii=False)
    return f"Answer {digest(msgs, body.get('seed'))}: " + " ".join(last.split()[:8])


class FakeOpenAI:
    def __init__(self, responder: Callable[[dict[str, Any]], str] | None = None, delay: float = 0.0):
        self.responder = responder or default_text
        self.delay = delay
        self.script: list[str] = []
        self.requests: list[dict[str, Any]] = []  # bodies, in arrival order
        self.answered: list[dict[str, Any]] = []  # bodies answered with 200
        self.inflight = self.max_inflight = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def send(self, code: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with fake.lock:
                    fake.requests.append(body)
                    action = fake.script.pop(0) if fake.script else "ok"
                    fake.inflight += 1
                    fake.max_inflight = max(fake.max_inflight, fake.inflight)
                try:
                    fake.handle(self, body, action)
                finally:
                    with fake.lock:
                        fake.inflight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def handle(self, h: BaseHTTPRequestHandler, body: dict[str, Any], action: str) -> None:
        if action == "500":
            return h.send(500, b'{"error": {"message": "boom"}}')
        if action.startswith("429"):
            after = action.split(":")[1] if ":" in action else None
            return h.send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": after} if after else None)
        if action == "hang":
            time.sleep(30)
            return
        if self.delay:
            time.sleep(self.delay)
        if h.path.endswith("/chat/completions"):
            text = self.responder(body)
            payload = {"id": "x", "object": "chat.completion", "model": body.get("model"),
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": len(json.dumps(body.get("messages")).split()),
                                 "completion_tokens": len(text.split())}}
        else:
            text = self.responder(body)
            payload = {"id": "x", "object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}
        data = json.dumps(payload).encode()
        if action == "trickle":  # headers at once, then one byte every 0.3 s
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            for b in data:
                h.wfile.write(bytes([b]))
                h.wfile.flush()
                time.sleep(0.3)
            return
        with self.lock:
            self.answered.append(body)
        h.send(200, data)

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def count(self) -> int:
        return len(self.requests)


if __name__ == "__main__":  # a standalone fake for manual runs and subprocess tests: python fake_openai.py PORTFILE
    import sys

    delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    with FakeOpenAI(delay=delay) as srv:
        open(sys.argv[1], "w").write(srv.url)
        while True:
            time.sleep(1)
