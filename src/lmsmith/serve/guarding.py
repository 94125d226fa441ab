"""The guard in the server (`lmsmith serve --guard input,output --guard-action block|flag`).

Input: user messages, tool results and completion prompts are scanned for prompt injection (and control-token
strings) before the prompt is built; with `block`, a flagged request gets a 400 in OpenAI's error shape with
code `guard`; with `flag`, it goes through and the flag is counted. Output: each choice's text is scanned for
secrets, PII and system-prompt leakage; with `block`, a flagged completion is replaced by a 400 (streams end
with an error event: the headers are already sent); with `flag`, the findings are redacted. Streams are held
per choice until it finishes, since a guard cannot take back text it already sent.

Results go to Prometheus (`lmsmith_guard_*`) and onto the request: `request.state.guard` is
`{"input": [...], "output": [...]}` (dicts of flagged results), for a request log to pick up.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, AsyncIterator

from prometheus_client import CollectorRegistry, Counter

from lmsmith.errors import LmsmithError
from lmsmith.guard.output import OutputGuard
from lmsmith.guard.rules import tokenizer_special_tokens
from lmsmith.guard.scan import Guard
from lmsmith.serve.api_errors import APIError

STAGES = ("input", "output")
ACTIONS = ("block", "flag")
SCANNED_ROLES = ("user", "tool", "function")  # system/developer text is the operator's, assistant text ours


@dataclass
class GuardSettings:
    stages: tuple[str, ...] = STAGES
    action: str = "block"
    threshold: float | None = None
    model: str | None = None

    @classmethod
    def parse(cls, spec: str | None, action: str = "block", threshold: float | None = None,
              model: str | None = None) -> "GuardSettings | None":
        """`--guard input,output` -> settings (None when the flag is absent)."""
        if not spec:
            return None
        stages = tuple(dict.fromkeys(s.strip() for s in spec.split(",") if s.strip()))
        bad = [s for s in stages if s not in STAGES]
        if bad or not stages:
            raise LmsmithError(f"--guard {spec!r}: unknown stage {', '.join(bad) or '(none)'}",
                               "use --guard input, --guard output or --guard input,output")
        if action not in ACTIONS:
            raise LmsmithError(f"--guard-action {action!r} is not one of {', '.join(ACTIONS)}", "block or flag")
        return cls(stages, action, threshold, model)


class ServerGuard:
    def __init__(self, settings: GuardSettings, registry: CollectorRegistry, tokenizer: Any = None):
        self.settings = settings
        self.action = settings.action
        extra = tokenizer_special_tokens(tokenizer) if tokenizer is not None else []
        self.input = Guard(settings.model, threshold=settings.threshold, extra_control_tokens=extra) \
            if "input" in settings.stages else None
        # a user may quote `<|im_start|>` asking about chat templates (the server tokenizes it as text); a tool
        # result or retrieved text that carries one is flagged outright
        self.input_user = Guard(self.input.model, threshold=settings.threshold, extra_control_tokens=extra,
                                control_tokens_flag=False) if self.input is not None else None
        self.output = OutputGuard() if "output" in settings.stages else None
        self.scanned = Counter("lmsmith_guard_scanned", "texts scanned by the guard", ["stage"], registry=registry)
        self.flagged = Counter("lmsmith_guard_flags", "guard findings by stage and reason", ["stage", "reason"],
                               registry=registry)
        self.blocked = Counter("lmsmith_guard_blocked", "requests answered with a guard error", ["stage"],
                               registry=registry)
        self.control_tokens = Counter("lmsmith_guard_control_tokens",
                                      "control-token strings found in user content and tool results", registry=registry)

    # ------------------------------------------------------------------------------------------ input
    @staticmethod
    def _note(request: Any, stage: str, items: list[dict]) -> None:
        state = getattr(request, "state", None)
        if state is None:
            return
        log = getattr(state, "guard", None) or {"input": [], "output": []}
        log[stage].extend(items)
        state.guard = log

    async def check_texts(self, request: Any, texts: list[tuple[str, str]], strict: list[bool] | None = None) -> None:
        """Scan (param, text) pairs (`strict`: control tokens flag the text outright; default: not, as for a
        user's own text); raise the 400 when blocking and any is flagged."""
        if self.input is None or not texts:
            return
        strict = strict or [False] * len(texts)
        results = await asyncio.to_thread(lambda: [(self.input if s else self.input_user).scan(t, id=where)
                                                   for (where, t), s in zip(texts, strict)])
        self.scanned.labels("input").inc(len(results))
        for r in results:
            if r.control_tokens:
                self.control_tokens.inc(sum(r.control_tokens.values()))
        hits = [r for r in results if r.flagged]
        for r in hits:
            for reason in r.reasons or ["score"]:
                self.flagged.labels("input", reason).inc()
        self._note(request, "input", [{**r.to_dict(), "control_tokens": r.control_tokens} for r in hits])
        if hits and self.action == "block":
            self.blocked.labels("input").inc()
            r = hits[0]
            raise APIError(400, f"the input guard flagged {r.id} as a likely prompt injection (score {r.score:.2f}: "
                                f"{', '.join(r.reasons) or 'classifier'})", param=r.id, code="guard")

    async def filter_chunks(self, request: Any, texts: list[str]) -> list[bool]:
        """Retrieved (RAG) chunks are third-party text: scan each before it enters the prompt and keep only the
        clean ones (a flagged chunk is dropped, counted and noted, never a reason to refuse the user)."""
        if self.input is None or not texts:
            return [True] * len(texts)
        results = await asyncio.to_thread(lambda: [self.input.scan(t, id=f"rag.chunk.{i}") for i, t in enumerate(texts)])
        self.scanned.labels("rag").inc(len(results))
        for r in results:
            if r.control_tokens:
                self.control_tokens.inc(sum(r.control_tokens.values()))
            if r.flagged:
                for reason in r.reasons or ["score"]:
                    self.flagged.labels("rag", reason).inc()
        self._note(request, "input", [{**r.to_dict(), "control_tokens": r.control_tokens} for r in results if r.flagged])
        return [not r.flagged for r in results]

    async def check_chat(self, request: Any, messages: list) -> None:
        texts, strict = [], []
        for i, m in enumerate(messages):
            if m.role in SCANNED_ROLES and m.non_text_part() is None:
                texts.append((f"messages.{i}.content", m.text()))
                strict.append(m.role != "user")  # tool results are third-party text
        await self.check_texts(request, texts, strict)

    # ------------------------------------------------------------------------------------------ output
    def _check_output(self, request: Any, text: str, system: str | None, where: str):
        res = self.output.check(text, system_prompt=system)
        self.scanned.labels("output").inc()
        if res.flagged:
            for reason in res.reasons:
                self.flagged.labels("output", reason).inc()
            self._note(request, "output", [{"id": where, **res.to_dict()}])
            if self.action == "block":
                self.blocked.labels("output").inc()
                return res, APIError(400, f"the output guard blocked {where} ({', '.join(res.reasons)})",
                                     param=where, code="guard")
        return res, None

    def filter_body(self, request: Any, body: dict, system: str | None = None) -> dict:
        """A finished JSON response with each choice's text redacted (flag) or a raised 400 (block)."""
        if self.output is None:
            return body
        for c in body.get("choices", []):
            msg = c.get("message")
            key, holder = ("content", msg) if isinstance(msg, dict) else ("text", c)
            if isinstance(holder.get(key), str) and holder[key]:
                res, err = self._check_output(request, holder[key], system, f"choices.{c.get('index', 0)}")
                if err is not None:
                    raise err
                holder[key] = res.text
        return body

    async def filter_stream(self, request: Any, gen: AsyncIterator[str], system: str | None = None) -> AsyncIterator[str]:
        """Hold each choice's streamed text until it finishes, then send it checked (or end with an error event)."""
        if self.output is None:
            async for piece in gen:
                yield piece
            return
        held: dict[int, list[str]] = {}
        async for piece in gen:
            if not piece.startswith("data: {"):
                yield piece
                continue
            obj = json.loads(piece[6:])
            choices = obj.get("choices") or []
            if len(choices) != 1:
                yield piece
                continue
            c = choices[0]
            chat = "delta" in c
            holder, key = (c["delta"], "content") if chat else (c, "text")
            i = int(c.get("index", 0))
            text = holder.get(key)
            if text:
                held.setdefault(i, []).append(text)
                holder[key] = ""
            if c.get("finish_reason") is None:
                if text and not (c.get("logprobs") or (chat and (c["delta"].get("tool_calls") or c["delta"].get("role")))):
                    continue  # nothing left in this chunk once its text is held back
                yield f"data: {json.dumps(obj)}\n\n"
                continue
            res, err = self._check_output(request, "".join(held.pop(i, [])), system, f"choices.{i}")
            if err is not None:
                yield f"data: {json.dumps(err.body())}\n\n"
                yield "data: [DONE]\n\n"
                await gen.aclose()
                return
            if res.text:
                first = json.loads(json.dumps(obj))
                fc = first["choices"][0]
                (fc["delta"] if chat else fc)[key] = res.text
                fc["finish_reason"] = None
                fc.pop("logprobs", None)
                if chat:
                    fc["delta"].pop("tool_calls", None)
                yield f"data: {json.dumps(first)}\n\n"
            yield f"data: {json.dumps(obj)}\n\n"


def system_prompt_of(messages: list) -> str | None:
    """The operator's instructions in a chat request (system and developer messages), for leak checks."""
    parts = [m.text() for m in messages if m.role in ("system", "developer") and m.non_text_part() is None]
    return "\n".join(parts) or None
