"""Retrieval on the server: OpenAI-compatible `POST /v1/embeddings`, and chat requests carrying the
extension field `"rag": {"index": "KB", "k": 5}` (OpenAI clients send it via `extra_body`).

A RAG chat request retrieves from the index, puts the chunks into a system turn as numbered sources,
generates as any chat request does (ChatHandler), and adds `sources` to the response (to the first chunk
when streaming). Embedders load lazily, once per process; retrieval and embedding run in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from typing import Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from lmsmith.errors import LmsmithError
from lmsmith.rag.answer import citations, sources, system_prompt
from lmsmith.rag.embed import get_embedder
from lmsmith.rag.index import Index
from lmsmith.serve import protocol as P
from lmsmith.serve.api_errors import APIError, bad_request
from lmsmith.serve.handlers import ChatHandler, ServerState, SSEResponse

DEFAULT_EMBEDDERS = ["all-minilm-l6-v2"]
MAX_INPUTS = 2048


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    input: str | list[str] | list[int] | list[list[int]]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


class EmbeddingPool:
    """The embedders this server answers for (by name or ref), loaded on first use."""

    def __init__(self, refs: list[str] | None):
        self.refs = list(refs or DEFAULT_EMBEDDERS)
        self.lock = threading.Lock()

    def lookup(self, model: str) -> str:
        for ref in self.refs:
            if model in (ref, ref.partition("@")[0]):
                return ref
        raise APIError(404, f"embedding model '{model}' is not served here; this server embeds with: "
                            f"{', '.join(self.refs)}", type="not_found_error", param="model", code="model_not_found")

    def embedder(self, ref: str):
        with self.lock:
            try:
                return get_embedder(ref)
            except LmsmithError as e:
                raise APIError(500, f"cannot load embedder {ref}: {e}", type="internal_error") from None


def install(app: FastAPI, state: ServerState, auth, embedders: list[str] | None = None) -> None:
    """Add `/v1/embeddings` to `app` (the chat side is `rag_chat`, called from the chat route)."""
    pool = EmbeddingPool(embedders)
    app.state.lmsmith_embeddings = pool

    @app.post("/v1/embeddings", dependencies=[Depends(auth)])
    async def embeddings(body: EmbeddingRequest) -> JSONResponse:
        ref = pool.lookup(body.model)
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise bad_request("input is empty", "input")
        if not all(isinstance(t, str) for t in texts):
            raise bad_request("token-id input is not supported: send text (a string or a list of strings)", "input")
        if len(texts) > MAX_INPUTS:
            raise bad_request(f"{len(texts)} inputs in one request; at most {MAX_INPUTS}", "input")
        if any(not t for t in texts):
            raise bad_request("input contains an empty string", "input")
        emb = pool.embedder(ref)
        if body.dimensions is not None and body.dimensions != emb.dim:
            raise bad_request(f"{ref} makes {emb.dim}-dimensional embeddings; `dimensions` cannot change that",
                              "dimensions")

        def work() -> tuple[np.ndarray, int]:
            return emb.embed(texts), sum(len(emb.tokenizer(t)["input_ids"]) for t in texts)

        vecs, tokens = await asyncio.to_thread(work)
        data = []
        for i, v in enumerate(vecs):
            e: Any = base64.b64encode(v.astype("<f4").tobytes()).decode() if body.encoding_format == "base64" \
                else v.tolist()
            data.append({"object": "embedding", "index": i, "embedding": e})
        return JSONResponse({"object": "list", "data": data, "model": body.model,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


_INDEXES: dict[str, Index] = {}
_INDEX_LOCK = threading.Lock()


def open_index(ref: str) -> Index:
    """Indexes stay open across requests; `KB` (latest) is re-resolved each time so a new version shows up."""
    from lmsmith.rag.index import get_index

    with _INDEX_LOCK:
        resolved = get_index(ref).ref
        if resolved not in _INDEXES:
            _INDEXES[resolved] = Index(resolved)
        return _INDEXES[resolved]


async def rag_chat(state: ServerState, body: P.ChatCompletionRequest, request: Request):
    opts = body.rag
    users = [m for m in body.messages if m.role == "user"]
    if not users or not users[-1].text().strip():
        raise bad_request("a rag request needs a user message to retrieve for", "messages")
    question = users[-1].text()

    def retrieve():
        index = open_index(opts.index)
        return index.query(question, k=opts.k, hybrid_search=opts.hybrid, filter=opts.filter)

    try:
        hits = await asyncio.to_thread(retrieve)
    except LmsmithError as e:
        status = 404 if "unknown index" in e.message else 400
        raise APIError(status, str(e), type="not_found_error" if status == 404 else "invalid_request_error",
                       param="rag.index") from None
    if state.guard is not None:  # injected instructions hidden in documents never reach the prompt
        keep = await state.guard.filter_chunks(request, [h.text for h in hits])
        hits = [h for h, ok in zip(hits, keep) if ok]
    msgs = list(body.messages)
    system = system_prompt(hits)
    if msgs[0].role in ("system", "developer"):  # the caller's own system text stays first
        msgs[0] = P.ChatMessage(role="system", content=f"{msgs[0].text()}\n\n{system}")
    else:
        msgs.insert(0, P.ChatMessage(role="system", content=system))
    body = body.model_copy(update={"messages": msgs})
    resp = await ChatHandler(state, body).respond(request)
    if isinstance(resp, StreamingResponse):
        return SSEResponse(_with_sources(resp.body_iterator, sources(hits)), media_type="text/event-stream",
                           headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    payload = json.loads(resp.body)
    text = (payload["choices"][0]["message"].get("content") or "") if payload.get("choices") else ""
    payload["sources"] = sources(hits, citations(text, len(hits)))
    return JSONResponse(payload, status_code=resp.status_code)


async def _with_sources(chunks, srcs: list[dict[str, Any]]):
    """Add `sources` to the first SSE chunk (the role delta) of a streamed answer."""
    first = True
    async for piece in chunks:
        text = piece.decode() if isinstance(piece, bytes) else piece
        if first and text.startswith("data: {"):
            obj = json.loads(text[len("data: "):].strip())
            obj["sources"] = srcs
            text = f"data: {json.dumps(obj)}\n\n"
            first = False
        yield text
