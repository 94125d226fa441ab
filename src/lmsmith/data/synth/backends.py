"""What generators send to a model and get back, and the endpoint backend (any OpenAI-compatible server).

A backend answers a batch of chat `Request`s, calling `on_reply(index, reply_or_error)` as each finishes so
the caller can cache answers one by one (a run killed mid-batch keeps everything already answered).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

from lmsmith.errors import LmsmithError


@dataclass(frozen=True)
class Sampling:
    """Decoding settings of one call. `seed` is per call (derived from the run seed and the record), so a
    sampled answer is reproducible and two samples of one prompt differ."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int = 0
    json_schema: dict[str, Any] | None = None

    def key(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Request:
    messages: list[dict[str, Any]]
    sampling: Sampling
    template_hash: str = ""


@dataclass
class Reply:
    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "finish_reason": self.finish_reason, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens}

    @classmethod
    def from_json(cls, d: dict[str, Any], cached: bool = True) -> "Reply":
        return cls(d["text"], d.get("finish_reason"), int(d.get("prompt_tokens") or 0),
                   int(d.get("completion_tokens") or 0), cached)


OnReply = Callable[[int, "Reply | Exception"], None]


@runtime_checkable
class SynthBackend(Protocol):
    """`backend_id` names where answers come from (goes into every cache key); `model` is the model's name."""

    backend_id: str
    model: str

    def run(self, requests: list[Request], on_reply: OnReply) -> None: ...

    def close(self) -> None: ...


def request_key(backend_id: str, model: str, req: Request) -> str:
    """sha256 of (backend, model, prompt messages, sampling params, template): the cache key of one call."""
    blob = json.dumps([backend_id, model, req.messages, req.sampling.key(), req.template_hash],
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's structured-output request for a JSON schema (vLLM and `lmsmith serve` read it too)."""
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}


@dataclass
class EndpointBackend:
    """Calls `/v1/chat/completions` of any OpenAI-compatible server through the shared `EndpointClient`
    (bounded concurrency, deadline, retries with backoff honouring Retry-After, rate limit)."""

    url: str
    model: str
    api_key: str | None = None
    concurrency: int = 8
    timeout: float = 120.0
    max_retries: int = 4
    rate_limit: float | None = None
    backend_id: str = field(init=False)

    def __post_init__(self) -> None:
        from lmsmith.endpoint import EndpointClient

        if not self.model:
            raise LmsmithError("--endpoint needs --api-model NAME", "the model name the server serves")
        self.client = EndpointClient(self.url, self.api_key, concurrency=self.concurrency, timeout=self.timeout,
                                     max_retries=self.max_retries, rate_limit=self.rate_limit)
        self.backend_id = f"endpoint:{self.client.base}"

    def one(self, req: Request) -> Reply:
        from lmsmith.endpoint import chat_text

        s = req.sampling
        body: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens,
                                "seed": s.seed}
        if s.json_schema is not None:
            body["response_format"] = response_format(s.json_schema)
        data = self.client.chat(self.model, req.messages, **body)
        text, finish = chat_text(data, self.client.base)
        usage = data.get("usage") or {}
        return Reply(text, finish, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))

    def run(self, requests: list[Request], on_reply: OnReply) -> None:
        def call(i: int) -> None:
            try:
                reply: Reply | Exception = self.one(requests[i])
            except LmsmithError as e:
                reply = e
            on_reply(i, reply)

        self.client.map(call, range(len(requests)))

    def close(self) -> None:
        self.client.close()
