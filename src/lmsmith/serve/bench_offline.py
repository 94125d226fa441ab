"""`lmsmith bench offline`: the engine's throughput on a fixed request set, no server in the way.

The same workloads as `lmsmith bench serve` (`fixed` lengths or the seeded `sharegpt-mix`), sent all at once
through `LLM.generate` (continuous batching), with random token-id prompts so any model, random-init ones
included, gets exact lengths, and EOS ignored so every request generates exactly its output length. A short
warm-up on other prompts first (kernels compiled, CUDA graphs captured), and the prefix cache is cleared before
the timed run, so the run computes every prompt. Reports output tokens/s, requests/s and TTFT percentiles —
what vLLM's `benchmark_throughput` reports.
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np

from lmsmith.errors import LmsmithError
from lmsmith.serve.bench import DATASETS, MIX_CLIP, MIX_SIGMA, request_lengths, token_id_prompt


def bench_offline(model: str, requests: int = 256, prompt_len: int = 128, output_len: int = 256,
                  dataset: str = "fixed", seed: int = 0, dtype: str = "auto", progress: bool = True,
                  **engine_kwargs: Any) -> dict[str, Any]:
    """Time one `LLM.generate` over the whole request set; returns the summary (see the module docstring)."""
    for name, v in (("--requests", requests), ("--prompt-len", prompt_len), ("--output-len", output_len)):
        if v < 1:
            raise LmsmithError(f"{name} must be at least 1, got {v}")
    if dataset not in DATASETS:
        raise LmsmithError(f"unknown --dataset {dataset!r}", f"use one of: {', '.join(DATASETS)}")
    import contextlib

    from lmsmith.progress import console
    from lmsmith.serve.llm import LLM
    from lmsmith.serve.sampling_params import SamplingParams

    def status(text: str):  # the slow parts before the timed run are not silent
        return console.status(text) if progress else contextlib.nullcontext()

    lengths = request_lengths(dataset, requests, prompt_len, output_len, seed)
    with status(f"loading {model} into the engine …"):
        llm = LLM(model, dtype=dtype, **engine_kwargs)
    with llm:
        eng = llm.engine
        limit = eng.max_model_len
        clipped = 0
        if dataset == "sharegpt-mix":  # the mix's long tail is cut to the context, as vLLM's benchmark filters it
            fit = [(min(p, limit - 2), max(1, min(o, limit - 1 - min(p, limit - 2)))) for p, o in lengths]
            clipped = sum(a != b for a, b in zip(fit, lengths))
            lengths = fit
        too_long = [(p, o) for p, o in lengths if p + o > limit]
        if too_long:
            raise LmsmithError(f"{len(too_long)} requests need more than the model's {limit}-token context "
                               f"(e.g. {too_long[0][0]} in + {too_long[0][1]} out)",
                               "lower --prompt-len/--output-len, or raise --max-model-len")
        rng = random.Random(seed)
        high = max(2, min(eng.vocab_size, 32000))
        prompts = [token_id_prompt(p, rng, high) for p, _ in lengths]
        params = [SamplingParams(max_tokens=o, temperature=0.0, ignore_eos=True) for _, o in lengths]
        warm_rng = random.Random(seed + 1)
        warm_n = min(requests, eng.scheduler.max_num_seqs)
        with status(f"warming up ({warm_n} requests: kernels compiled, CUDA graphs captured) …"):
            llm.generate([token_id_prompt(max(1, min(prompt_len, limit - 5)), warm_rng, high) for _ in range(warm_n)],
                         SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True), use_tqdm=False)
        eng.blocks.reset_prefix_cache()
        t0 = time.perf_counter()
        results = llm.generate(prompts, params, use_tqdm=progress)
        duration = time.perf_counter() - t0
        native = bool(getattr(eng, "native", False))
    out_tokens = sum(len(o.token_ids) for r in results for o in r.outputs)
    ttft = np.asarray([r.ttft for r in results if r.ttft is not None]) * 1000
    summary: dict[str, Any] = {
        "requests": requests, "duration_s": duration, "output_tokens": out_tokens,
        "prompt_tokens": sum(p for p, _ in lengths), "output_tok_per_s": out_tokens / duration,
        "total_tok_per_s": (out_tokens + sum(p for p, _ in lengths)) / duration,
        "request_throughput": requests / duration,
        "ttft_p50_ms": float(np.percentile(ttft, 50)) if ttft.size else None,
        "ttft_p99_ms": float(np.percentile(ttft, 99)) if ttft.size else None,
        "native_engine": native, "clipped_to_context": clipped,
    }
    summary["config"] = dict(model=model, requests=requests, prompt_len=prompt_len, output_len=output_len,
                             dataset=dataset, seed=seed, dtype=dtype, **{k: v for k, v in engine_kwargs.items()})
    if dataset == "sharegpt-mix":
        summary["config"]["mix"] = {"distribution": "log-normal", "sigma": MIX_SIGMA, "clip": MIX_CLIP,
                                    "median": {"prompt": prompt_len, "output": output_len}}
    return summary


def print_offline(s: dict[str, Any]) -> None:
    from lmsmith.progress import out

    c = s["config"]
    out.print(f"{s['requests']} requests ({c['dataset']}, {s['prompt_tokens']} prompt + {s['output_tokens']} output "
              f"tokens) in {s['duration_s']:.2f} s")
    out.print(f"output {s['output_tok_per_s']:.1f} tok/s, total {s['total_tok_per_s']:.1f} tok/s, "
              f"{s['request_throughput']:.2f} req/s; TTFT p50 {s['ttft_p50_ms']:.1f} ms, p99 {s['ttft_p99_ms']:.1f} ms"
              + ("" if s["native_engine"] else " (transformers fallback runner)"))
