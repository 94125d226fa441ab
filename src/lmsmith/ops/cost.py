"""Serving cost: measured tokens/s -> price per million input and output tokens, per weight format.

Throughput comes, in this order, from `--tokens-per-s`, a live server (`--metrics-url`: the rate of
`vllm:generation_tokens_total` / `vllm:prompt_tokens_total` between two scrapes), or committed benchmark
results (bench/results/*.json): the server under load when measured for this model shape and GPU, else its
offline throughput, else the nearest measured shape scaled by weight bytes (decoding reads every weight once
per step; a measurement of the same shape on another GPU is scaled by memory bandwidth first). Each format
(bf16/fp16, int8, int4, fp8) gets the fewest GPUs whose memory holds its weights plus the
KV cache for `context x concurrency` tokens (lmsmith.ops.planner), and its speed relative to bf16 as measured by
bench/quant_gpu.py --engine on that GPU (else the weight-bytes estimate). Fewer cards at a similar speed is where
quantized serving saves money. Input tokens are priced from prefill throughput: measured when given, else
compute-bound at `--prefill-mfu` of the GPU's peak (fp8 doubles the peak on H100/H200).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmsmith import hardware
from lmsmith.errors import LmsmithError
from lmsmith.hardware import GPU_BANDWIDTH_TBS as BANDWIDTH_TBS
from lmsmith.hardware import GPU_PEAK_TFLOPS as PEAK_TFLOPS
from lmsmith.ops.planner import DTYPE_BYTES, SHAPES, Shape, plan_serve

FORMATS = {"bf16": "bfloat16", "int8": "int8", "int4": "int4", "fp8": "fp8"}  # fp16 == bf16 in size and speed
GPU_COUNTS = (1, 2, 4, 8)
GPU_MEM_GIB = {g: v for g, v in hardware.GPU_MEM_GIB.items() if g != "cpu"}  # the GPUs cost is quoted for
FP8_PEAK_GPUS = {"h100", "h200", "l40s"}
TP_NAMES = {"8b": "llama-3.1-8b", "70b": "llama-3.1-70b", "1b": "llama-3.2-1b", "3b": "llama-3.2-3b"}


def parse_price(text: str) -> float:
    """Dollars per GPU-hour from '2.5/h', '$2.5', '0.05/min', '1800/month' (30-day months)."""
    m = re.fullmatch(r"\s*\$?\s*(\d+(?:\.\d+)?)\s*(?:/\s*(h|hr|hour|min|minute|s|sec|day|month|mo))?\s*", text)
    if not m:
        raise LmsmithError(f"cannot read the price '{text}'", "give dollars per GPU-hour, e.g. --price 2.5/h")
    per = {"h": 1, "hr": 1, "hour": 1, None: 1, "min": 60, "minute": 60, "s": 3600, "sec": 3600,
           "day": 1 / 24, "month": 1 / 720, "mo": 1 / 720}[m.group(2)]
    return float(m.group(1)) * per


def gpu_key(device: str) -> str | None:
    d = device.lower()
    return next((g for g in GPU_MEM_GIB if g in d), None)


@dataclass
class Measured:
    shape: str
    gpu: str
    gpus: int
    tok_s: float
    kind: str  # loaded | offline
    source: str


def _shape_of(result: dict[str, Any]) -> str | None:
    text = json.dumps(result.get("workload", {})) + " " + str(result.get("command") or "")
    m = re.search(r"--(?:shape|preset)[ =]([\w.-]+)", text)
    if m:
        return m.group(1)
    for name in sorted(SHAPES, key=len, reverse=True):
        if name in text:
            return name
    return "llama-3.2-1b" if result.get("benchmark") in ("serve_load", "serve_throughput", "quant_engine") else None


def read_results(paths: list[Path]) -> tuple[list[Measured], dict[str, dict[str, float]]]:
    """Throughput measurements and per-GPU quantized speedups (vs bf16) from benchmark result files."""
    files: list[Path] = []
    for p in paths:
        files += sorted(p.glob("*.json")) if p.is_dir() else [p]
    meas: list[Measured] = []
    speedups: dict[str, dict[str, float]] = {}
    for f in files:
        try:
            r = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(r, dict) or not isinstance(r.get("metrics"), dict):
            continue
        gpu = gpu_key(str(r.get("device") or ""))
        if gpu is None:
            continue
        shape = _shape_of(r)
        for k, v in r["metrics"].items():
            if not isinstance(v, (int, float)) or v <= 0:
                continue
            if re.fullmatch(r"output_tok_per_s_c\d+", k) and shape:
                meas.append(Measured(shape, gpu, 1, float(v), "loaded", f"{f.name}:{k}"))
            elif re.fullmatch(r"offline_\d+_tok_s", k) and shape:
                meas.append(Measured(shape, gpu, 1, float(v), "offline", f"{f.name}:{k}"))
            elif m := re.fullmatch(r"(\w+?)_tp(\d+)_offline_tok_s", k):
                if m.group(1) in TP_NAMES:
                    meas.append(Measured(TP_NAMES[m.group(1)], gpu, int(m.group(2)), float(v), "offline", f"{f.name}:{k}"))
            elif (m := re.fullmatch(r"(int8|int4|fp8)_speedup_vs_bf16", k)) and r.get("benchmark") == "quant_engine":
                speedups.setdefault(gpu, {})[m.group(1)] = float(v)
    return meas, speedups


def scrape_rates(url: str, window: float, model: str | None = None) -> dict[str, float]:
    """Generated and prompt tokens per second of a running server over `window` seconds."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    def totals() -> tuple[float, float, float]:
        try:
            text = httpx.get(url, timeout=10).text
        except httpx.HTTPError as e:
            raise LmsmithError(f"cannot scrape {url}: {e}", "pass the server's /metrics URL") from None
        gen = prompt = 0.0
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if model and s.labels.get("model_name") not in (model, None):
                    continue
                if s.name == "vllm:generation_tokens_total":
                    gen += s.value
                elif s.name == "vllm:prompt_tokens_total":
                    prompt += s.value
        return time.monotonic(), gen, prompt

    t0, g0, p0 = totals()
    time.sleep(window)
    t1, g1, p1 = totals()
    if g1 <= g0:
        raise LmsmithError(f"no tokens were generated at {url} during {window:g} s",
                           "measure while the server is under its usual load, or pass --tokens-per-s")
    return {"output_tok_s": (g1 - g0) / (t1 - t0), "input_tok_s": (p1 - p0) / (t1 - t0)}


