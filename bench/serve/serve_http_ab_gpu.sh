#!/usr/bin/env bash
# TTFT at 32 streams, this checkout's server against an older one's, alternated on one GPU host (~5 min on an H100):
# the host moves TTFT p50 by ~2x, so an HTTP-process change is only measurable side by side. BASE is a commit whose
# src/ is exported to .base/src (ignored; carry it with the call), e.g. fca9f15 (before the SSE/TextChunks/ITL work).
#   git archive BASE src | tar -x -C .base        # here, once
#   OUT=/tmp/ab bash bench/serve/serve_http_ab_gpu.sh     # on the GPU machine, carrying .base and .whl
set -u
OUT=${OUT:-/tmp/ab}
mkdir -p "$OUT"
[ -d .base/src ] || { echo "no .base/src: export the baseline's src there first (see the header)"; exit 2; }
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD/src:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
BASE="PYTHONPATH=$PWD/.base/src:/tmp/site:$PWD"
# main, base, main, base: LMSMITH_AB only names the second pair
timeout 560 python3 -m bench.serve.serve_load_gpu --modes engine_process --skip c1 mix --passes 2 --client-workers 4 \
  --variant "base:engine_process:$BASE" --variant "main2:engine_process:LMSMITH_AB=2" \
  --variant "base2:engine_process:$BASE,LMSMITH_AB=2" \
  --server-log "$OUT/server" --out "$OUT/serve_load-http-ab.json" > "$OUT/log.txt" 2>&1
echo "rc=$?"
grep -E "^(built|\[)" "$OUT/log.txt" | head -40
