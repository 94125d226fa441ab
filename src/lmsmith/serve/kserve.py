"""KServe's Open Inference Protocol (V2) on the same server: health, metadata and text inference.

Routes (KServe/Triton REST): `GET /v2`, `/v2/health/live`, `/v2/health/ready`, `/v2/models/{name}[/versions/{v}]`,
`.../ready`, `POST .../infer`. A request carries a BYTES tensor `text_input` (shape [1] or [N]) and optional
request `parameters` (max_tokens, temperature, top_p, stop, seed; `user` keeps a canary split sticky); the
answer is a BYTES tensor `text_output` of the same shape. Inference runs through the completions handler, so validation, canary routing, metrics
and the request log are the ones the OpenAI endpoints use. Errors are V2's `{"error": "..."}` with 400 for a
bad tensor and 404 for an unknown model. Triton's binary tensor extension (`Inference-Header-Content-Length`)
is accepted and answered, so `tritonclient` works with its defaults.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from lmsmith import __version__
from lmsmith.serve import protocol as P
from lmsmith.serve.api_errors import APIError

INPUT, OUTPUT = "text_input", "text_output"
SAMPLING = {"max_tokens": int, "temperature": float, "top_p": float, "stop": (str, list), "seed": int}
HEADER_LEN = "Inference-Header-Content-Length"


class V2Error(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.message}, status_code=self.status)


def versions(state: Any) -> list[str]:
    """The versions being served (several during a canary)."""
    router = getattr(state, "router", None)
    if router is not None:
        return router.versions()
    return [state.version or "1"]


def _check_model(state: Any, name: str, version: str | None) -> None:
    if name not in state.aliases:
        raise V2Error(404, f"unknown model '{name}'; this server serves '{state.model_name}'")
    if version is not None and version not in versions(state):
        raise V2Error(404, f"model '{name}' has no served version '{version}'; served: {', '.join(versions(state))}")


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [x for d in data for x in _flatten(d)]
    return [data]


def _decode_bytes_tensor(raw: bytes) -> list[str]:
    """Triton's binary BYTES layout: each element is a 4-byte little-endian length then the bytes."""
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise V2Error(400, "binary BYTES data is truncated")
        (n,) = struct.unpack_from("<I", raw, i)
        if i + 4 + n > len(raw):
            raise V2Error(400, "binary BYTES data is truncated")
        out.append(raw[i + 4:i + 4 + n].decode("utf-8", errors="replace"))
        i += 4 + n
    return out


def _encode_bytes_tensor(items: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in (s.encode() for s in items))


