"""CPU batch-1 greedy decode speed of the default model: fp32 vs int8 vs int4 weights (HF `generate`, KV cache).

The configs run interleaved (fp32, int8, int4, fp32, …) and the medians are reported, so a shared,
noisy CPU affects them alike. Decode speed counts only the steps after the first token (prefill excluded).
Also records how many greedy tokens each quantized model shares with fp32 and the weight bytes.

    python -m bench.compress.quant_cpu --repeats 5 --new-tokens 64
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from bench._result import make_result, write_result
from bench.common import RESULTS
from lmsmith.quant import linear_weight_bytes

PROMPT = "Write a short paragraph about the history of bread."


class StepClock:
    """A stopping criterion that never stops: it timestamps every generated token."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids, scores, **kwargs):
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def decode_once(model, inputs: dict, new_tokens: int) -> tuple[float, float, list[int]]:
    """(decode tok/s after the first token, prefill+first-token seconds, generated ids)."""
    from transformers import StoppingCriteriaList

    clock = StepClock()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             stopping_criteria=StoppingCriteriaList([clock]), pad_token_id=model.config.eos_token_id)
    steps = len(clock.times) - 1
    return steps / (clock.times[-1] - clock.times[0]), clock.times[0] - t0, out[0, inputs["input_ids"].shape[1]:].tolist()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model ref or path (default: pull the default model)")
    ap.add_argument("--methods", default="fp32,int8,int4", help="comma-separated: fp32,bf16,int8,int4")
    ap.add_argument("--group-size", type=int, default=None, help="int4 group size (default: largest that divides)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default=str(RESULTS / "quant_cpu.json"))
    args = ap.parse_args()

    from lmsmith.models import load_model, load_tokenizer
    from lmsmith.quant import quantize_model_

    if args.threads:
        torch.set_num_threads(args.threads)
    ref = args.model
    if ref is None:
        from lmsmith.registry.importers import pull_default

        ref = pull_default()[0].ref
    tok = load_tokenizer(ref)
    text = tok.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True)
    inputs = dict(tok(text, return_tensors="pt"))
    methods = [m for m in args.methods.split(",") if m]
    models, specs = {}, {}
    for m in methods:
        model = load_model(ref, dtype="bfloat16" if m == "bf16" else "float32", device="cpu")
        if m in ("int8", "int4"):
            specs[m] = quantize_model_(model, m, args.group_size).to_dict()
        models[m] = model
    times: dict[str, list[float]] = {m: [] for m in methods}
    prefill: dict[str, list[float]] = {m: [] for m in methods}
    outputs: dict[str, list[int]] = {}
    for m in methods:  # warm-up (kernel layouts, allocator)
        decode_once(models[m], inputs, 8)
    for r in range(args.repeats):
        for m in methods:
            tps, pre, ids = decode_once(models[m], inputs, args.new_tokens)
            times[m].append(tps)
            prefill[m].append(pre)
            outputs.setdefault(m, ids)
            print(f"repeat {r + 1}/{args.repeats} {m}: {tps:.1f} tok/s", file=sys.stderr)
    metrics: dict[str, float] = {}
    base = methods[0]
    for m in methods:
        metrics[f"{m}_decode_tok_s"] = round(statistics.median(times[m]), 2)
        metrics[f"{m}_decode_tok_s_min"] = round(min(times[m]), 2)
        metrics[f"{m}_decode_tok_s_max"] = round(max(times[m]), 2)
        metrics[f"{m}_prefill_s"] = round(statistics.median(prefill[m]), 4)
        metrics[f"{m}_linear_weight_mb"] = round(linear_weight_bytes(models[m]) / 2**20, 2)
        if m != base:
            same = next((i for i, (a, b) in enumerate(zip(outputs[m], outputs[base])) if a != b), len(outputs[m]))
            metrics[f"{m}_greedy_tokens_matching_{base}"] = same
            metrics[f"{m}_speedup_vs_{base}"] = round(metrics[f"{m}_decode_tok_s"] / metrics[f"{base}_decode_tok_s"], 3)
    metrics["new_tokens"] = args.new_tokens
    metrics["repeats"] = args.repeats
    metrics["torch_threads"] = torch.get_num_threads()
    write_result(args.out, make_result(
        "quant_cpu", metrics, "cpu", model=ref, prompt=PROMPT, quantization=specs,
        note="HF generate, batch 1, greedy, fixed output length, KV cache; medians of interleaved repeats"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
