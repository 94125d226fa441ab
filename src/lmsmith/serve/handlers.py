"""The OpenAI endpoints' logic: requests -> prompt ids + SamplingParams -> engine -> JSON or SSE.

Chat templates and tool-call formats are applied here (lmsmith.data.toolcalls); the model, sampling and
constrained decoding live in the engine. One handler object serves one request.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from lmsmith.data import toolcalls
from lmsmith.data.chat import encode_plain, encode_rendered, render_template
from lmsmith.errors import LmsmithError
from lmsmith.serve import protocol as P
from lmsmith.serve.api_errors import APIError, bad_request
from lmsmith.serve.async_engine import AsyncEngine, EngineFailed, Handle, QueueFull, RequestTimeout, ShuttingDown
from lmsmith.serve.guarding import system_prompt_of
from lmsmith.serve.metrics import ServerMetrics

INLINE_PROMPT_IDS = 16384  # token-id prompts up to this many ids are checked on the event loop (~0.1 ms)


@dataclass
class ServerState:
    engine: Any
    async_engine: AsyncEngine
    metrics: ServerMetrics
    model_name: str
    aliases: set[str]
    api_key: str | None
    max_num_seqs: int
    tool_format: toolcalls.ToolFormat
    prompt_special_tokens: bool = False  # /v1/completions: parse control tokens in prompt text (trusted clients)
    max_request_bytes: int = 8 * 1024 * 1024  # larger bodies get 413 before they are parsed
    started: float = field(default_factory=time.time)
    # Templates and tokenization run here, off the event loop (one thread: a tokenizer is not shared
    # between threads), so one big prompt cannot stall /health or other clients.
    prep_pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="lmsmith-prep"))

    @cached_property
    def max_chars_per_token(self) -> int:
        """An upper bound on the characters one token covers (its longest vocabulary entry, twice for safety)."""
        try:
            return 2 * max(len(t) for t in self.tokenizer.get_vocab())
        except Exception:
            return 1024
    guard: Any = None  # serve.guarding.ServerGuard when `--guard` is on
    version: str | None = None  # the served registry version: a label on metrics and request-log rows
    router: Any = None  # serve.routing.Router when following an alias or splitting a canary
    request_log: Any = None  # serve.request_log.RequestLog with --log-requests

    def route(self, body: Any = None, version: str | None = None) -> "ServerState":
        """The state one request runs on: this one, or the engine/version the router picks for it."""
        return self if self.router is None else self.router.pick(self, body, version)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def max_model_len(self) -> int:
        return int(self.engine.max_model_len)

    @property
    def vocab_size(self) -> int:
        return int(getattr(self.engine, "vocab_size", None) or len(self.tokenizer))


@dataclass
class Prepared:
    """One engine request: prompt ids and sampling parameters."""

    prompt_ids: list[int]
    params: Any


@dataclass
class ChoiceState:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[dict] = field(default_factory=list)


class _Handler:
    """What chat and completions share: validation into SamplingParams, admission, collection, metrics."""

    id_prefix = "x"

    def __init__(self, state: ServerState, body: Any):
        self.s, self.body = state.route(body), body
        self.id = f"{self.id_prefix}-{uuid.uuid4().hex}"
        self.t0 = time.monotonic()
        self.wall0 = time.time()  # the engine's request metrics are wall-clock times
        self.t_first: float | None = None
        self.first_metrics: Any = None
        self.prompt_tokens = 0
        self.cached_tokens = 0

    def check_text(self) -> None:
        """400 for a lone surrogate ("\\ud800" is valid JSON but not text): it cannot be tokenized or echoed."""
        nested = (str, dict, list, tuple)

        def walk(x: Any, path: tuple) -> None:  # the path is joined only for the error: a prompt of ids costs ~nothing
            if isinstance(x, str):
                try:
                    x.encode("utf-8")
                except UnicodeEncodeError as e:
                    where = ".".join(map(str, path))
                    raise bad_request(f"{where or 'the request'} contains a lone surrogate (\\u{ord(x[e.start]):04x}), "
                                      "which is not valid Unicode text", where or None) from None
            elif isinstance(x, dict):
                for k, v in x.items():
                    walk(k, path)
                    if isinstance(v, nested):
                        walk(v, path + (k,))
            elif isinstance(x, (list, tuple)):
                for i, v in enumerate(x):
                    if isinstance(v, nested):
                        walk(v, path + (i,))

        walk(self.body.model_dump(exclude_none=True, by_alias=True), ())

    def check_model(self) -> None:
        if self.body.model not in self.s.aliases:
            raise APIError(404, f"model '{self.body.model}' is not served here; this server serves "
                                f"'{self.s.model_name}' (see GET /v1/models)", type="not_found_error",
                           param="model", code="model_not_found")
        if self.body.n > self.s.max_num_seqs:
            raise bad_request(f"n={self.body.n} is more than this server runs at once ({self.s.max_num_seqs})", "n")

    async def off_loop(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.s.prep_pool, fn, *args)

    def check_chars(self, n_chars: int, param: str) -> None:
        """Refuse a prompt whose characters cannot fit the context before spending time tokenizing it."""
        limit = self.s.max_model_len
        if n_chars > limit * self.s.max_chars_per_token:
            raise bad_request(f"the prompt has {n_chars:,} characters, more than the model's context of {limit} "
                              "tokens can hold; shorten the prompt", param, code="context_length_exceeded")

    def check_length(self, ids: list[int], max_tokens: int | None, param: str = "messages") -> int:
        """The effective max_tokens; 400 when the prompt (plus the requested completion) exceeds the context."""
        limit = self.s.max_model_len
        if not ids:
            raise bad_request("the prompt is empty", param)
        if len(ids) >= limit:
            raise bad_request(f"the prompt is {len(ids)} tokens long but the model's context is {limit} tokens; "
                              "shorten the prompt", param, code="context_length_exceeded")
        if max_tokens is None:
            return limit - len(ids)
        if len(ids) + max_tokens > limit:
            raise bad_request(f"the prompt ({len(ids)} tokens) plus max_tokens ({max_tokens}) exceeds the model's "
                              f"context of {limit} tokens; lower max_tokens to at most {limit - len(ids)}",
                              "max_tokens", code="context_length_exceeded")
        return max_tokens

    def sampling_params(self, max_tokens: int, **extra: Any):
        SamplingParams = sampling_params_class(self.s.engine)
        b = self.body
        kw = dict(max_tokens=max_tokens, temperature=1.0 if b.temperature is None else b.temperature,
                  top_p=1.0 if b.top_p is None else b.top_p, top_k=b.top_k, min_p=b.min_p,
                  repetition_penalty=b.repetition_penalty, frequency_penalty=b.frequency_penalty,
                  presence_penalty=b.presence_penalty, seed=b.seed, n=b.n, stop=b.stop_list(),
                  ignore_eos=b.ignore_eos)
        kw.update(extra)
        try:
            params = SamplingParams(**kw)
            params.validate()
        except LmsmithError as e:
            raise bad_request(str(e)) from None
        except (TypeError, ValueError) as e:
            raise bad_request(f"invalid sampling parameters: {e}") from None
        return params

    async def admit(self, rid: str, prep: Prepared) -> Handle:
        try:
            return await self.s.async_engine.add(rid, prep.prompt_ids, prep.params)
        except QueueFull:
            raise APIError(429, "the server is at capacity (waiting queue full); retry shortly",
                           type="rate_limit_error", code="queue_full", headers={"Retry-After": "1"}) from None
        except ShuttingDown:
            raise APIError(503, "the server is shutting down", type="service_unavailable",
                           code="shutting_down") from None
        except EngineFailed as e:  # the engine process died (or failed to take the request)
            raise APIError(503 if not self.s.async_engine.alive else 500, f"the engine failed: {e}",
                           type="service_unavailable" if not self.s.async_engine.alive else "internal_error",
                           code="engine_failed") from None
        except LmsmithError as e:
            raise bad_request(str(e)) from None
        except ValueError as e:
            raise bad_request(str(e)) from None

    def note_output(self, out: Any) -> None:
        if self.t_first is None and getattr(out, "new_token_ids", None):
            self.t_first = time.monotonic()
            self.first_metrics = getattr(out, "metrics", None)
            self.wall_first = time.time()
        if out.prompt_token_ids is not None and getattr(out, "index", 0) == 0:
            self.cached_tokens = max(self.cached_tokens, int(getattr(out, "num_cached_tokens", 0) or 0))

    def record(self, choices: list[ChoiceState]) -> None:
        now = time.monotonic()
        gen = sum(len(c.token_ids) for c in choices)
        per_choice = gen / max(1, len(choices))
        ttft = None if self.t_first is None else self.t_first - self.t0
        tpot = (now - self.t_first) / (per_choice - 1) if self.t_first is not None and per_choice > 1 else None
        self.s.metrics.observe_request(ttft, tpot, now - self.t0, self.prompt_tokens, gen,
                                       [c.finish_reason or "abort" for c in choices])
        m = self.first_metrics
        arrived, scheduled, first = (getattr(m, k, None) for k in ("arrival_time", "first_scheduled_time",
                                                                     "first_token_time"))
        if None not in (arrived, scheduled, first):
            self.s.metrics.observe_ttft_phases({"admit": arrived - self.wall0, "queue": scheduled - arrived,
                                                "prefill": first - scheduled, "deliver": self.wall_first - first})
        if self.s.request_log is not None:
            self.s.request_log.log_handler(self, choices, ttft, now - self.t0)

    def usage(self, choices: list[ChoiceState]) -> P.Usage:
        gen = sum(len(c.token_ids) for c in choices)
        return P.Usage(prompt_tokens=self.prompt_tokens, completion_tokens=gen, total_tokens=self.prompt_tokens + gen,
                       prompt_tokens_details=P.PromptTokensDetails(cached_tokens=self.cached_tokens))

    # --- logprobs
    def token_str(self, tid: int) -> str:
        return self.s.tokenizer.decode([int(tid)])

    def top_items(self, top: Any) -> list[tuple[int, float]]:
        if not top:
            return []
        if isinstance(top, dict):
            return [(int(k), float(v)) for k, v in top.items()]
        items = []
        for t in top:
            if isinstance(t, dict):
                items.append((int(t.get("token_id", t.get("id"))), float(t["logprob"])))
            else:
                items.append((int(t[0]), float(t[1])))
        return items

    async def run_to_end(self, request: Request, coro):
        """Await `coro`, cancelling it (which aborts the engine request) if the client disconnects."""
        task = asyncio.ensure_future(coro)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.25)
                if done:
                    return task.result()
                if await request.is_disconnected():
                    task.cancel()
                    raise APIError(499, "client disconnected", code="client_disconnected")
        finally:
            if not task.done():
                task.cancel()

    async def collect(self, handle: Handle, n: int) -> list[ChoiceState]:
        choices = [ChoiceState() for _ in range(n)]
        try:
            async for out in handle:
                self.note_output(out)
                c = choices[getattr(out, "index", 0) or 0]
                c.text, c.token_ids = out.text, out.token_ids  # read at the end only: no copy per token
                if out.logprobs:
                    c.logprobs.extend(out.logprobs)
                if out.finished:
                    c.finish_reason = out.finish_reason
        except RequestTimeout:
            raise APIError(408, f"the request did not finish within the server's timeout "
                                f"({self.s.async_engine.request_timeout:g} s)", type="timeout",
                           code="request_timeout") from None
        except EngineFailed as e:
            raise APIError(500, f"the engine failed: {e}", type="internal_error") from None
        return choices


def sampling_params_class(engine: Any) -> type:
    """The engine's SamplingParams (an engine may bring its own, e.g. a test double)."""
    own = getattr(engine, "SamplingParams", None)
    if own is not None:
        return own
    from lmsmith.serve.sampling_params import SamplingParams

    return SamplingParams


