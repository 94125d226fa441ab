"""Where one CPU decode step goes: the whole step, the step with its projections replaced by cached outputs,
and with attention replaced too (the differences are the matmuls and the attention; the rest is small ops).
This is the lean step on PyTorch's kernels (LMSMITH_CPU_KERNELS=0, the path without a compiler); the default
fused step on our kernels is one C++ call per token: `profile_cpu_fused.py` takes that one apart.

    python -m bench.serve.profile_cpu_decode --method int4 --lm-head int8      # the default model, quantized here

Writes bench/results/profile_cpu_decode.json ({"benchmark", "device", "date", "command", "versions", "metrics"}).
Medians over `--repeats` steps; on a shared machine run it twice.
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


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1e3, 3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--method", default="int4", choices=["none", "int8", "int4"])
    ap.add_argument("--group-size", type=int, default=32)
    ap.add_argument("--lm-head", default="int8", choices=["none", "int8", "int4"])
    ap.add_argument("--context", type=int, default=150, help="tokens already in the cache")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--out", default=str(RESULTS / "profile_cpu_decode.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from lmsmith.models import quiet_transformers, resolve
    from lmsmith.serve import SamplingParams
    from lmsmith.serve import llama as L
    from lmsmith.serve.engine import Engine
    from lmsmith.serve.scheduler import ScheduledSeq
    from lmsmith.serve.sequence import Sequence

    quiet_transformers()
    if args.model == "smollm2-135m-instruct":
        from lmsmith.registry.importers import pull_default

        pull_default()
    model_dir = resolve(args.model).dir
    os.environ["LMSMITH_CPU_KERNELS"] = "0"  # the lean step of PyTorch's kernels, whose parts can be swapped out
    tmp = tempfile.TemporaryDirectory()
    if args.method != "none":
        from lmsmith.compress.quantize import quantize_to_dir

        head = None if args.lm_head == "none" else args.lm_head
        out = Path(tmp.name) / "q"
        quantize_to_dir(model_dir, out, args.method, args.group_size if args.method == "int4" else None,
                        include_lm_head=head is not None, lm_head_method=head)
        model_dir = out
    engine = Engine(str(model_dir), dtype="float32", device="cpu", max_num_seqs=1, enable_prefix_caching=False)
    runner = engine.runner
    n = args.context
    seq = Sequence("p", 0, [(7 * j) % 1000 + 5 for j in range(n)], SamplingParams())
    seq.block_table = list(range(-(-(n + 1) // runner.block_size)))
    with torch.inference_mode():
        runner.execute([ScheduledSeq(seq, 0, n)])
    seq.tokens.append(42)
    batch = [ScheduledSeq(seq, n, 1)]
    step = lambda: runner.execute(batch)  # noqa: E731

    metrics = {"step_ms": median_ms(step, args.repeats)}
    model = runner.model
    fns = model._cpu_linears(runner.dtype)
    s = model.spec
    xs = {k: torch.randn(1, k) for k in (s.hidden_size, s.num_heads * s.head_dim, s.intermediate_size)}

    def matmuls_alone():  # the same bound projections back to back, nothing between them
        for qkv, o, gate_up, down in fns[:-1]:
            qkv(xs[s.hidden_size]), o(xs[s.num_heads * s.head_dim]), gate_up(xs[s.hidden_size])
            down(xs[s.intermediate_size])
        fns[-1](xs[s.hidden_size])

    with torch.inference_mode():
        metrics["matmuls_alone_ms"] = median_ms(matmuls_alone, args.repeats)
    cached: dict = {}

    def frozen(fn, key):  # the projection's output, computed once: the step without its matmuls
        return lambda x: cached[key] if key in cached else cached.setdefault(key, fn(x))

    model._cpu_fns = (runner.dtype, [tuple(frozen(f, (i, j)) for j, f in enumerate(layer))
                                     for i, layer in enumerate(fns[:-1])] + [frozen(fns[-1], "head")])
    metrics["step_without_matmuls_ms"] = median_ms(step, args.repeats)
    attention = L.decode_attention_cpu
    zeros = torch.zeros(model.spec.num_heads, model.spec.head_dim)
    L.decode_attention_cpu = lambda *a, **k: zeros
    try:
        metrics["step_without_matmuls_or_attention_ms"] = median_ms(step, args.repeats)
    finally:
        L.decode_attention_cpu = attention
        model._cpu_fns = None
    metrics["matmuls_ms"] = round(metrics["step_ms"] - metrics["step_without_matmuls_ms"], 3)
    metrics["attention_ms"] = round(metrics["step_without_matmuls_ms"] - metrics["step_without_matmuls_or_attention_ms"], 3)
    metrics["other_ops_ms"] = metrics["step_without_matmuls_or_attention_ms"]
    metrics["tok_s_bound"] = round(1000 / metrics["step_ms"], 1)
    write_result(args.out, make_result("profile_cpu_decode", metrics, "cpu", workload={
        "model": args.model, "method": args.method, "lm_head": args.lm_head, "context": n, "threads": args.threads,
        "repeats": args.repeats}))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
