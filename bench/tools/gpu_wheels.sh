#!/usr/bin/env bash
# Fetch the pure-Python (and cp312 manylinux) wheels that the GPU image lacks into .whl/ (git-ignored),
# so `bench/tools/gpu_suite.sh` and `make test-gpu` can install them there with no network (carry: [".whl"]).
set -eu
mkdir -p .whl
pkgs="gguf pydantic pydantic-core annotated-types typing-inspection fastapi starlette uvicorn openai distro jiter
sniffio jsonschema jsonschema-specifications referencing rpds-py llguidance py3langid zstandard trl datasets dill
multiprocess annotated-doc opentelemetry-api importlib-metadata zipp httpx2 httpcore2 truststore h11 uvloop httptools"
for p in $pkgs; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$p"
done
du -sh .whl
