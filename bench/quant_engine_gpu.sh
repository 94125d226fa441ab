#!/usr/bin/env bash
# Quantized serving on one GPU: kernel micro-benchmark, engine batch-1 decode per method, GPU tests.
# Writes into ${OUT:-/tmp/out}. Usage (repo root, torch+triton installed): bash bench/quant_engine_gpu.sh
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"
timeout ${KERNELS_S:-60} python bench/quant_kernels.py --out "$OUT/quant_kernels.json" > "$OUT/kernels.log" 2>&1; echo "kernels rc=$?"
tail -5 "$OUT/kernels.log"
timeout ${ENGINE_S:-170} python bench/quant_gpu.py --engine --methods ${METHODS:-bf16,int8,int4,fp8,int4:int8} \
  --repeats ${REPEATS:-2} --out "$OUT/quant_engine.json" > "$OUT/engine.log" 2>&1; echo "engine rc=$?"
grep -E "^engine |tok_s|agree|Error|error" "$OUT/engine.log" | tail -30
timeout ${TESTS_S:-60} python -m pytest -q -p no:cacheprovider tests/gpu/test_quant_gpu.py > "$OUT/tests.log" 2>&1; echo "tests rc=$?"
tail -25 "$OUT/tests.log"