def baseline(shape_name: str, shape: Shape, gpu: str, meas: list[Measured]) -> tuple[float, int, str]:
    """bf16 output tokens/s for this shape on this GPU: (tok/s, GPUs it was measured on, how we know)."""
    on_gpu = [m for m in meas if m.gpu == gpu]
    for kind in ("loaded", "offline"):
        same = [m for m in on_gpu if m.shape == shape_name and m.kind == kind]
        if same:
            best = max(same, key=lambda m: m.tok_s / m.gpus)
            return best.tok_s, best.gpus, f"measured ({best.kind}): {best.source}"
    elsewhere = [m for m in meas if m.shape == shape_name and m.gpu != gpu and m.gpu in BANDWIDTH_TBS]
    if elsewhere:  # the same model on another GPU: decoding scales with memory bandwidth
        best = max(elsewhere, key=lambda m: (m.kind == "loaded", m.tok_s / m.gpus))
        bw = BANDWIDTH_TBS[gpu] / BANDWIDTH_TBS[best.gpu]
        return best.tok_s * bw, best.gpus, f"{best.gpu} measurement ({best.kind}) x {bw:.2f} bandwidth ratio: {best.source}"
    known = [m for m in on_gpu if m.shape in SHAPES]
    if not known:
        raise LmsmithError(f"no measured throughput on {gpu}",
                           "pass --tokens-per-s, --metrics-url of a running server, or --results with bench results")
    params = shape.params()

    def dist(m: Measured) -> float:
        return abs(math.log(Shape.from_config(SHAPES[m.shape]).params() / params)) + (m.kind != "loaded") * 0.5

    ref = min(known, key=dist)
    scale = Shape.from_config(SHAPES[ref.shape]).params() / params
    return ref.tok_s * scale, ref.gpus, f"scaled by weight bytes from {ref.shape} ({ref.kind}): {ref.source}"


