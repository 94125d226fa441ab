"""SASS instruction mix of the batch-1 GEMV's inner loop, compiled offline (no GPU needed: Triton's own ptxas and
nvdisasm), per weight kind and tile: how many instructions one weight costs, which bounds a CUDA-core GEMV long
before memory does when it is high (round 1's int4 tiles: ~1.1 TB/s, bench/results/quant_engine_notes.md).

    python -m bench.compress.gemv_sass --arch 90 --out bench/results/gemv_sass-sm90.json

Needs a Triton with the NVIDIA backend installed (it ships ptxas / nvdisasm); runs on a CPU.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._result import make_result, write_result

# (name, WQ, rows, warps, split, weights one thread handles per loop iteration, BLOCK_K, SUB)
VARIANTS = [
    ("int4 planar F (flat), 8 rows", 6, 8, 1, 1, 8 * 4 * 8, 16, 1),
    ("int4 planar F (flat), 4 rows", 6, 4, 1, 1, 4 * 4 * 8, 16, 1),
    ("int4 planar S (FMA chains), 8 rows", 7, 8, 1, 1, 8 * 4 * 8, 16, 1),
    ("int4 planar S (FMA chains), 4 rows", 7, 4, 1, 1, 4 * 4 * 8, 16, 1),
    ("int4 planar S (FMA chains), 16 rows", 7, 16, 1, 1, 16 * 4 * 8, 16, 1),
    ("int4 planar P (tl.sum), 8 rows", 5, 8, 1, 1, 8 * 4 * 8, 16, 1),
    ("int4 planar F, 8 rows, 4 warps", 6, 8, 4, 1, 2 * 4 * 8, 16, 1),
    ("int8 planar, 8 rows", 9, 8, 1, 1, 8 * 4 * 4, 16, 1),
    ("int8 planar, 16 rows", 9, 16, 1, 1, 16 * 4 * 4, 16, 1),
    # round 1's kernels on the stored layouts (8 x 1024 and 4 x 1024 tiles over 128 threads)
    ("round-1 int4 stored, 8x1024", 4, 8, 4, 1, 8 * 1024 // 128, 1024, 128),
    ("round-1 int8 stored, 4x1024", 8, 4, 4, 1, 4 * 1024 // 128, 1024, 1),
]
PTR_ARGS = {"x_ptr": "*bf16", "w_ptr": "*i32", "s_ptr": "*i64", "m_ptr": "*i64", "y_ptr": "*bf16", "res_ptr": "*bf16",
            "nw_ptr": "*bf16", "h_ptr": "*bf16", "res_out_ptr": "*bf16", "cnt_ptr": "*i32", "cos_ptr": "*bf16",
            "sin_ptr": "*bf16", "pos_ptr": "*i64", "slot_ptr": "*i64", "q_ptr": "*bf16", "kc_ptr": "*bf16",
            "vc_ptr": "*bf16", "ws_ptr": "*fp32", "rb_ptr": "*i32", "one_ptr": "*i32"}


def compile_variant(wq: int, rows: int, warps: int, split: int, block_k: int, sub: int, arch: int):
    import triton
    from triton.backends.compiler import GPUTarget

    from lmsmith.serve import gemv as G

    fn = G._gemv_kernel
    names = fn.arg_names
    ptrs = dict(PTR_ARGS)
    if wq in (4, 8, 9):
        ptrs["s_ptr"] = ptrs["m_ptr"] = "*fp32"
    if wq in (4, 8):
        ptrs["w_ptr"] = "*u8"
    const = dict(WQ=wq, GROUP=128, SUB=sub, KW=128, VEC=4, SPLIT=split, GLU=False, NORM=False, NORM_BLOCK=16,
                 ROPE=False, H=1, KV=1, D=2, HALF=1, HALF_P=1, HP=2, VP=1, BLOCK_N=rows, BLOCK_K=block_k,
                 PDL=False, NORM_IN=False, ADD=False)
    sig = {n: "constexpr" if n in const else ptrs.get(n, "fp32" if n == "eps" else "i32") for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in names if n in ptrs or n in ("K", "stride_w")}
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in const.items()},
                                    attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps})


def loop_mix(cubin: bytes) -> tuple[collections.Counter, int]:
    """Opcode counts of the kernel's main loop (the block between the first backward branch and its label)."""
    import triton

    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([str(tools / "nvdisasm"), "-c", f.name], capture_output=True, text=True, check=True).stdout
        res = subprocess.run([str(tools / "cuobjdump"), "-res-usage", f.name], capture_output=True, text=True).stdout
    lines = sass.splitlines()
    regs = int(m.group(1)) if (m := re.search(r"REG:(\d+)", res)) else -1
    for i, ln in enumerate(lines):  # the loop: a label whose block ends in a branch back to it
        lab = re.match(r"^(\.L_x_\d+):", ln)
        if not lab:
            continue
        for j in range(i + 1, len(lines)):
            if f"BRA `({lab.group(1)})" in lines[j] and "@" in lines[j]:
                ops = collections.Counter()
                for body in lines[i:j + 1]:
                    m = re.match(r"^\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P[0-9T]\s+)?([A-Z0-9_]+)", body)
                    if m:
                        ops[m.group(1)] += 1
                return ops, regs
    return collections.Counter(), regs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability x10 (90: H100/H200)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    try:
        import triton
    except ImportError:
        sys.exit("error: needs Triton (pip install triton; a CPU is enough)")
    metrics, details = {}, {}
    for name, wq, rows, warps, split, weights, block_k, sub in VARIANTS:
        k = compile_variant(wq, rows, warps, split, block_k, sub, args.arch)
        ops, regs = loop_mix(k.asm["cubin"])
        total = sum(ops.values())
        key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        metrics[f"{key}_instr_per_weight"] = round(total / weights, 2)
        metrics[f"{key}_regs"] = regs
        details[name] = {"loop_instructions": total, "weights_per_thread_iteration": weights, "registers": regs,
                         "per_weight": {op: round(n / weights, 3) for op, n in ops.most_common(12)}}
        print(f"{name}: {total / weights:.2f} instructions a weight, {regs} registers; "
              + ", ".join(f"{op} {n / weights:.2f}" for op, n in ops.most_common(6)), flush=True)
    out = args.out or f"/tmp/gemv_sass-sm{args.arch}.json"
    write_result(out, make_result("gemv_sass", metrics, f"offline compile for sm_{args.arch} (no GPU)",
                                  extra_versions=("triton",), arch=args.arch, details=details), echo=False)
    print(f"wrote {out} (triton {triton.__version__})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
