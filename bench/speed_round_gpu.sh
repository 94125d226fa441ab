#!/usr/bin/env bash
# Issue 26's open checks on one warm GPU, in stages, so a device session spends its minutes on measuring:
#   OUT=/tmp/r bash bench/speed_round_gpu.sh tests profile bs1   # carry .whl (and .base for http-ab)
# tests    the GPU tests of this round's defaults (~4 min: prefill graphs, decode advance, master weights)
# bs1      serve_gpu batch-1 bf16 + int4 (1B bandwidth fraction, int4 ratio, TTFT; ~2.5 min)
# profile  profile_decode --bs1-only --prefill, bf16 and int4: the batch-1 step's and prefill's kernels (~2 min)
# train    train_ab full: the training defaults and their profile (~1.5 min)
# autotune train_ab full-autotune (LMSMITH_COMPILE_MODE=max-autotune-no-cudagraphs; up to ~7 min)
# http-ab  serve_http_ab_gpu.sh: TTFT at 32 streams against an older server (~4 min; needs .base/src)
set -u
export OUT=${OUT:-/tmp/round}
mkdir -p "$OUT"
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null; fi
export PYTHONPATH=/tmp/site:$PWD/src:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader
step() { echo "=== $*"; local t=$SECONDS; "$@"; echo "=== rc=$? in $((SECONDS - t)) s"; }
for stage in "$@"; do
  case $stage in
    tests) step timeout 280 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_prefill_graphs_gpu.py \
             tests/gpu/test_train_gpu.py tests/gpu/test_engine_gpu.py tests/gpu/test_bs1_quant_gpu.py -k "capture_and_match or advance or bs1_gemv or master or never_waits" 2>&1 | tail -8 ;;
    bs1) step timeout 330 python3 -m bench.serve.serve_gpu --skip-hf --skip-offline --int4 --out "$OUT/serve_bs1.json" 2>&1 | grep -v Warn | tail -12 ;;
    profile) for q in "" --int4; do step timeout 150 python3 -m bench.serve.profile_decode --bs1-only --prefill $q \
               --out-dir "$OUT" 2>&1 | grep -E "prefill of|wall" | cut -c1-300; done ;;
    train) step bash bench/train/train_ab.sh full 2>&1 | grep -v Warn | tail -6 ;;
    autotune) step bash bench/train/train_ab.sh full-autotune 2>&1 | grep -v Warn | tail -6 ;;
    http-ab) step bash bench/serve/serve_http_ab_gpu.sh ;;
    *) echo "unknown stage $stage (tests, bs1, profile, train, autotune, http-ab)"; exit 2 ;;
  esac
done