def plan_cost(shape_name: str, shape: Shape, *, gpu: str = "h100", price_per_gpu_hour: float = 2.5,
              tokens_per_s: float | None = None, input_tokens_per_s: float | None = None,
              measured_gpus: int = 1, results: list[Path] | None = None, context: int = 4096,
              concurrency: int = 64, prefill_mfu: float = 0.35, source: str | None = None) -> dict[str, Any]:
    gpu = gpu.lower()
    if gpu not in GPU_MEM_GIB:
        raise LmsmithError(f"unknown GPU '{gpu}'", f"use one of: {', '.join(GPU_MEM_GIB)}")
    meas, speedups = read_results(results or [])
    notes = []
    if tokens_per_s is None:
        tokens_per_s, measured_gpus, source = baseline(shape_name, shape, gpu, meas)
    source = source or "given (--tokens-per-s)"
    sp = speedups.get(gpu, {})
    rows = []
    for fmt, dtype in FORMATS.items():
        kv = "fp8" if fmt == "fp8" else "bfloat16"
        gpus = next((g for g in GPU_COUNTS if plan_serve(shape, gpus=g, gpu_mem_gib=GPU_MEM_GIB[gpu], weight_dtype=dtype,
                                                         kv_dtype=kv, context=context, concurrency=concurrency,
                                                         gpu=gpu)["fits"]), None)
        if fmt == "bf16":
            speed, how = 1.0, "baseline"
        elif fmt in sp:
            speed, how = sp[fmt], f"measured bs1 speedup on {gpu}"
        else:
            speed, how = min(2.0, DTYPE_BYTES["bfloat16"] / DTYPE_BYTES[dtype]) ** 0.5, "estimated (sqrt of weight-bytes ratio)"
        if gpus is None:
            rows.append({"format": fmt, "gpus": None, "fits": False, "speed_vs_bf16": speed, "speed_source": how})
            continue
        out_tok_s = tokens_per_s * speed
        peak = PEAK_TFLOPS.get(gpu, 989.0) * 1e12 * (2 if fmt == "fp8" and gpu in FP8_PEAK_GPUS else 1)
        in_tok_s = (input_tokens_per_s * (2 if fmt == "fp8" else 1) if input_tokens_per_s
                    else prefill_mfu * peak * gpus / (2 * shape.params()))
        hourly = price_per_gpu_hour * gpus
        rows.append({"format": fmt, "gpus": gpus, "fits": True, "speed_vs_bf16": round(speed, 3), "speed_source": how,
                     "output_tok_s": round(out_tok_s, 1), "input_tok_s": round(in_tok_s, 1),
                     "usd_per_hour": round(hourly, 3),
                     "usd_per_m_output": round(hourly / (out_tok_s * 3600) * 1e6, 4),
                     "usd_per_m_input": round(hourly / (in_tok_s * 3600) * 1e6, 4)})
    base = next((r for r in rows if r["format"] == "bf16" and r["fits"]), None)
    for r in rows:
        if base and r["fits"]:
            r["cost_vs_bf16"] = round(r["usd_per_m_output"] / base["usd_per_m_output"], 3)
    if measured_gpus != 1:
        notes.append(f"throughput measured on {measured_gpus} GPUs per replica; tensor parallelism adds little "
                     "throughput (8B: x1.04 on 2 GPUs, bench/results/serve_tp-h200x2.json), so it is used as is")
    notes.append("fp16 costs the same as bf16 (same bytes, same kernels)")
    return {"model": shape_name, "gpu": gpu, "usd_per_gpu_hour": price_per_gpu_hour, "context": context,
            "concurrency": concurrency, "bf16_output_tok_s": round(tokens_per_s, 1), "throughput_source": source,
            "formats": rows, "notes": notes}


def default_results() -> list[Path]:
    """bench/results of the working directory and of a source checkout of lmsmith, where they exist."""
    import lmsmith

    dirs = [Path.cwd() / "bench" / "results", Path(lmsmith.__file__).resolve().parents[2] / "bench" / "results"]
    seen, out = set(), []
    for d in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.add(d.resolve())
            out.append(d)
    return out