async def _read_body(request: Request) -> tuple[dict, bytes]:
    raw = await request.body()
    header_len = request.headers.get(HEADER_LEN)
    binary = b""
    if header_len is not None:
        try:
            n = int(header_len)
        except ValueError:
            raise V2Error(400, f"{HEADER_LEN} is not an integer") from None
        if not 0 <= n <= len(raw):
            raise V2Error(400, f"{HEADER_LEN} ({n}) is larger than the body ({len(raw)} bytes)")
        raw, binary = raw[:n], raw[n:]
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise V2Error(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise V2Error(400, "request body must be a JSON object")
    return body, binary


def parse_inputs(body: dict, binary: bytes) -> list[str]:
    """The texts of `text_input`, validated against the declared shape and datatype."""
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise V2Error(400, "`inputs` must be a non-empty list of tensors")
    texts = None
    offset = 0
    for t in inputs:
        if not isinstance(t, dict) or "name" not in t:
            raise V2Error(400, "each input needs `name`, `shape`, `datatype` and `data`")
        name = t["name"]
        if name != INPUT:
            raise V2Error(400, f"unknown input '{name}'; this model takes one BYTES input '{INPUT}'")
        if t.get("datatype") != "BYTES":
            raise V2Error(400, f"input '{INPUT}' must have datatype BYTES, not {t.get('datatype')!r}")
        shape = t.get("shape")
        if (not isinstance(shape, list) or not shape or len(shape) > 2
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
                or (len(shape) == 2 and shape[1] != 1)):
            raise V2Error(400, f"input '{INPUT}' shape must be [N] (or [N, 1]) with N >= 1, got {shape!r}")
        count = shape[0]
        params = t.get("parameters") or {}
        if "binary_data_size" in params:
            size = params["binary_data_size"]
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise V2Error(400, f"binary_data_size {size!r} runs past the binary data")
            items = _decode_bytes_tensor(binary[offset:offset + size])
            offset += size
        else:
            if "data" not in t:
                raise V2Error(400, f"input '{INPUT}' has no `data`")
            items = _flatten(t["data"])
            if not all(isinstance(x, str) for x in items):
                raise V2Error(400, f"input '{INPUT}' data must be strings (BYTES)")
        if len(items) != count:
            raise V2Error(400, f"input '{INPUT}' has shape {shape} but {len(items)} data elements")
        texts = items
    if texts is None:
        raise V2Error(400, f"missing input '{INPUT}'")
    if any(not s for s in texts):
        raise V2Error(400, f"input '{INPUT}' has an empty string")
    return texts


def completion_request(model: str, texts: list[str], parameters: Any) -> P.CompletionRequest:
    params = parameters or {}
    if not isinstance(params, dict):
        raise V2Error(400, "`parameters` must be an object")
    kw: dict[str, Any] = {}
    for key, kind in SAMPLING.items():
        if key in params:
            v = params[key]
            if isinstance(v, bool) or not isinstance(v, kind if isinstance(kind, tuple) else
                                                      ((int, float) if kind is float else kind)):
                raise V2Error(400, f"parameter '{key}' must be {getattr(kind, '__name__', 'a string or list')}")
            kw[key] = v
    if isinstance(kw.get("stop"), list) and not all(isinstance(s, str) for s in kw["stop"]):
        raise V2Error(400, "parameter 'stop' must be a string or a list of strings")
    if "user" in params:  # canary stickiness, as the OpenAI `user` field
        if not isinstance(params["user"], str):
            raise V2Error(400, "parameter 'user' must be a string")
        kw["user"] = params["user"]
    kw.setdefault("temperature", 0.0)
    try:
        return P.CompletionRequest(model=model, prompt=texts if len(texts) > 1 else texts[0], **kw)
    except ValueError as e:
        first = e.errors()[0] if hasattr(e, "errors") else {"msg": str(e), "loc": ()}
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise V2Error(400, f"invalid parameter {where}: {first.get('msg')}") from None


def _wants_binary(body: dict) -> bool:
    if (body.get("parameters") or {}).get("binary_data_output"):
        return True
    for o in body.get("outputs") or []:
        if isinstance(o, dict) and (o.get("parameters") or {}).get("binary_data"):
            return True
    return False


def make_router(state: Any, handler_cls: Any, auth: Any = None) -> APIRouter:
    """The /v2 routes over `state` (a ServerState); `handler_cls` is the completions handler, `auth` the
    API-key dependency guarding inference (health and metadata stay open for probes)."""
    r = APIRouter()
    guarded = [Depends(auth)] if auth is not None else []

    def ready() -> bool:
        return bool(state.async_engine.accepting)

    @r.get("/v2")
    async def server_metadata() -> JSONResponse:
        return JSONResponse({"name": "lmsmith", "version": __version__, "extensions": ["binary_tensor_data"]})

    @r.get("/v2/health/live")
    async def live() -> JSONResponse:
        return JSONResponse({"live": True})

    @r.get("/v2/health/ready")
    async def server_ready() -> JSONResponse:
        return JSONResponse({"ready": ready()}, status_code=200 if ready() else 503)

    def metadata(name: str, version: str | None) -> JSONResponse:
        try:
            _check_model(state, name, version)
        except V2Error as e:
            return e.response()
        return JSONResponse({
            "name": name, "versions": [version] if version else versions(state), "platform": "lmsmith",
            "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": OUTPUT, "datatype": "BYTES", "shape": [-1]}],
            "parameters": {"max_model_len": state.max_model_len}})

    def model_ready(name: str, version: str | None) -> JSONResponse:
        try:
            _check_model(state, name, version)
        except V2Error as e:
            return e.response()
        return JSONResponse({"name": name, "ready": ready()}, status_code=200 if ready() else 503)

    @r.get("/v2/models/{name}")
    async def model_metadata(name: str) -> JSONResponse:
        return metadata(name, None)

    @r.get("/v2/models/{name}/versions/{version}")
    async def version_metadata(name: str, version: str) -> JSONResponse:
        return metadata(name, version)

    @r.get("/v2/models/{name}/ready")
    async def ready_model(name: str) -> JSONResponse:
        return model_ready(name, None)

    @r.get("/v2/models/{name}/versions/{version}/ready")
    async def ready_version(name: str, version: str) -> JSONResponse:
        return model_ready(name, version)

    async def infer(name: str, version: str | None, request: Request) -> Response:
        try:
            _check_model(state, name, version)
            body, binary = await _read_body(request)
            texts = parse_inputs(body, binary)
            for o in body.get("outputs") or []:
                if not isinstance(o, dict) or o.get("name") != OUTPUT:
                    raise V2Error(400, f"unknown output {o.get('name') if isinstance(o, dict) else o!r}; "
                                       f"this model has one BYTES output '{OUTPUT}'")
            creq = completion_request(name, texts, body.get("parameters"))
            routed = state.route(creq, version)
            result = await handler_cls(routed, creq).respond(request)
        except V2Error as e:
            return e.response()
        except APIError as e:  # the completions handler's validation (context length, sampling values, 429, 503)
            return JSONResponse({"error": e.message}, status_code=404 if e.status == 404 else e.status,
                                headers=e.headers)
        out = json.loads(result.body)
        ordered = sorted(out["choices"], key=lambda c: c["index"])
        outputs = [c["text"] for c in ordered]
        usage = out.get("usage") or {}
        resp: dict[str, Any] = {"model_name": name, "model_version": routed.version or version or versions(state)[0],
                                "outputs": [], "parameters": {
                                    "prompt_tokens": int(usage.get("prompt_tokens", 0)),
                                    "completion_tokens": int(usage.get("completion_tokens", 0)),
                                    "finish_reason": ",".join(c.get("finish_reason") or "" for c in ordered)}}
        if "id" in body:
            resp["id"] = body["id"]
        tensor = {"name": OUTPUT, "datatype": "BYTES", "shape": [len(outputs)]}
        if _wants_binary(body):
            blob = _encode_bytes_tensor(outputs)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            resp["outputs"].append(tensor)
            header = json.dumps(resp).encode()
            return Response(header + blob, media_type="application/octet-stream",
                            headers={HEADER_LEN: str(len(header))})
        tensor["data"] = outputs
        resp["outputs"].append(tensor)
        return JSONResponse(resp)

    @r.post("/v2/models/{name}/infer", dependencies=guarded)
    async def infer_model(name: str, request: Request) -> Response:
        return await infer(name, None, request)

    @r.post("/v2/models/{name}/versions/{version}/infer", dependencies=guarded)
    async def infer_version(name: str, version: str, request: Request) -> Response:
        return await infer(name, version, request)

    return r
