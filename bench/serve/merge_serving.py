"""Fold one GPU serving run into the issue's `serve_throughput` result.

`bench/tools/gpu_suite.sh serve` runs three benchmarks in one device call: serve_gpu.py (engine vs HF: batch-1 decode,
256-request offline), quant_gpu.py --engine (quantized batch-1 decode) and serve_load_gpu.py (the server under
load). This adds the quantized and under-load figures to serve_gpu.py's file, prefixed as the issue names them
(`int4_decode_bs1_tok_s`, `fp8_decode_bs1_tok_s`, `ttft_p50_ms_c32`, ...), and records where each came from.

    python -m bench.serve.merge_serving --throughput R/serve_throughput-h200.json --quant R/quant_engine-h200.json \
        --load R/serve_load-h200.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench._result import write_result

# quant_engine metric -> serve_throughput metric
QUANT_KEYS = {"bf16_decode_bs1_tok_s": "quant_run_bf16_decode_bs1_tok_s", "int8_decode_bs1_tok_s": None,
              "int4_decode_bs1_tok_s": None, "fp8_decode_bs1_tok_s": None,
              "int4_head_int8_decode_bs1_tok_s": "int4_lmhead_int8_decode_bs1_tok_s",
              "int4_speedup_vs_bf16": None, "int4_head_int8_speedup_vs_bf16": "int4_lmhead_int8_speedup_vs_bf16",
              "int8_speedup_vs_bf16": None, "fp8_speedup_vs_bf16": None}
LOAD_KEYS = ("ttft_p50_ms_c32", "tpot_p50_ms_c32", "tpot_p99_ms_c32", "ttft_p99_ms_c32", "output_tok_per_s_c32",
             "ttft_p50_ms_mix_c32", "tpot_p50_ms_mix_c32", "tpot_p99_ms_mix_c32", "ttft_admit_mean_ms_c32",
             "ttft_prefill_mean_ms_c32")


def merge(throughput: dict, quant: dict | None, load: dict | None) -> dict:
    out = dict(throughput)
    metrics = dict(out["metrics"])
    # a file merged before keeps its sources: merging again replaces parts, never repeats a command
    sources = dict(throughput.get("sources") or {"throughput": throughput.get("command")})
    for name, part, keys in (("quant", quant, QUANT_KEYS), ("load", load, dict.fromkeys(LOAD_KEYS))):
        if part is None:
            continue
        if part.get("device") != throughput.get("device"):
            raise SystemExit(f"error: {name} ran on {part.get('device')!r}, the throughput run on {throughput.get('device')!r}: "
                             "merge results of one device only")
        for key, new in keys.items():
            if key in part["metrics"]:
                metrics[new or key] = part["metrics"][key]
        sources[name] = part.get("command")
    out["metrics"] = metrics
    out["command"] = "; ".join(c for c in sources.values() if c)
    out["sources"] = sources
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--throughput", required=True, type=Path, help="serve_gpu.py's result (updated in place)")
    ap.add_argument("--quant", type=Path, help="quant_gpu.py --engine's result")
    ap.add_argument("--load", type=Path, help="serve_load_gpu.py's result")
    args = ap.parse_args()
    def read(path: Path | None, required: bool = False) -> dict | None:
        if path is None or not path.exists():
            if required:
                raise SystemExit(f"error: {path} does not exist: pass serve_gpu.py's result as --throughput")
            if path is not None:
                print(f"note: {path} does not exist; merging without it", file=sys.stderr)
            return None
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise SystemExit(f"error: {path} is not JSON ({e}): re-run the benchmark that writes it") from None
        if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
            raise SystemExit(f"error: {path} has no \"metrics\" object: is it a bench result file?")
        return data

    merged = merge(read(args.throughput, required=True), read(args.quant), read(args.load))
    write_result(args.throughput, merged)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
