"""A fake engine with the real Engine's interface, for fast server tests without model compute.

It "generates" a scripted text token by token (real tokenizer, real streaming deltas), honours the
parameters the server passes through (max_tokens, n, stop, ignore_eos, logprobs, json_schema/json_object)
and keeps the real engine's bookkeeping (running/waiting under max_num_seqs, stats, abort). What it writes:
- a JSON instance of the schema when `json_schema`/`json_object` is set (like constrained decoding);
- a `<tool_call>` for get_weather when the prompt contains "CALL_TOOL" (a model choosing a tool);
- otherwise "Paris is the capital of France." (a sentence chosen by `seed` when one is given).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Any

from lmsmith.errors import LmsmithError

SENTENCES = ["Paris is the capital of France.", "Praha je hlavní město.", "Warszawa jest stolicą Polski.",
             "Ljubljana je glavno mesto."]
TOOL_TEXT = 'Let me check. <tool_call>{"name": "get_weather", "arguments": {"city": "Praha"}}</tool_call>'


@dataclass
class RequestOutput:
    request_id: str
    index: int
    new_token_ids: list[int]
    text_delta: str
    token_ids: list[int]
    text: str
    finished: bool
    finish_reason: str | None
    logprobs: list | None
    prompt_token_ids: list[int]
    num_cached_tokens: int = 0
    metrics: Any = None


def example(schema: dict) -> Any:
    """A small instance of a JSON schema (what constrained decoding would guarantee)."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return example(schema[key][0])
    t = schema.get("type", "object")
    t = t[0] if isinstance(t, list) else t
    if t == "object":
        props = schema.get("properties", {})
        return {k: example(props[k]) for k in props if k in schema.get("required", list(props))}
    if t == "array":
        return [example(schema.get("items", {"type": "integer"}))]
    return {"string": "Praha", "integer": 3, "number": 1.5, "boolean": True, "null": None}[t]


class _Seq:
    def __init__(self, rid, index, prompt, params, target):
        self.rid, self.index, self.prompt, self.params, self.target = rid, index, prompt, params, target
        self.out: list[int] = []
        self.text = ""


class FakeEngine:
    def __init__(self, model_dir, max_model_len: int = 2048, max_num_seqs: int = 8, step_delay: float = 0.002,
                 filler: str = " more"):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs
        self.vocab_size = len(self.tokenizer)
        self.eos_token_ids = [self.tokenizer.eos_token_id]
        self.step_delay = step_delay
        self.filler = self.tokenizer(filler, add_special_tokens=False)["input_ids"]
        self.seen_prompts: list[list[int]] = []
        self.waiting: list[_Seq] = []
        self.running: list[_Seq] = []
        self.pending: list[RequestOutput] = []
        self.counts = dict(prompt_tokens=0, generation_tokens=0, prefix_cache_queries=0, prefix_cache_hits=0)
        self.seen_params: list = []

    # the Engine interface
    def add_request(self, request_id: str, prompt, params) -> None:
        params.validate()
        ids = self.tokenizer(prompt)["input_ids"] if isinstance(prompt, str) else list(prompt)
        if len(ids) >= self.max_model_len:
            raise LmsmithError(f"the prompt has {len(ids)} tokens but the model's context is {self.max_model_len}")
        self.seen_params.append(params)
        self.seen_prompts.append(list(ids))
        text = self.tokenizer.decode(ids)
        for i in range(params.n):
            if params.json_schema is not None:
                target = json.dumps(example(params.json_schema))
            elif params.json_object:
                target = '{"answer": 42}'
            elif "CALL_TOOL" in text:
                target = TOOL_TEXT
            else:
                target = SENTENCES[random.Random(params.seed + i).randrange(4)] if params.seed is not None \
                    else SENTENCES[0]
            tids = self.tokenizer(target, add_special_tokens=False)["input_ids"]
            self.waiting.append(_Seq(request_id, i, ids, params, tids))
        self.counts["prompt_tokens"] += len(ids)
        self.counts["prefix_cache_queries"] += 1

    def abort(self, request_id: str) -> None:
        for lst in (self.waiting, self.running):
            lst[:] = [s for s in lst if s.rid != request_id]

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self.pending)

    def stats(self) -> dict:
        used = len(self.running)
        return dict(running=len(self.running), waiting=len(self.waiting), kv_blocks_total=64, kv_blocks_used=used,
                    kv_usage=used / 64, preemptions=0, **self.counts)

    def step(self) -> list[RequestOutput]:
        time.sleep(self.step_delay)
        while self.waiting and len(self.running) < self.max_num_seqs:
            self.running.append(self.waiting.pop(0))
        outs, self.pending = self.pending, []
        for s in list(self.running):
            outs.append(self._advance(s))
        return outs

    def _advance(self, s: _Seq) -> RequestOutput:
        p = s.params
        k = len(s.out)
        tok = s.target[k] if k < len(s.target) else self.filler[k % len(self.filler)]
        s.out.append(tok)
        self.counts["generation_tokens"] += 1
        text = self.tokenizer.decode(s.out)
        reason = None
        for stop in p.stop or []:
            if stop in text:
                text, reason = text[:text.index(stop)], "stop"
        if reason is None and len(s.out) >= len(s.target) and not p.ignore_eos:
            reason = "stop"
        if reason is None and p.max_tokens is not None and len(s.out) >= p.max_tokens:
            reason = "length"
        delta, s.text = text[len(s.text):], text
        if reason:
            self.running.remove(s)
        lp = None
        if p.logprobs:
            lp = [{"token_id": tok, "logprob": -0.5,
                   "top_logprobs": [(tok, -0.5), (self.filler[0], -1.5)][:max(0, p.top_logprobs or 0)]}]
        return RequestOutput(s.rid, s.index, [tok], delta, list(s.out), text, reason is not None, reason, lp, s.prompt)
