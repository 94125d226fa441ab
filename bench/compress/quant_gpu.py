"""GPU batch-1 decode speed with quantized weights: bf16 vs int8 vs int4 vs fp8 on a random-init model.

The model is a transformers Llama of a real shape (default: Llama-3.2-1B) with its linears swapped by
`quantize_model_`; decoding is HF `generate`, greedy, fixed output length, with a static KV cache (and
optionally torch.compile), so the numbers isolate what the weight format buys at batch 1.

    python -m bench.compress.quant_gpu --shape llama-3.2-1b --out bench/results/quant_gpu-h100.json

`--engine` measures our serving engine instead (native runner, CUDA graphs, quantized checkpoints written
by `save_quantized` from the same random-init model, quantized on the GPU): batch-1 decode for each method,
side by side with bf16 in one run. A method `X:Y` quantizes the body with X and the lm_head with Y.

    python -m bench.compress.quant_gpu --engine --methods bf16,int8,int4,fp8,int4:int8 --out bench/results/quant_engine-h100.json
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import sys
import time
from pathlib import Path

import torch

from bench._result import make_result, write_result
from bench.common import RESULTS, ROOT
from lmsmith.quant import linear_weight_bytes


class StepClock:
    """A stopping criterion that never stops: it timestamps every generated token (after a device sync)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids, scores, **kwargs):
        torch.cuda.synchronize()
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def build_model(shape: str, dtype: torch.dtype):
    from transformers import AutoConfig, AutoModelForCausalLM

    from lmsmith.ops.planner import SHAPES

    spec = dict(SHAPES[shape])
    cfg = AutoConfig.for_model("llama", **spec, max_position_embeddings=8192, rope_theta=500000.0,
                               bos_token_id=1, eos_token_id=2, pad_token_id=2, rms_norm_eps=1e-5)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval()


def decode(model, prompt: torch.Tensor, new_tokens: int, static: bool) -> float:
    from transformers import StoppingCriteriaList

    clock = StepClock()
    kw = dict(cache_implementation="static") if static else {}
    with torch.inference_mode():
        model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                       stopping_criteria=StoppingCriteriaList([clock]), pad_token_id=2, **kw)
    return (len(clock.times) - 1) / (clock.times[-1] - clock.times[0])


def ppl_deltas(ref: str, text_path: Path, methods: list[str]) -> dict[str, float]:
    """Perplexity of a real model on the English sample, per method, on this GPU (bf16 activations)."""
    from lmsmith.evaluate.perplexity import perplexity
    from lmsmith.models import load_model, load_tokenizer
    from lmsmith.quant import quantize_model_

    tok = load_tokenizer(ref)
    text = text_path.read_text()
    out: dict[str, float] = {}
    for m in ["bf16", *[x for x in methods if x != "bf16"]]:
        model = load_model(ref, dtype="bfloat16", device="cuda")
        if m != "bf16":
            quantize_model_(model, m)
        out[f"{m}_ppl"] = round(perplexity(model, tok, text).ppl, 4)
        del model
        torch.cuda.empty_cache()
    for m in methods:
        if m != "bf16":
            out[f"{m}_ppl_delta_pct"] = round(100 * (out[f"{m}_ppl"] / out["bf16_ppl"] - 1), 3)
    return out


def engine_decode(model_dir: Path, prompt_len: int, new_tokens: int, repeats: int, max_num_seqs: int) -> dict:
    """Batch-1 decode tok/s of the engine (median over `repeats` single-prompt runs after a warm-up)."""
    from bench.common import ours, prompts
    batch = prompts(repeats, prompt_len, 1000)
    return ours(model_dir, [[p] for p in batch], new_tokens, max_num_seqs=max_num_seqs)


