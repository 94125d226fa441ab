#!/usr/bin/env bash
# GPU check of the serving engine's decode path in one H100 call: our bs1/offline numbers (overlapped and
# synchronous loop), a bs1 step profile, the engine/kernel GPU tests and the batch-1 GEMM probe.
# Extra arguments go to bench/serve/serve_gpu.py (default --skip-hf). Everything lands in $OUT.
#   OUT=/tmp/x bash bench/serve/serve_gpu_quick.sh [--skip-hf]
set -u
OUT=${OUT:-/tmp/serve_quick}
mkdir -p "$OUT/prof"
ARGS=("$@"); [ ${#ARGS[@]} -eq 0 ] && ARGS=(--skip-hf)
step() { echo "=== $*"; local t=$SECONDS; "$@"; echo "=== rc=$? in $((SECONDS - t)) s"; }
{
step timeout 100 python3 -m bench.serve.serve_gpu --compare-sync "${ARGS[@]}" --out "$OUT/serve_throughput-h100.json"
step timeout 40 python3 -m bench.serve.profile_decode --bs1-only --out-dir "$OUT/prof"
step timeout 80 python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_paged_decode_gpu.py tests/gpu/test_engine_gpu.py
step timeout 12 python3 -m bench.compress.gemm_probe --out "$OUT/gemm.json"
} > "$OUT/log.txt" 2>&1
grep -v "Writing model shards" "$OUT/log.txt" | tail -c 9000
