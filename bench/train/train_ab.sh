#!/usr/bin/env bash
# Issue 7 A/B on one GPU: the loop's speed options for full fine-tuning and LoRA of the Llama-3.2-1B shape,
# each entry in its own process (an OOM or compile error costs only that entry), profiles of the defaults,
# TRL's SFTTrainer for reference. Results: $OUT/ab.json (merged), $OUT/train_profile-*.json, $OUT/ab.log.
set -u
OUT=${OUT:-/tmp/out}
AB=/tmp/ab && mkdir -p "$AB" "$OUT"
B="python -m bench.train.train_throughput --preset llama-3.2-1b --steps ${STEPS:-6} --warmup 3 --isolate --per-run-timeout ${T:-150}"
run() { local name=$1; shift; echo "=== $name: $*"; $B --out "$AB" --name "$name.json" "$@"; }
merge() { python - "$AB" "$OUT/ab.json" <<'PY'
import json, sys, pathlib
res = {p.stem: json.loads(p.read_text())["metrics"] for p in sorted(pathlib.Path(sys.argv[1]).glob("*.json"))
       if not p.stem.startswith("train_profile")}
pathlib.Path(sys.argv[2]).write_text(json.dumps(res, indent=1))
for k, m in res.items():
    print(k, {x: round(v, 3) for x, v in m.items() if any(t in x for t in ("tokens_per_s", "mfu", "peak_mem", "failed", "timed_out", "oom"))})
PY
cp "$AB"/train_profile-*.json "$OUT"/ 2>/dev/null || true
}
for cfg in "${@}"; do
  case $cfg in
    full)          run full --modes full --profile ;;
    full-nomaster) LMSMITH_MASTER_WEIGHTS=0 run full-nomaster --modes full ;;
    full-cudnn)    run full-cudnn --modes full --sdpa-backend cudnn ;;
    full-nocomp)   run full-nocomp --modes full --no-compile ;;
    full-chunk1k)  run full-chunk1k --modes full --loss-chunk 1024 ;;
    full-autotune) LMSMITH_COMPILE_MODE=max-autotune-no-cudagraphs run full-autotune --modes full --per-run-timeout 400 ;;
    lora)          run lora --modes lora --profile ;;
    lora-cudnn)    run lora-cudnn --modes lora --sdpa-backend cudnn ;;
    lora-sel)      run lora-sel --modes lora --ac selective ;;
    trl)           run trl --modes lora --trl --only-trl ;;
    gputests)      timeout 240 python -m pytest -q -x tests/gpu/test_train_gpu.py -k "flex or cross_doc" 2>&1 | tail -25 ;;
  esac
  merge
done
