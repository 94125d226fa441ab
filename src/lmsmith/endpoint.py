"""One HTTP client for every OpenAI-compatible server lmsmith talks to (eval, synth, align).

What a long batch job against someone else's server needs, and a bare `httpx.post` lacks:

- bounded concurrency (`concurrency` requests in flight, shared by all threads using the client);
- a total deadline per attempt (`timeout` seconds from sending to the last byte), so a server that hangs or
  trickles a byte every few seconds fails as "timed out", never runs forever;
- retries with exponential backoff and jitter on 429, 408, 5xx, dropped connections and timeouts, waiting
  what the server's `Retry-After` (or `retry-after-ms`) asks for instead when it says;
- a client-side rate limit (`rate_limit` requests per second);
- one `LmsmithError` line at the end that says which: "timed out", "cannot reach", or "answered HTTP N".
"""

from __future__ import annotations

import email.utils
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TypeVar

import httpx

from lmsmith.errors import LmsmithError

T = TypeVar("T")
R = TypeVar("R")

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})


@dataclass
class EndpointStats:
    requests: int = 0  # attempts sent
    retries: int = 0
    failures: int = 0  # calls that gave up
    prompt_tokens: int = 0
    completion_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **kw: int) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


class _Retryable(Exception):
    """An attempt that failed in a way worth trying again; `kind` is timeout, connect or status."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind, self.message, self.retry_after = kind, message, retry_after


def parse_retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds the server asks us to wait: `retry-after-ms`, `Retry-After: <seconds>` or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def base_url(url: str) -> str:
    """`http://host:8000`, `.../v1` and `.../v1/` all mean the same OpenAI API root."""
    base = url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise LmsmithError(f"endpoint '{url}' is not an http(s) URL", "e.g. --endpoint http://127.0.0.1:8000/v1")
    return base if base.endswith("/v1") else base + "/v1"


class EndpointClient:
    """`EndpointClient(url, api_key=...).post("/chat/completions", body)` with retries, deadline and limits.

    Thread-safe: `map(fn, items)` runs `fn` over items on `concurrency` threads, and every `post` from any
    thread waits for one of the `concurrency` slots, so the server never sees more requests at once.
    """

    def __init__(self, url: str, api_key: str | None = None, *, concurrency: int = 8, timeout: float = 120.0,
                 max_retries: int = 4, backoff: float = 0.5, max_backoff: float = 30.0, max_retry_after: float = 120.0,
                 rate_limit: float | None = None, connect_timeout: float = 10.0, seed: int | None = None):
        if concurrency < 1:
            raise LmsmithError(f"concurrency must be >= 1, got {concurrency}")
        if timeout <= 0:
            raise LmsmithError(f"timeout must be > 0 seconds, got {timeout}")
        if max_retries < 0:
            raise LmsmithError(f"max_retries must be >= 0, got {max_retries}")
        if rate_limit is not None and rate_limit <= 0:
            raise LmsmithError(f"rate limit must be > 0 requests/s, got {rate_limit}", "leave it unset for no limit")
        self.base = base_url(url)
        self.concurrency, self.timeout, self.max_retries = concurrency, float(timeout), max_retries
        self.backoff, self.max_backoff, self.max_retry_after = backoff, max_backoff, max_retry_after
        self.rate_limit, self.connect_timeout = rate_limit, connect_timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(headers=headers, limits=httpx.Limits(max_connections=concurrency + 2,
                                                                      max_keepalive_connections=concurrency + 2))
        self.slots = threading.BoundedSemaphore(concurrency)
        self.stats = EndpointStats()
        self._rate_lock = threading.Lock()
        self._next_slot = 0.0
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "EndpointClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ one call
    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON, return the parsed JSON answer; retry what is worth retrying; raise LmsmithError at the end."""
        url = self.base + path
        last: _Retryable | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                wait = self._wait_time(attempt, last)
                self.stats.add(retries=1)
                time.sleep(wait)
            try:
                data = self._attempt(url, body)
            except _Retryable as e:
                last = e
                continue
            usage = data.get("usage") if isinstance(data, dict) else None
            if isinstance(usage, dict):
                self.stats.add(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                               completion_tokens=int(usage.get("completion_tokens") or 0))
            return data
        self.stats.add(failures=1)
        assert last is not None
        tries = f"{self.max_retries + 1} attempt{'s' if self.max_retries else ''}"
        if last.kind == "timeout":
            raise LmsmithError(f"{url} timed out: {last.message} ({tries})",
                               "the server is stuck or overloaded; raise --timeout or lower --concurrency")
        if last.kind == "connect":
            raise LmsmithError(f"cannot reach {url}: {last.message} ({tries})", "is the server running? check --endpoint")
        raise LmsmithError(f"{url} {last.message} ({tries})",
                           "the server is overloaded or failing; lower --concurrency / --rate-limit or retry later")

    def _wait_time(self, attempt: int, last: _Retryable | None) -> float:
        if last is not None and last.retry_after is not None:
            return min(last.retry_after, self.max_retry_after)
        with self._rng_lock:
            jitter = self._rng.uniform(0.5, 1.0)  # "equal jitter": spread retries, keep a floor
        return min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * jitter

    def _wait_for_rate(self) -> None:
        if not self.rate_limit:
            return
        with self._rate_lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self.rate_limit
        if slot > now:
            time.sleep(slot - now)

    def _attempt(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.slots:
            self._wait_for_rate()
            self.stats.add(requests=1)
            start = time.monotonic()
            deadline = start + self.timeout
            timeout = httpx.Timeout(self.timeout, connect=min(self.connect_timeout, self.timeout))
            try:
                with self.http.stream("POST", url, json=body, timeout=timeout) as r:
                    chunks = []
                    for chunk in r.iter_bytes():
                        chunks.append(chunk)
                        if time.monotonic() > deadline:
                            raise _Retryable("timeout", f"no complete answer within {self.timeout:g} s "
                                                        "(the server is sending too slowly)")
                    raw = b"".join(chunks)
            except httpx.TimeoutException as e:
                what = "connecting" if isinstance(e, httpx.ConnectTimeout) else "waiting for the answer"
                raise _Retryable("timeout", f"no answer within {self.timeout:g} s ({what})") from None
            except httpx.TransportError as e:
                raise _Retryable("connect", f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from None
        text = raw.decode("utf-8", "replace")
        if r.status_code in RETRY_STATUS or r.status_code >= 500:
            raise _Retryable("status", f"answered HTTP {r.status_code}: {text[:200]}", parse_retry_after(r.headers))
        if r.status_code >= 400:
            hint = ("check --api-key" if r.status_code in (401, 403) else
                    "check --api-model" if r.status_code == 404 else "check the request options and the server's logs")
            raise LmsmithError(f"{url} answered HTTP {r.status_code}: {text[:300]}", hint)
        try:
            return json.loads(text)
        except ValueError:
            raise LmsmithError(f"{url} did not answer JSON: {text[:120]!r}", "is --endpoint an OpenAI-compatible API?") from None

    # ------------------------------------------------------------------ many calls
    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """`[fn(x) for x in items]` on `concurrency` threads, results in input order."""
        items = list(items)
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    # ------------------------------------------------------------------ OpenAI helpers
    def chat(self, model: str, messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
        """/chat/completions; `params` go into the body as given (None values dropped)."""
        body = {"model": model, "messages": messages, **{k: v for k, v in params.items() if v is not None}}
        return self.post("/chat/completions", body)

    def complete(self, model: str, prompt: str, **params: Any) -> dict[str, Any]:
        body = {"model": model, "prompt": prompt, **{k: v for k, v in params.items() if v is not None}}
        return self.post("/completions", body)


def chat_text(data: dict[str, Any], where: str = "the endpoint") -> tuple[str, str | None]:
    """(content, finish_reason) of the first choice of a chat completion; a malformed answer is one error."""
    try:
        choice = data["choices"][0]
        return choice["message"].get("content") or "", choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise LmsmithError(f"unexpected chat completion from {where}: {str(data)[:160]}") from None
