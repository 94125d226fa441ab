#!/usr/bin/env bash
# Quick GPU check of the serving engine's decode path (one H100 call): kernel tests, our bs1/offline numbers
# (overlapped vs synchronous loop, no HF baselines), a bs1 step profile and the batch-1 GEMM probe.
# Everything lands in $OUT.  Usage: OUT=/tmp/x bash bench/serve_gpu_quick.sh
set -u
OUT=${OUT:-/tmp/serve_quick}
mkdir -p "$OUT/prof"
step() { echo "=== $*"; local t=$SECONDS; "$@"; echo "=== rc=$? in $((SECONDS - t)) s"; }
{
step timeout 60 python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_paged_decode_gpu.py
step timeout 110 python3 bench/serve_gpu.py --skip-hf --compare-sync --out "$OUT/serve.json"
step timeout 45 python3 bench/profile_decode.py --bs1-only --out-dir "$OUT/prof"
step timeout 35 python3 bench/gemm_probe.py --out "$OUT/gemm.json"
step timeout 100 python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_engine_gpu.py
} > "$OUT/log.txt" 2>&1
tail -c 6000 "$OUT/log.txt"