def engine_logits_agreement(dirs: dict[str, Path], n_tokens: int = 256) -> dict[str, float]:
    """Next-token agreement and logit error of each quantized engine vs the bf16 one, teacher-forced on random
    tokens (the random-init model has no meaningful perplexity; real-model deltas: tests/compress)."""
    from lmsmith.serve.scoring import engine_logits

    ids = torch.randint(10, 1000, (n_tokens,), generator=torch.Generator().manual_seed(1)).tolist()
    ref = engine_logits(str(dirs["bf16"]), ids, dtype="bfloat16")
    out: dict[str, float] = {}
    for m, d in dirs.items():
        if m == "bf16":
            continue
        lg = engine_logits(str(d), ids, dtype="bfloat16")
        key = m.replace(":", "_head_")
        out[f"{key}_top1_agree_pct"] = round(100 * (lg.argmax(-1) == ref.argmax(-1)).float().mean().item(), 2)
        out[f"{key}_logit_rel_err"] = round(((lg - ref).norm() / ref.norm()).item(), 4)
        torch.cuda.empty_cache()
    return out


def run_engine(args, methods: list[str]) -> tuple[dict[str, float], dict[str, str], dict[str, dict]]:
    import tempfile

    from bench.common import build_model_dir
    from lmsmith.models import load_model
    from lmsmith.quant import quantize_model_
    from lmsmith.quant.format import save_quantized
    metrics: dict[str, float] = {}
    notes: dict[str, str] = {}
    bs1: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = build_model_dir(args.shape, Path(tmp) / "bf16", torch.bfloat16)
        dirs = {"bf16": src}
        for m in methods:
            if m == "bf16":
                continue
            body, _, head = m.partition(":")
            model = load_model(str(src), dtype="bfloat16", device="cuda")
            spec = quantize_model_(model, body, args.group_size if body == "int4" else None, lm_head_method=head or None)
            dirs[m] = save_quantized(model, src, Path(tmp) / m.replace(":", "_"), spec, dtype=torch.bfloat16)
            del model
            gc.collect()
            torch.cuda.empty_cache()
        for m, d in dirs.items():
            key = m.replace(":", "_head_")
            r = engine_decode(d, args.prompt_len, args.new_tokens, args.repeats, args.max_num_seqs)
            metrics[f"{key}_decode_bs1_tok_s"] = round(r["tok_s"], 2)
            # the same runs without the prefill: (tokens - 1) / (wall - TTFT)
            wall = args.new_tokens / r["tok_s"]
            metrics[f"{key}_decode_only_bs1_tok_s"] = round((args.new_tokens - 1) / (wall - r["ttft_p50_ms"] / 1000), 2)
            metrics[f"{key}_ttft_ms"] = round(r["ttft_p50_ms"], 2)
            notes[key] = f"runs {r['runs_tok_s']}, batch-1 graph: {r.get('bs1_graph') or 'the model step'}"
            # the batch-1 step choice: graph replay ms of each candidate step, and of each projection's tiles
            bs1[key] = {"choice": r.get("bs1_graph"), "replay_ms": r.get("bs1_graph_ms"), "tiles_ms": r.get("bs1_tiles_ms")}
            chosen = (r.get("bs1_graph_ms") or {}).get(r.get("bs1_graph"))
            if isinstance(chosen, (int, float)):
                metrics[f"{key}_bs1_step_replay_ms"] = chosen
            print(f"engine {m}: {r}", file=sys.stderr, flush=True)
            gc.collect()
            torch.cuda.empty_cache()
        if not args.skip_agreement:
            metrics.update(engine_logits_agreement(dirs))
    return metrics, notes, bs1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="llama-3.2-1b", help="a shape preset of lmsmith.ops.planner.SHAPES")
    ap.add_argument("--methods", default="bf16,int8,int4,fp8")
    ap.add_argument("--group-size", type=int, default=128, help="int4 group size")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-static-cache", action="store_true", help="use the dynamic KV cache")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (mode=max-autotune-no-cudagraphs)")
    ap.add_argument("--ppl-model", default=None, help="also measure perplexity deltas of this model ref/path on the text")
    ap.add_argument("--ppl-text", default=str(ROOT / "tests/compress/data/english_sample.txt"))
    ap.add_argument("--engine", action="store_true", help="measure our serving engine (native runner) instead of HF generate")
    ap.add_argument("--max-num-seqs", type=int, default=16, help="--engine: graph buckets captured (1..this)")
    ap.add_argument("--skip-agreement", action="store_true", help="--engine: skip the logit agreement check")
    ap.add_argument("--out", default=str(RESULTS / "quant_gpu.json"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: this benchmark needs a CUDA GPU (see bench/compress/quant_cpu.py for the CPU one)")

    from lmsmith.quant import fp8_supported, prepare_for_inference, quantize_model_

    methods = [m for m in args.methods.split(",") if m]
    if "fp8" in methods and not fp8_supported(torch.device("cuda")):
        print("skipping fp8: needs compute capability >= 8.9", file=sys.stderr)
        methods.remove("fp8")
    if args.engine:
        return engine_main(args, methods)
    static = not args.no_static_cache
    base = build_model(args.shape, torch.bfloat16)
    vocab = base.config.vocab_size
    prompt = torch.randint(10, vocab, (1, args.prompt_len), generator=torch.Generator().manual_seed(0)).cuda()
    metrics: dict[str, float] = {}
    kernels: dict[str, str] = {}
    for m in methods:
        model = base if m == "bf16" else copy.deepcopy(base)
        if m != "bf16":
            quantize_model_(model, m, args.group_size if m == "int4" else None)
            prepare_for_inference(model)
            from lmsmith.quant import QuantLinear

            ql = next(x for x in model.modules() if isinstance(x, QuantLinear))
            probe = torch.randn(1, ql.in_features, device="cuda", dtype=torch.bfloat16)
            kernels[m] = f"{type(ql).__name__}: {'kernel' if ql.fast_matmul(probe) is not None else 'dequantize fallback'}"
        if args.compile:
            model.forward = torch.compile(model.forward, mode="max-autotune-no-cudagraphs", dynamic=False)
        decode(model, prompt, 16, static)  # warm-up (compile, kernel layouts, cache allocation)
        runs = [decode(model, prompt, args.new_tokens, static) for _ in range(args.repeats)]
        metrics[f"{m}_decode_bs1_tok_s"] = round(statistics.median(runs), 2)
        metrics[f"{m}_linear_weight_gb"] = round(linear_weight_bytes(model) / 1e9, 3)
        print(f"{m}: {metrics[f'{m}_decode_bs1_tok_s']} tok/s ({runs})", file=sys.stderr)
        if m != "bf16":
            del model
            gc.collect()
            torch.cuda.empty_cache()
    for m in methods:
        if m != "bf16" and "bf16_decode_bs1_tok_s" in metrics:
            metrics[f"{m}_speedup_vs_bf16"] = round(metrics[f"{m}_decode_bs1_tok_s"] / metrics["bf16_decode_bs1_tok_s"], 3)
    if args.ppl_model:
        metrics.update(ppl_deltas(args.ppl_model, Path(args.ppl_text), methods))
    write_result(args.out, make_result(
        "quant_gpu", metrics, "cuda", shape=args.shape, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
        static_cache=static, compile=args.compile, int4_group_size=args.group_size, kernels=kernels))
    return 0


def engine_main(args, methods: list[str]) -> int:

    metrics, notes, bs1 = run_engine(args, methods)
    base = metrics.get("bf16_decode_bs1_tok_s")
    base_only = metrics.get("bf16_decode_only_bs1_tok_s")
    for k in list(metrics):
        if k.startswith("bf16"):
            continue
        if k.endswith("_decode_only_bs1_tok_s") and base_only:  # without the prefill (TTFT)
            metrics[k.replace("_decode_only_bs1_tok_s", "_decode_only_speedup_vs_bf16")] = round(metrics[k] / base_only, 3)
        elif k.endswith("_decode_bs1_tok_s") and base:
            metrics[k.replace("_decode_bs1_tok_s", "_speedup_vs_bf16")] = round(metrics[k] / base, 3)
    if args.ppl_model:
        metrics.update(ppl_deltas(args.ppl_model, Path(args.ppl_text), [m for m in methods if ":" not in m]))
    write_result(args.out, make_result(
        "quant_engine", metrics, "cuda", shape=args.shape, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
        int4_group_size=args.group_size, engine="native runner, CUDA graphs", runs=notes, bs1_step=bs1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
