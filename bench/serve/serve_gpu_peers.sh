#!/usr/bin/env bash
# Issue 26 in one GPU call: our engine vs gpt-fast (bf16, int4) on the Llama-3.2-1B shape, the batch-1
# bandwidth fraction of the 1B and 8B shapes, against a copy bandwidth measured in the same run.
# Needs a gpt-fast checkout in .peers/gpt-fast (ignored; carry it) and, on the bare GPU image, .whl/ (see
# bench/tools/gpu_wheels.sh).   OUT=/tmp/x bash bench/serve/serve_gpu_peers.sh
set -u
OUT=${OUT:-bench/results}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
TAG=${TAG:-$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | grep -oiE 'h[0-9]{3}' | tr 'A-Z' 'a-z')}
TAG=${TAG:-gpu}
timeout ${PEERS_TIMEOUT:-470} python3 -m bench.serve.serve_gpu --skip-hf --int4 --gpt-fast .peers/gpt-fast \
  --bandwidth-8b "$OUT/serve_bandwidth-$TAG.json" --out "$OUT/serve_peers-$TAG.json" 2>&1 \
  | grep -v -e "Writing model shards" -e "Warning" > "$OUT/serve_peers-$TAG.log"
echo "rc=${PIPESTATUS[0]}"
tail -c 6000 "$OUT/serve_peers-$TAG.log"
