"""Run by test_gemv_planar.py in a subprocess with TRITON_INTERPRET=1: the engine's batch-1 decode step
(`forward_bs1`) with every projection on the planar GEMV tiles (split-K, SwiGLU / add+RMSNorm / RoPE + KV-write
epilogues, an int8 lm_head) against the same step on the model's own kernels, over three positions of one sequence
(each step attends to the K/V the previous ones wrote). float16: the interpreter mishandles bfloat16 arithmetic.
Prints "ok step <method> <i> <relative error>" lines or raises."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

assert os.environ.get("TRITON_INTERPRET") == "1", "run under TRITON_INTERPRET=1"
os.environ["LMSMITH_TRITON_AUTOTUNE"] = "0"  # the int8 layers' own Triton GEMM: one config

import torch  # noqa: E402

from lmsmith.compress.quantize import quantize_to_dir  # noqa: E402
from lmsmith.serve.attention import AttentionMetadata  # noqa: E402
from lmsmith.serve.gemv import bs1_eligible, forward_bs1, norm_in_ok  # noqa: E402
from lmsmith.serve.loader import load_runner  # noqa: E402
from lmsmith.tiny import build_tiny  # noqa: E402

OWN = {"qkv": None, "gate_up": None, "o_proj": None, "down": None, "lm_head": None}
NORM_IN = {"qkv": (4, 64, 4), "gate_up": (2, 64, 4), "o_proj": (4, 32, 4), "down": (4, 128, 4), "lm_head": (4, 64, 4),
           "norm_in": True}
PLANAR = {"qkv": (8, "S", 1, 1), "gate_up": (4, "F", 1, 1), "o_proj": (8, "F", 1, 2), "down": (8, "F", 4, 2),
          "lm_head": (8, "P", 1, 1)}


def steps(runner, plan: dict) -> tuple[list[torch.Tensor], torch.Tensor]:
    cache = torch.zeros_like(runner.kv_cache)
    counter = torch.zeros(1, dtype=torch.int32)
    tokens = torch.zeros(1, dtype=torch.long)
    out = []
    for pos, tok in enumerate([5, 9, 13]):
        buf = torch.tensor([[tok, pos, pos, pos + 1, -1, 0, 0, 0]])  # token, position, slot, context, source, table
        meta = AttentionMetadata(slot_mapping=buf[:, 2], decode_rows=torch.arange(1), decode_block_tables=buf[:, 5:],
                                 decode_context_lens=buf[:, 3], prefills=[], block_size=16,
                                 sliding_window=runner.spec.sliding_window, decode_only=True, positions=buf[:, 1])
        with torch.inference_mode():
            out.append(forward_bs1(runner.model, buf, tokens, runner.cos, runner.sin, cache, meta, counter, plan).clone())
        assert counter.item() == 0
    return out, cache


def main() -> int:
    tmp = Path(tempfile.mkdtemp())
    src = build_tiny(tmp / "tiny", "llama", hidden_size=128, intermediate_size=256)
    # (and the residual-stream plan: RMSNorm in the GEMV prologues, residual adds in their epilogues, one-launch
    # attention, on stored-layout tiles: a 16-bit model and an int8 one)
    for method, group, head in (("int4", 32, "int8"), ("int8", None, None), ("fp16", None, None),
                                ("int8-norm-in", None, None)):
        qdir = tmp / method
        if method == "fp16":
            qdir = src
        else:
            quantize_to_dir(src, qdir, method.split("-")[0], group_size=group, lm_head_method=head)
        runner, _, _ = load_runner(str(qdir), torch.float16, "cpu", 64, allow_fallback=False)
        runner.allocate_kv(4, 16, 1)
        runner.model.fused = True  # the CUDA engine's fused layout (kept off on CPU)
        assert bs1_eligible(runner.model)
        plan = PLANAR if head else {**PLANAR, "lm_head": (4, 64, 4)}  # a 16-bit head: the stored-layout tile
        if method in ("fp16", "int8-norm-in"):
            plan = {**NORM_IN, "attn_splits": 2}
            assert norm_in_ok(runner.model, plan)
        ref, ref_cache = steps(runner, OWN)
        got, got_cache = steps(runner, plan)
        for i, (r, g) in enumerate(zip(ref, got)):
            err = ((g - r).norm() / r.norm()).item()
            if not err < 1e-2 or r.argmax() != g.argmax():
                raise AssertionError(f"{method} step {i}: relative error {err:.3g}, argmax {g.argmax()} vs {r.argmax()}")
            print(f"ok step {method} {i} {err:.2e}", flush=True)
        err = ((got_cache.float() - ref_cache.float()).norm() / ref_cache.float().norm()).item()
        assert err < 1e-2, f"{method}: K/V cache relative error {err:.3g}"
        print(f"ok cache {method} {err:.2e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
