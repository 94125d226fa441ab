#!/usr/bin/env bash
# Server TTFT at 32 streams with the engine loop's step log, in one GPU call (~4-5 min on an H100): the engine in its
# own process (prefill graphs on) and in a thread of the HTTP process, plus two A/B servers: the engine process with
# round 3's decode split counts (LMSMITH_DECODE_SPLITS=exact: Triton compiles met mid-serving) and the thread
# placement without this round's GC freeze and 1 ms GIL switch interval. Every server starts with an empty Triton
# cache (as a fresh deployment); c32 runs twice per server (c32, then c32_pass2: a one-time cost shows as a first pass
# slower than the second). Installs .whl/ (uvloop, httptools, ... from bench/tools/gpu_wheels.sh) when present.
# Everything lands in $OUT: serve_load JSON, steplog/steps-MODE.jsonl (+ .http.jsonl, .windows.json),
# steplog/analysis-MODE-WORKLOAD.txt (timelines of the largest bursts), server logs, log.txt.
#   OUT=/tmp/ttft bash bench/serve/serve_ttft_gpu.sh [extra serve_load_gpu arguments]
set -u
OUT=${OUT:-/tmp/ttft}
mkdir -p "$OUT/steplog"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src:$PWD
else
  export PYTHONPATH=$PWD/src:$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
{
python3 -c "import importlib.util as u; print('uvloop', bool(u.find_spec('uvloop')), 'httptools', bool(u.find_spec('httptools')))"
timeout 540 python3 -m bench.serve.serve_load_gpu --modes engine_process thread --skip c1 mix --fresh-triton-cache --passes 2 --client-workers 4 \
  --variant engine_process_exact:engine_process:LMSMITH_DECODE_SPLITS=exact \
  --variant thread_before:thread:LMSMITH_GC_FREEZE=0,LMSMITH_SWITCH_INTERVAL_MS=0 \
  --variant engine_process_si4:engine_process:LMSMITH_STREAM_INTERVAL=4 \
  --step-log "$OUT/steplog" --server-log "$OUT/server" --out "$OUT/serve_load-ttft3.json" "$@"
echo "=== rc=$?"
} > "$OUT/log.txt" 2>&1
# the digest: each server's line per workload, then the step-log summaries (the full reports are in steplog/)
grep -E "^(built|uvloop|=== rc|\[)" "$OUT/log.txt"
sed -n '/^== /,/^   #  reqs/p' "$OUT/log.txt" | grep -v "^   #  reqs" | tail -c 9000