def sse(obj: Any) -> str:
    data = obj.model_dump_json(exclude_none=True) if hasattr(obj, "model_dump_json") else json.dumps(obj)
    return f"data: {data}\n\n"


SSE_DONE = "data: [DONE]\n\n"


class TextChunks:
    """The chunks of one stream that carry only text (no logprobs, no tool calls), written by concatenation: byte for
    byte what `sse` writes for the same pydantic chunk (pydantic escapes strings as json.dumps does with
    ensure_ascii=False, for every code point: tested), at a fifth of the cost. The HTTP process writes one per token
    per stream, ~20k a second at 32 streams on an H100, and every microsecond there delays the next burst's admission.
    `key`/`close` wrap the text: '"text":' for completions, '"delta":{"content":' and '}' for chat."""

    def __init__(self, obj: str, id: str, model: str, key: str, close: str = ""):
        self.created = int(time.time())
        self.head = (f'data: {{"id":{_js(id)},"object":"{obj}","created":{self.created},"model":{_js(model)},'
                     f'"choices":[{{"index":')
        self.key, self.close = key, close

    def __call__(self, index: int, text: str, reason: str | None = None) -> str:
        tail = "" if reason is None else f',"finish_reason":{_js(reason)}'
        return f"{self.head}{index},{self.key}{_js(text)}{self.close}{tail}}}]}}\n\n"


