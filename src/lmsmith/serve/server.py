"""The OpenAI-compatible HTTP server: a thin layer over the engine.

It turns OpenAI requests into token ids and `SamplingParams` (chat templates and tool-call formats are
applied here; the model and sampling live in the engine), streams the engine's outputs back as JSON or
SSE, and maps every failure to OpenAI's error shape with the right status. This module builds the app
(`create_app(engine, ...)`, for any object with the Engine interface: tests use a fake) and runs it
(`lmsmith serve`, `BackgroundServer`); the endpoint logic is in `handlers`, the error shape in `api_errors`.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, Callable

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from lmsmith.data import toolcalls
from lmsmith.errors import LmsmithError
from lmsmith.serve import protocol as P
from lmsmith.serve import rag_routes
from lmsmith.serve.api_errors import APIError, install_error_handlers
from lmsmith.serve.engine_process import make_async_engine
from lmsmith.serve.guarding import GuardSettings, ServerGuard
from lmsmith.serve.handlers import ChatHandler, CompletionHandler, ServerState
from lmsmith.serve.kserve import make_router as kserve_router
from lmsmith.serve.metrics import CONTENT_TYPE, ServerMetrics

__all__ = ["create_app", "serve", "BackgroundServer", "make_uvicorn_server", "free_port"]


def create_app(engine: Any, model_name: str, *, api_key: str | None = None, aliases: list[str] | None = None,
               max_num_seqs: int | None = None, max_queue: int = 256, request_timeout: float | None = 600.0,
               drain_timeout: float = 30.0, prompt_special_tokens: bool = False,
               max_request_bytes: int = 8 * 1024 * 1024, guard: GuardSettings | None = None,
               version: str | None = None, router: Any = None, request_log: Any = None,
               embedders: list[str] | None = None, stream_interval: int | None = None) -> FastAPI:
    """The FastAPI app serving `engine` under the name `model_name` (and `aliases`).

    `prompt_special_tokens`: let /v1/completions prompt text spell control tokens (trusted clients only);
    `guard` turns on the input/output guard (serve.guarding); `router` (serve.routing) follows a registry
    alias and splits canary traffic; `request_log` (serve.request_log) records requests; `embedders` serve
    /v1/embeddings (and retrieval for chat requests with a `rag` field). `stream_interval`: after its first token a
    stream sends a chunk per this many tokens (and at the end), fewer writes for the HTTP process under load
    (None: LMSMITH_STREAM_INTERVAL, else 1)."""
    if stream_interval is None:
        raw = os.environ.get("LMSMITH_STREAM_INTERVAL", "1") or "1"
        if not raw.strip().isdigit():
            raise LmsmithError(f"LMSMITH_STREAM_INTERVAL must be a whole number of tokens, got {raw!r}",
                               "unset it, or set a number such as 4")
        stream_interval = int(raw)
    if stream_interval < 1:
        raise LmsmithError(f"--stream-interval must be at least 1 token, got {stream_interval}",
                           "1 sends every token as it comes (the default)")
    max_num_seqs = max_num_seqs or int(getattr(engine, "max_num_seqs", None) or 64)
    aeng = make_async_engine(engine, max_num_seqs=max_num_seqs, max_queue=max_queue, request_timeout=request_timeout)
    aeng.stream_interval = stream_interval
    names = {model_name, *(aliases or [])}
    names |= {n.split("@")[0] for n in list(names)}
    state = ServerState(engine=engine, async_engine=aeng, metrics=ServerMetrics(aeng.stats, model_name, version),
                        aliases=names, api_key=api_key, max_num_seqs=max_num_seqs, model_name=model_name,
                        tool_format=toolcalls.detect_format(getattr(engine.tokenizer, "chat_template", None)),
                        prompt_special_tokens=prompt_special_tokens, max_request_bytes=max_request_bytes,
                        version=version, router=router, request_log=request_log)
    if guard is not None:
        state.guard = ServerGuard(guard, state.metrics.registry, engine.tokenizer)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        aeng.start()
        if router is not None:
            await router.start(state, aeng, drain_timeout)
        if request_log is not None:
            request_log.start()
        try:
            yield
        finally:
            if router is not None:
                await router.stop()
            await state.async_engine.drain(drain_timeout)  # the router may have swapped it
            state.async_engine.stop()
            state.prep_pool.shutdown(wait=False)
            if request_log is not None:
                request_log.close()

    if request_log is not None:
        state.metrics.registry.register(request_log)  # lmsmith_request_log_rows_total{outcome}
    app = FastAPI(title="lmsmith", version="1", lifespan=lifespan)
    app.state.lmsmith = state
    install_error_handlers(app)
    app.add_middleware(_BodyLimit, limit=max_request_bytes)
    app.add_middleware(_StatusCounter, metrics=state.metrics, request_log=request_log)

    async def auth(request: Request) -> None:  # async: a sync dependency would hop to a worker thread per request
        if not state.api_key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), state.api_key.encode()):
            raise APIError(401, "missing or wrong API key: send `Authorization: Bearer KEY`",
                           type="authentication_error", code="invalid_api_key")

    @app.get("/health")
    async def health() -> JSONResponse:
        if not state.async_engine.accepting:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        if not state.async_engine.alive:
            return JSONResponse({"status": "engine failed", "error": state.async_engine.error}, status_code=503)
        return JSONResponse({"status": "ok", "model": model_name, "running": state.async_engine.in_flight})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models", dependencies=[Depends(auth)], response_model=P.ModelList)
    async def models() -> P.ModelList:
        return P.ModelList(data=[P.ModelCard(id=model_name, created=int(state.started),
                                             max_model_len=state.max_model_len)])

    @app.post("/v1/chat/completions", dependencies=[Depends(auth)],
              responses={200: {"model": P.ChatCompletion}, 400: {"model": P.ErrorResponse}})
    async def chat_completions(body: P.ChatCompletionRequest, request: Request):
        if body.rag is not None:
            return await rag_routes.rag_chat(state, body, request)
        return await ChatHandler(state, body).respond(request)

    @app.post("/v1/completions", dependencies=[Depends(auth)],
              responses={200: {"model": P.Completion}, 400: {"model": P.ErrorResponse}})
    async def completions(body: P.CompletionRequest, request: Request):
        return await CompletionHandler(state, body).respond(request)

    app.include_router(kserve_router(state, CompletionHandler, auth))  # KServe V2 (Open Inference Protocol)
    rag_routes.install(app, state, auth, embedders)
    return app


class _StatusCounter:
    """Pure ASGI middleware counting responses by endpoint and status (works with streaming)."""

    def __init__(self, app, metrics: ServerMetrics, request_log: Any = None):
        self.app, self.metrics, self.request_log = app, metrics, request_log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        endpoint = path if path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
                                    "/health", "/metrics") else "/v2/infer" if path.endswith("/infer") else "other"

        t0 = time.monotonic()

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(endpoint, str(message["status"])).inc()
                if self.request_log is not None and message["status"] >= 400 and endpoint not in ("other", "/health"):
                    self.request_log.log_error(endpoint, message["status"], time.monotonic() - t0)  # the audit trail
            await send(message)

        await self.app(scope, receive, counting_send)


class _BodyLimit:
    """Pure ASGI middleware: a request body over `limit` bytes gets 413 (OpenAI's error shape) before any
    of it is parsed, whether it declares its length or streams it chunked."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.limit <= 0:
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self.too_large(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return await self.app(scope, _replay([msg], receive), send)
            size += len(msg.get("body", b""))
            if size > self.limit:
                return await self.too_large(scope, receive, send)
            chunks.append(msg)
            more = msg.get("more_body", False)
        return await self.app(scope, _replay(chunks, receive), send)

    async def too_large(self, scope, receive, send):
        err = APIError(413, f"the request body is larger than this server's limit of {self.limit:,} bytes "
                            "(lmsmith serve --max-request-bytes)", code="request_too_large")
        await err.response()(scope, receive, send)


def _replay(messages: list, receive):
    async def replay():
        return messages.pop(0) if messages else await receive()

    return replay


# ------------------------------------------------------------------------------------------ running it
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def make_uvicorn_server(app: FastAPI, host: str, port: int, log_level: str = "info", drain_timeout: float = 30.0):
    """A uvicorn server whose SIGTERM/SIGINT first stops admission (503), then drains as uvicorn does."""
    import uvicorn

    state: ServerState = app.state.lmsmith

    class _Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            state.async_engine.accepting = False
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if sig == signal.SIGTERM and captured:  # a drained SIGTERM is a clean exit (status 0), not a kill
                captured[:] = [s for s in captured if s != signal.SIGTERM]

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=drain_timeout,
                            access_log=log_level == "debug")
    return _Server(config)


class BackgroundServer:
    """Run an app with uvicorn in a thread (tests, notebooks): `with BackgroundServer(app) as url: ...`."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int | None = None, log_level: str = "warning"):
        self.app = app
        self.host = host
        self.port = port or free_port(host)
        self.server = make_uvicorn_server(app, host, self.port, log_level=log_level)
        self.thread = threading.Thread(target=self.server.run, name="lmsmith-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise LmsmithError(f"cannot listen on {host}:{port}: {e.strerror or e}",
                               "pick another --port, or stop what is using it") from None


def serve(ref: str, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          served_model_name: str | None = None, max_num_seqs: int = 64, max_queue: int = 256,
          request_timeout: float | None = 600.0, drain_timeout: float = 30.0, log_level: str = "info",
          prompt_special_tokens: bool = False, max_request_bytes: int = 8 * 1024 * 1024,
          guard: GuardSettings | None = None, setup: Callable[[FastAPI], Any] | None = None,
          request_log: Any = None, embedders: list[str] | None = None, engine_process: bool | None = None,
          stream_interval: int | None = None, **engine_kwargs: Any) -> None:
    """Load `ref` into the engine and serve it until SIGTERM/SIGINT. A registry `NAME@ALIAS` is followed:
    moving the alias (or a canary, `lmsmith deploy`) swaps versions without dropping requests. `setup(app)`
    may add routes (the UI). `engine_process`: run the engine loop in a child process (serve.engine_process;
    None: on with CUDA, off on CPU)."""
    from lmsmith.progress import console
    from lmsmith.serve.engine import Engine
    from lmsmith.serve.engine_process import EngineClient, default_engine_process
    from lmsmith.serve.routing import Router

    _check_port(host, port)  # before the (slow) model load
    if engine_process is None:
        engine_process = default_engine_process(engine_kwargs.get("device"),
                                                int(engine_kwargs.get("tensor_parallel_size") or 1))
    kind = EngineClient if engine_process else Engine

    def make(r: str) -> Any:
        return kind(r, max_num_seqs=max_num_seqs, **engine_kwargs)

    with console.status(f"loading {ref}" + (" in the engine process" if engine_process else "")):
        router = Router.for_ref(ref, make)
        engine = router.initial_engine() if router else make(ref)
    app = create_app(engine, served_model_name or ref, api_key=api_key, max_num_seqs=max_num_seqs,
                     max_queue=max_queue, request_timeout=request_timeout, drain_timeout=drain_timeout,
                     prompt_special_tokens=prompt_special_tokens, max_request_bytes=max_request_bytes, guard=guard,
                     version=router.initial_version if router else None, router=router, request_log=request_log,
                     embedders=embedders, stream_interval=stream_interval)
    if setup is not None:
        setup(app)
    console.print(f"serving [bold]{served_model_name or ref}[/] at http://{host}:{port}/v1 "
                  f"(context {engine.max_model_len} tokens); Ctrl-C or SIGTERM stops after draining")
    server = make_uvicorn_server(app, host, port, log_level=log_level, drain_timeout=drain_timeout)
    server.run()
