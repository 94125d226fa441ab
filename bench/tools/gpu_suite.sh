#!/usr/bin/env bash
# The GPU measurements, in one go (one H100 or H200). Results land in $OUT (default bench/results).
# Packages the GPU image lacks (pydantic, fastapi, llguidance, trl, ...) are installed from wheels in .whl/
# when that folder exists (see README, "Performance").
set -u
OUT=${OUT:-bench/results}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
step() { echo "=== $*"; local t=$SECONDS; "$@"; echo "=== rc=$? in $((SECONDS - t)) s"; }
# result files are named by the GPU they ran on (h100, h200, ...)
TAG=${TAG:-$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | grep -oiE 'h[0-9]{3}|a100|l40s' | tr 'A-Z' 'a-z')}
TAG=${TAG:-gpu}
case "${1:-all}" in
  tests)
    step timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu --ignore=tests/gpu/test_fsdp_gpu.py \
      --junitxml="$OUT/gpu_tests.xml" ;;
  train)
    # one run, side by side: HF loop (full), ours full + LoRA (the loop's CUDA defaults), TRL SFTTrainer LoRA
    step timeout 420 python3 -m bench.train.train_throughput --preset llama-3.2-1b --modes full,lora --baseline \
      --baseline-modes full --trl --isolate --profile --steps 8 --warmup 3 --per-run-timeout 150 \
      --name train_throughput-$TAG.json --out "$OUT" ;;
  quant)
    step timeout 150 python3 -m bench.compress.quant_gpu --shape llama-3.2-1b --repeats 2 --out "$OUT/quant_gpu-$TAG.json" ;;
  plan)
    step timeout 240 python3 -m bench.train.plan_check --out "$OUT" ;;
  serve)  # the serve_throughput figures: engine vs HF, quantized engine decode, the server under load (~5 min)
    step timeout 240 python3 -m bench.serve.serve_gpu --out "$OUT/serve_throughput-$TAG.json"
    step timeout ${QUANT_TIMEOUT:-170} python3 -m bench.compress.quant_gpu --engine --methods ${QUANT_METHODS:-bf16,int8,int4,fp8,int4:int8} --repeats 3 \
      --skip-agreement --out "$OUT/quant_engine-$TAG.json"
    step timeout 120 python3 -m bench.serve.serve_load_gpu --out "$OUT/serve_load-$TAG.json"
    step python3 -m bench.serve.merge_serving --throughput "$OUT/serve_throughput-$TAG.json" \
      --quant "$OUT/quant_engine-$TAG.json" --load "$OUT/serve_load-$TAG.json" ;;
  scaling)  # on nvidia-h200-x2
    step timeout 240 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_fsdp_gpu.py
    step timeout 300 python3 -m bench.train.train_scaling --gpus 2 --preset llama-3.2-1b --batch-size 4 --seq-len 2048 \
      --steps 10 --fused-loss --out "$OUT" ;;
  tp)  # on nvidia-h200-x2: tensor-parallel parity (fp32 + bf16) and serving numbers (~5 min)
    step timeout 170 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_tp_gpu.py
    step timeout 420 python3 -m bench.serve.serve_tp --out "$OUT/serve_tp-h200x2.json" ;;
  *) for s in tests train quant plan; do "$0" "$s"; done ;;
esac