def _js(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


class SSEResponse(StreamingResponse):
    """Starlette's StreamingResponse without its per-request anyio task group (uvicorn speaks ASGI 2.3, so Starlette
    races the stream against a disconnect listener in a task group, and anyio's cancel delivery re-polls the event
    loop: ~6% of the HTTP process at a few thousand short requests a second). Here one plain task waits for the
    client's disconnect and cancels the stream, whose generator then aborts the engine request, as before."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        task = asyncio.current_task()
        state = {"streaming": True, "gone": False}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if state["streaming"]:
                state["gone"] = True
                task.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not state["gone"]:
                raise  # not the client: the server is stopping
            task.uncancel()  # the client left: the stream ends here, the request was aborted by its generator
        finally:
            state["streaming"] = False
            watcher.cancel()
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:  # cancelled between chunks: the generator's own cleanup (abort) runs now
                await aclose()
        if self.background is not None:
            await self.background()


async def _stream_guard(gen: AsyncIterator[str], handler: _Handler) -> AsyncIterator[str]:
    """Errors after the headers went out can't change the status: send them as an SSE error event."""
    try:
        async for piece in gen:
            yield piece
    except RequestTimeout:
        err = APIError(408, "the request did not finish within the server's timeout", type="timeout",
                       code="request_timeout")
        yield f"data: {json.dumps(err.body())}\n\n"
        yield SSE_DONE
    except EngineFailed as e:
        yield f"data: {json.dumps(APIError(500, f'the engine failed: {e}', type='internal_error').body())}\n\n"
        yield SSE_DONE


# ------------------------------------------------------------------------------------------ chat
@dataclass
class ToolPlan:
    """How this request uses tools: `forced` (name or None for `required` over several) or parsed."""

    tools: list[dict] | None = None  # OpenAI tool dicts passed to the template
    functions: list[dict] = field(default_factory=list)
    forced: bool = False
    forced_name: str | None = None
    parse: bool = False


class ChatHandler(_Handler):
    id_prefix = "chatcmpl"

    def plan_tools(self) -> ToolPlan:
        b = self.body
        choice = b.tool_choice
        if not b.tools:
            if choice not in (None, "none", "auto"):
                raise bad_request("tool_choice needs `tools`", "tool_choice")
            return ToolPlan()
        functions = [t.function.model_dump(exclude_none=True) for t in b.tools]
        for f in functions:
            if f.get("parameters") is not None:
                self.check_schema(f["parameters"], "tools.function.parameters")
        tools = [t.model_dump(exclude_none=True) for t in b.tools]
        if choice == "none":
            return ToolPlan()
        if b.response_format is not None and b.response_format.type != "text" and choice not in (None, "auto"):
            raise bad_request("response_format cannot be combined with a forced tool_choice", "response_format")
        if isinstance(choice, P.NamedToolChoice):
            match = [f for f in functions if f["name"] == choice.function.name]
            if not match:
                raise bad_request(f"tool_choice names '{choice.function.name}', which is not in `tools`",
                                  "tool_choice")
            return ToolPlan(tools, match, forced=True, forced_name=match[0]["name"])
        if choice == "required":
            name = functions[0]["name"] if len(functions) == 1 else None
            return ToolPlan(tools, functions, forced=True, forced_name=name)
        return ToolPlan(tools, functions, parse=True)

    @staticmethod
    def check_schema(schema: Any, param: str) -> None:
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as e:
            raise bad_request(f"invalid JSON schema: {e.message}", param) from None
        except Exception as e:
            raise bad_request(f"invalid JSON schema: {e}", param) from None

    def prepare(self, plan: ToolPlan) -> Prepared:
        b = self.body
        tok = self.s.tokenizer
        template = getattr(tok, "chat_template", None)
        if not template:
            raise bad_request("this model has no chat template; use /v1/completions", "messages")
        messages = []
        for i, m in enumerate(b.messages):
            if (kind := m.non_text_part()) is not None:
                raise bad_request(f"message {i} has a '{kind}' content part; this server takes text only",
                                  f"messages.{i}.content")
            d: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            if m.tool_calls:
                d["tool_calls"] = [{"id": c.id, "type": "function",
                                    "function": {"name": c.function.name, "arguments": c.function.arguments
                                                 if isinstance(c.function.arguments, str)
                                                 else json.dumps(c.function.arguments)}} for c in m.tool_calls]
            if m.tool_call_id:
                d["tool_call_id"] = m.tool_call_id
            if m.name:
                d["name"] = m.name
            messages.append(d)
        self.check_chars(sum(len(m.get("content") or "") + len(json.dumps(m.get("tool_calls") or ""))
                             for m in messages), "messages")
        messages, tools_arg = toolcalls.prepare_messages(messages, plan.tools, template)
        try:
            rendered = render_template(tok, messages, tools_arg, add_generation_prompt=True)
        except Exception as e:  # jinja errors: the template rejects this conversation (e.g. role order)
            raise bad_request(f"the chat template rejects these messages: {str(e).splitlines()[0]}",
                              "messages") from None
        extra: dict[str, Any] = {}
        if plan.forced:
            rendered.append_control(tok, toolcalls.forced_call_prefix(self.s.tool_format, plan.forced_name))
            extra["json_schema"] = toolcalls.forced_call_schema(self.s.tool_format, plan.functions,
                                                                named=plan.forced_name is not None)
        elif b.response_format is not None and b.response_format.type == "json_object":
            extra["json_object"] = True
        elif b.response_format is not None and b.response_format.type == "json_schema":
            js = b.response_format.json_schema
            if js is None or js.schema_ is None:
                raise bad_request("response_format json_schema needs `json_schema.schema`", "response_format")
            self.check_schema(js.schema_, "response_format.json_schema.schema")
            extra["json_schema"] = js.schema_
        if b.logprobs:
            extra.update(logprobs=True, top_logprobs=b.top_logprobs or 0)
        elif b.top_logprobs:
            raise bad_request("top_logprobs needs logprobs=true", "top_logprobs")
        ids = encode_rendered(tok, rendered)[0]  # control tokens only where the template wrote them
        max_tokens = self.check_length(ids, b.max_completion_tokens or b.max_tokens)
        self.prompt_tokens = len(ids)
        return Prepared(ids, self.sampling_params(max_tokens, **extra))

    async def respond(self, request: Request):
        self.check_text()
        self.check_model()
        guard = self.s.guard
        if guard is not None:
            await guard.check_chat(request, self.body.messages)
        plan = self.plan_tools()
        prep = await self.off_loop(self.prepare, plan)
        handle = await self.admit(self.id, prep)
        if self.body.stream:
            gen = self.stream(handle, plan)
            if guard is not None:
                gen = guard.filter_stream(request, gen, system_prompt_of(self.body.messages))
            return SSEResponse(_stream_guard(gen, self), media_type="text/event-stream",
                               headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            choices = await self.run_to_end(request, self.collect(handle, self.body.n))
        finally:
            handle.close()
        self.record(choices)
        out = []
        for i, c in enumerate(choices):
            content, calls, reason = self.finish_choice(plan, c.text, c.finish_reason)
            message = P.AssistantMessage(content=content, tool_calls=[
                P.ResponseToolCall(id=toolcalls.new_call_id(), function=P.ResponseFunctionCall(**call))
                for call in calls] or None)
            out.append(P.ChatChoice(index=i, message=message, finish_reason=reason,
                                    logprobs=self.chat_logprobs(c.logprobs) if self.body.logprobs else None))
        resp = P.ChatCompletion(id=self.id, model=self.body.model, choices=out, usage=self.usage(choices))
        body = resp.model_dump(exclude_none=False)
        if guard is not None:
            body = guard.filter_body(request, body, system_prompt_of(self.body.messages))
        return JSONResponse(body)

    def finish_choice(self, plan: ToolPlan, text: str, reason: str | None) -> tuple[str | None, list[dict], str]:
        """(content, tool calls, finish_reason) of one finished choice."""
        reason = reason or "stop"
        fmt = self.s.tool_format
        if plan.forced:
            call = toolcalls.forced_call_from_output(fmt, plan.forced_name, text)
            if call is None:  # cut short (max_tokens) inside the call: still the forced call, as OpenAI does
                call = toolcalls.truncated_forced_call(fmt, plan.forced_name, text, [f["name"] for f in plan.functions])
            return None, [call], "tool_calls" if reason == "stop" else reason
        if plan.parse:
            content, calls = toolcalls.parse_tool_calls(text, fmt)
            if calls:
                return content, calls, "tool_calls" if reason == "stop" else reason
        return text, [], reason

    def chat_logprobs(self, entries: list[dict]) -> P.ChoiceLogprobs:
        content = []
        for e in entries:
            tok = self.token_str(e["token_id"])
            tops = [P.TopLogprob(token=(t := self.token_str(tid)), logprob=lp, bytes=list(t.encode()))
                    for tid, lp in self.top_items(e.get("top_logprobs"))]
            content.append(P.TokenLogprob(token=tok, logprob=float(e["logprob"]), bytes=list(tok.encode()),
                                          top_logprobs=tops))
        return P.ChoiceLogprobs(content=content)

    async def stream(self, handle: Handle, plan: ToolPlan) -> AsyncIterator[str]:
        b, fmt = self.body, self.s.tool_format
        n = b.n
        choices = [ChoiceState() for _ in range(n)]
        filters = [toolcalls.StreamingContentFilter(fmt) for _ in range(n)]
        call_ids = [toolcalls.new_call_id() for _ in range(n)]

        fast = TextChunks("chat.completion.chunk", self.id, b.model, '"delta":{"content":', "}")

        def chunk(i: int, delta: P.Delta, reason: str | None = None, logprobs=None) -> str:
            if logprobs is None and delta.content is not None and delta.role is None and delta.tool_calls is None:
                return fast(i, delta.content, reason)
            return sse(P.ChatCompletionChunk(id=self.id, model=b.model, created=fast.created, choices=[
                P.ChunkChoice(index=i, delta=delta, finish_reason=reason, logprobs=logprobs)]))

        def call_delta(i: int, name: str | None, args: str) -> P.Delta:
            return P.Delta(tool_calls=[P.DeltaToolCall(index=0, id=call_ids[i] if name else None,
                                                       type="function" if name else None,
                                                       function=P.DeltaFunctionCall(name=name, arguments=args))])

        try:
            for i in range(n):
                yield chunk(i, P.Delta(role="assistant", content=""))
                if plan.forced and plan.forced_name:
                    yield chunk(i, call_delta(i, plan.forced_name, ""))
            async for out in handle:
                self.note_output(out)
                i = getattr(out, "index", 0) or 0
                c = choices[i]
                c.text, c.token_ids = out.text, out.token_ids  # read at the end only: no copy per token
                delta_text = out.text_delta or ""
                lp = self.chat_logprobs(out.logprobs) if b.logprobs and out.logprobs else None
                if plan.forced:
                    if plan.forced_name and delta_text:
                        yield chunk(i, call_delta(i, None, delta_text), logprobs=lp)
                elif plan.parse:
                    safe = filters[i].feed(delta_text)
                    if safe or lp:
                        yield chunk(i, P.Delta(content=safe), logprobs=lp)
                elif delta_text or lp:
                    yield chunk(i, P.Delta(content=delta_text), logprobs=lp)
                if out.finished:
                    c.finish_reason = out.finish_reason or "stop"
                    content, calls, reason = self.finish_choice(plan, c.text, c.finish_reason)
                    if plan.parse:
                        rest = filters[i].flush()
                        if calls:
                            for k, call in enumerate(calls):
                                yield sse(P.ChatCompletionChunk(
                                    id=self.id, model=b.model, created=fast.created, choices=[P.ChunkChoice(
                                        index=i, delta=P.Delta(tool_calls=[P.DeltaToolCall(
                                            index=k, id=toolcalls.new_call_id(), type="function",
                                            function=P.DeltaFunctionCall(**call))]))]))
                        else:
                            rest = c.text[filters[i].emitted:]
                        if rest:
                            yield chunk(i, P.Delta(content=rest))
                    elif plan.forced and not plan.forced_name and calls:
                        yield chunk(i, call_delta(i, calls[0]["name"], calls[0]["arguments"]))
                    yield chunk(i, P.Delta(), reason)
        finally:
            handle.close()
        self.record(choices)
        if b.stream_options and b.stream_options.include_usage:
            yield sse(P.ChatCompletionChunk(id=self.id, model=b.model, created=fast.created, choices=[],
                                            usage=self.usage(choices)))
        yield SSE_DONE


# ------------------------------------------------------------------------------------------ completions
class CompletionHandler(_Handler):
    id_prefix = "cmpl"

    def prompts(self) -> list[tuple[str | None, list[int]]]:
        """(text or None, ids) per prompt."""
        p = self.body.prompt
        tok = self.s.tokenizer
        if isinstance(p, str):
            p = [p]
        if not p:
            raise bad_request("prompt is an empty list", "prompt")
        if isinstance(p[0], str):  # user text: control-token spellings stay text unless the operator opts in
            for s in p:
                self.check_chars(len(s), "prompt")
            if self.s.prompt_special_tokens:
                return [(s, list(tok(s)["input_ids"])) for s in p]
            return [(s, encode_plain(tok, s)) for s in p]
        lists = [p] if isinstance(p[0], int) else p
        out = []
        for ids in lists:
            if ids and (min(ids) < 0 or max(ids) >= self.s.vocab_size):
                bad = next(t for t in ids if not 0 <= t < self.s.vocab_size)
                raise bad_request(f"token id {bad} is outside the vocabulary (0..{self.s.vocab_size - 1})",
                                  "prompt")
            out.append((None, list(ids)))
        return out

    def prepare(self) -> list[Prepared]:
        b = self.body
        if b.suffix:
            raise bad_request("suffix is not supported", "suffix")
        if b.best_of is not None and b.best_of != b.n:
            raise bad_request("best_of other than n is not supported", "best_of")
        prompts = self.prompts()
        if len(prompts) * b.n > self.s.max_num_seqs * 4:
            raise bad_request(f"{len(prompts)} prompts x n={b.n} is too many for one request", "prompt")
        extra = {"logprobs": True, "top_logprobs": b.logprobs} if b.logprobs is not None else {}
        self.texts = [t for t, _ in prompts]
        prepared = []
        for _, ids in prompts:
            max_tokens = self.check_length(ids, b.max_tokens, "prompt")
            prepared.append(Prepared(ids, self.sampling_params(max_tokens, **extra)))
        self.prompt_tokens = sum(len(p.prompt_ids) for p in prepared)
        return prepared

    async def admit_all(self, prepared: list[Prepared]) -> list[Handle]:
        handles: list[Handle] = []
        try:
            for k, prep in enumerate(prepared):
                handles.append(await self.admit(f"{self.id}-{k}", prep))
        except BaseException:
            for h in handles:
                h.close()
            raise
        return handles

    def prompt_text(self, k: int, prep: Prepared) -> str:
        t = self.texts[k]
        return t if t is not None else self.s.tokenizer.decode(prep.prompt_ids)

    def completion_logprobs(self, entries: list[dict], offset: int) -> P.CompletionLogprobs:
        lp = P.CompletionLogprobs()
        for e in entries:
            tok = self.token_str(e["token_id"])
            lp.tokens.append(tok)
            lp.token_logprobs.append(float(e["logprob"]))
            lp.top_logprobs.append({self.token_str(t): v for t, v in self.top_items(e.get("top_logprobs"))})
            lp.text_offset.append(offset)
            offset += len(tok)
        return lp

    async def respond(self, request: Request):
        self.check_text()
        self.check_model()
        p = self.body.prompt
        ids_only = isinstance(p, list) and bool(p) and not isinstance(p[0], str)
        if ids_only and (len(p) if isinstance(p[0], int) else sum(map(len, p))) <= INLINE_PROMPT_IDS:
            prepared = self.prepare()  # nothing to tokenize: a hop to the prep thread would cost more (GIL handoff)
        else:
            prepared = await self.off_loop(self.prepare)
        guard = self.s.guard
        if guard is not None:
            await guard.check_texts(request, [(f"prompt.{k}" if len(prepared) > 1 else "prompt", self.prompt_text(k, p))
                                              for k, p in enumerate(prepared)])
        handles = await self.admit_all(prepared)
        if self.body.stream:
            gen = self.stream(handles, prepared)
            if guard is not None:
                gen = guard.filter_stream(request, gen)
            return SSEResponse(_stream_guard(gen, self), media_type="text/event-stream",
                               headers={"Cache-Control": "no-cache"})
        try:
            results = await self.run_to_end(request, asyncio.gather(*(self.collect(h, self.body.n) for h in handles)))
        finally:
            for h in handles:
                h.close()
        flat = [c for cs in results for c in cs]
        self.record(flat)
        choices = []
        for k, cs in enumerate(results):
            head = self.prompt_text(k, prepared[k]) if self.body.echo else ""
            for j, c in enumerate(cs):
                choices.append(P.CompletionChoice(
                    index=k * self.body.n + j, text=head + c.text, finish_reason=c.finish_reason or "stop",
                    logprobs=self.completion_logprobs(c.logprobs, len(head)) if self.body.logprobs is not None
                    else None))
        resp = P.Completion(id=self.id, model=self.body.model, choices=choices, usage=self.usage(flat))
        body = resp.model_dump()
        if guard is not None:
            body = guard.filter_body(request, body)
        return JSONResponse(body)

    async def stream(self, handles: list[Handle], prepared: list[Prepared]) -> AsyncIterator[str]:
        b = self.body
        n = b.n
        states = [[ChoiceState() for _ in range(n)] for _ in handles]
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(k: int, h: Handle) -> None:
            try:
                async for out in h:
                    await queue.put((k, out))
            except BaseException as e:
                await queue.put((k, e))
            finally:
                await queue.put((k, None))

        fast = TextChunks("text_completion", self.id, b.model, '"text":')

        def chunk(index: int, text: str, reason: str | None = None, logprobs=None) -> str:
            if logprobs is None:
                return fast(index, text, reason)
            return sse(P.Completion(id=self.id, model=b.model, created=fast.created, choices=[
                P.CompletionChoice(index=index, text=text, finish_reason=reason, logprobs=logprobs)]))

        async def merged() -> AsyncIterator[tuple[int, Any]]:
            if len(handles) == 1:  # the common case: no pump task and queue hop per token
                async for out in handles[0]:
                    yield 0, out
                return
            live = len(handles)
            while live:
                k, out = await queue.get()
                if out is None:
                    live -= 1
                    continue
                if isinstance(out, BaseException):
                    raise out
                yield k, out

        tasks = [asyncio.ensure_future(pump(k, h)) for k, h in enumerate(handles)] if len(handles) > 1 else []
        offsets = {}
        try:
            if b.echo:
                for k, prep in enumerate(prepared):
                    for j in range(n):
                        head = self.prompt_text(k, prep)
                        offsets[(k, j)] = len(head)
                        yield chunk(k * n + j, head)
            async for k, out in merged():
                self.note_output(out)
                j = getattr(out, "index", 0) or 0
                c = states[k][j]
                c.text, c.token_ids = out.text, out.token_ids  # read at the end only: no copy per token
                lp = None
                if b.logprobs is not None and out.logprobs:
                    off = offsets.get((k, j), 0)
                    lp = self.completion_logprobs(out.logprobs, off)
                    offsets[(k, j)] = off + sum(len(t) for t in lp.tokens)
                if out.finished:
                    c.finish_reason = out.finish_reason or "stop"
                if out.text_delta or lp or out.finished:
                    yield chunk(k * n + j, out.text_delta or "", c.finish_reason if out.finished else None, lp)
        finally:
            for t in tasks:
                t.cancel()
            for h in handles:
                h.close()
        flat = [c for cs in states for c in cs]
        self.record(flat)
        if b.stream_options and b.stream_options.include_usage:
            yield sse(P.Completion(id=self.id, model=b.model, created=fast.created, choices=[], usage=self.usage(flat)))
        yield SSE_DONE
