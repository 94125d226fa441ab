#!/usr/bin/env bash
# Quantized serving on one GPU: engine batch-1 decode per method (the committed quant_engine JSON), the
# kernel micro-benchmark, the GPU tests. Writes into ${OUT:-/tmp/out}. Usage (repo root): bash bench/compress/quant_engine_gpu.sh
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"
timeout ${ENGINE_S:-150} python -m bench.compress.quant_gpu --engine --methods ${METHODS:-bf16,int8,int4,fp8,int4:int8} \
  --repeats ${REPEATS:-3} ${ENGINE_ARGS:-} --out "$OUT/quant_engine.json" > "$OUT/engine.log" 2>&1; echo "engine rc=$?"
grep -E "^engine |decode|agree|ttft|Error|error|failed" "$OUT/engine.log" | tail -30
timeout ${KERNELS_S:-60} python -m bench.compress.quant_kernels --ms ${KERNEL_MS:-1,16,64,256} --out "$OUT/quant_kernels.json" > "$OUT/kernels.log" 2>&1; echo "kernels rc=$?"
grep -v "^ \|Warning" "$OUT/kernels.log" | head -30
LMSMITH_TRITON_AUTOTUNE=0 timeout ${TESTS_S:-90} python -m pytest -q -p no:cacheprovider tests/gpu/test_quant_gpu.py > "$OUT/tests.log" 2>&1; echo "tests rc=$?"
grep -E "passed|failed|^E |Error" "$OUT/tests.log" | head -20
