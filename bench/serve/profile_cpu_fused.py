"""Where the fused CPU decode step (`cpu_kernels.decode_forward`, the default for int4/int8 checkpoints) spends
its time: each op of a layer called alone at the model's shapes (the four GEMVs with their fused prologues and
epilogues, the attention op at the step's context), the lm_head GEMV, then the whole decode_forward call and a
whole engine step (scheduling, sampling), all in one process, interleaved over `--repeats` rounds (medians).

    python -m bench.serve.profile_cpu_fused --threads 1      # the default model, int4 g32 + int8 lm_head

Writes bench/results/profile_cpu_fused.json. The sum of the parts against the whole call says what the call
itself costs; the bytes each part streams (`*_mb`) against its time give its effective bandwidth.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench._result import make_result, write_result
from bench.common import RESULTS


def per_call_us(fn, n: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--group-size", type=int, default=32)
    ap.add_argument("--context", type=int, default=80, help="tokens in the cache for the attention op")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS / "profile_cpu_fused.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from lmsmith.compress.quantize import quantize_to_dir
    from lmsmith.models import resolve
    from lmsmith.serve import SamplingParams
    from lmsmith.serve import cpu_kernels as ck
    from lmsmith.serve.engine import Engine

    if args.model == "smollm2-135m-instruct":
        from lmsmith.registry.importers import pull_default

        pull_default()
    src = Path(resolve(args.model).dir)
    tmp = tempfile.TemporaryDirectory()
    out = Path(tmp.name) / "q"
    quantize_to_dir(src, out, "int4", args.group_size, include_lm_head=True, lm_head_method="int8")
    eng = Engine(str(out), dtype="float32", device="cpu", max_num_seqs=1, enable_prefix_caching=False)
    model = eng.runner.model
    fns = model._cpu_linears(torch.float32)
    s = model.spec
    layer0, head = fns[0], fns[-1]
    hid, inter = s.hidden_size, s.intermediate_size
    qkv_out = (s.num_heads + 2 * s.num_kv_heads) * s.head_dim
    x, o, gu = torch.randn(1, hid), torch.randn(1, s.num_heads * s.head_dim), torch.randn(1, 2 * inter)
    ln = model.model.layers[0].input_layernorm
    bs = eng.runner.block_size if hasattr(eng.runner, "block_size") else 16
    kc = torch.zeros(-(-(args.context + 1) // bs) + 1, bs, s.num_kv_heads, s.head_dim)
    vc = torch.zeros_like(kc)
    qkv = torch.randn(1, qkv_out)
    cos, sin = torch.randn(1, s.head_dim), torch.randn(1, s.head_dim)
    tables = torch.arange(kc.shape[0])[None]
    lens, slots = torch.tensor([args.context]), torch.tensor([args.context - 1])
    parts = {
        "qkv_gemv_rmsnorm": lambda: layer0[0].fused(x, ln.weight, ln.eps),
        "o_gemv_residual": lambda: layer0[1].fused(o, None, 0.0, 0, x),
        "gate_up_gemv_rmsnorm": lambda: layer0[2].fused(x, ln.weight, ln.eps),
        "down_gemv_silu_residual": lambda: layer0[3].fused(gu, None, 0.0, 1, x),
        "attention_rope_kv": lambda: ck.decode_attention(qkv, cos, sin, kc, vc, slots, tables, lens, s.num_heads,
                                                         s.num_kv_heads, s.head_dim, s.head_dim ** -0.5, None, bs),
        "lm_head_gemv_rmsnorm": lambda: head.fused(x, ln.weight, ln.eps),
    }
    ids = [(7 * j) % (s.vocab_size - 10) + 5 for j in range(args.context - 32)]

    def step_ms() -> tuple[float, float]:
        """(engine step, decode_forward call) per token, over 32 decode steps after the prompt."""
        took = []
        real = model._forward_decode_cpu_fused

        def timed(*a):
            t = time.perf_counter()
            r = real(*a)
            took.append(time.perf_counter() - t)
            return r
        model._forward_decode_cpu_fused = timed
        eng.add_request(f"r{time.time_ns()}", ids, SamplingParams(max_tokens=33, temperature=0.0, ignore_eos=True))
        times = []
        while eng.has_unfinished():
            for r in eng.step():
                if r.new_token_ids:
                    times.append(time.perf_counter())
        del model._forward_decode_cpu_fused
        return (times[-1] - times[0]) / (len(times) - 1) * 1e3, statistics.median(took) * 1e3

    step_ms()
    rounds: dict[str, list[float]] = {k: [] for k in [*parts, "decode_forward_ms", "engine_step_ms"]}
    for _ in range(args.repeats):
        for k, fn in parts.items():
            rounds[k].append(per_call_us(fn, 20 if k.startswith("lm_head") else 200))
        step, fwd = step_ms()
        rounds["engine_step_ms"].append(step)
        rounds["decode_forward_ms"].append(fwd)
    med = {k: statistics.median(v) for k, v in rounds.items()}
    L = s.num_layers
    layer_us = sum(med[k] for k in parts if not k.startswith("lm_head"))
    gemv_us = L * sum(med[k] for k in parts if "gemv" in k and not k.startswith("lm_head")) + med["lm_head_gemv_rmsnorm"]
    metrics = {f"{k}_us": round(v, 1) for k, v in med.items() if k in parts}
    metrics.update({
        "layer_sum_of_parts_us": round(layer_us, 1),
        "step_sum_of_parts_ms": round((L * layer_us + med["lm_head_gemv_rmsnorm"]) / 1e3, 3),
        "step_gemv_share_of_parts": round(gemv_us / (L * layer_us + med["lm_head_gemv_rmsnorm"]), 3),
        "decode_forward_ms": round(med["decode_forward_ms"], 3),
        "engine_step_ms": round(med["engine_step_ms"], 3),
        "weights_int4_mb_per_token": round(L * (qkv_out * hid + hid * hid + 2 * inter * hid + inter * hid)
                                           * (0.5 + 4 / args.group_size) / 1e6, 1),
        "lm_head_int8_mb": round(s.vocab_size * hid / 1e6, 1),
    })
    result = make_result("profile_cpu_fused", metrics, device=f"cpu ({args.threads} threads)", model=args.model,
                         workload={"group_size": args.group_size, "lm_head": "int8", "context": args.context,
                                   "repeats": args.repeats, "isa": ck.isa(),
                                   "load_avg_1_5_15": [round(v, 2) for v in os.getloadavg()],
                                   "rounds": {k: [round(x, 2) for x in v] for k, v in rounds.items()}})
    write_result(args.out, result)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
