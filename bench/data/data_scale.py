"""`lmsmith data clean` on Ray with 1, 2 and 4 worker CPUs vs the local executor, on one synthetic corpus.

The corpus is `data_clean.py`'s (`bench.common.write_dirty_corpus`: recombined multilingual sentences with
planted duplicates, junk and PII).
Each configuration runs in its own process (a fresh Ray cluster each), on the same input; the outputs must
be byte-identical across executors (checked: shard sha256s). Reported per run: wall seconds, documents/s,
and the peak RSS of one worker process. On this 2-core machine 4 Ray CPUs oversubscribe the cores: that
row measures Ray's overhead, not scaling; scaling needs a machine (or cluster) with the cores.

    python -m bench.data.data_scale --size-mb 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._result import make_result, write_result
from bench.common import RESULTS, write_dirty_corpus

CLEAN_ARGS = ["--lang", "cs,pl,sl,en", "--min-words", "20", "--chunk-docs", "500", "--json"]


def run(inp: Path, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-c", "import sys; from lmsmith.cli import main; sys.exit(main())", "data", "clean",
           str(inp), "--output", str(out), *CLEAN_ARGS, *extra]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"{' '.join(extra)} failed:\n{res.stderr[-2000:]}")
    report = json.loads((out / "report.json").read_text())
    shards = [s["sha256"] for s in json.loads((out / "manifest.json").read_text())["shards"]]
    return {"wall_s": wall, "docs_per_s": report["documents_in"] / wall, "docs": report["documents_in"],
            "worker_rss_mb": report["peak_worker_rss_mb"], "shards": shards}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=20)
    ap.add_argument("--ray-cpus", default="1,2,4")
    ap.add_argument("--out", default=str(RESULTS / "data_scale.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "corpus.jsonl"
        write_dirty_corpus(inp, args.size_mb)
        runs = {"local_1": ["--workers", "1"], "local_2": ["--workers", "2"]}
        runs.update({f"ray_{n}": ["--executor", "ray", "--num-cpus", n] for n in args.ray_cpus.split(",")})
        results = {}
        for name, extra in runs.items():
            results[name] = run(inp, Path(tmp) / name, extra)
            print(f"{name:8s} {results[name]['docs_per_s']:8.0f} docs/s  {results[name]['wall_s']:6.1f} s  "
                  f"worker peak RSS {results[name]['worker_rss_mb']:.0f} MB", flush=True)
    identical = len({tuple(r["shards"]) for r in results.values()}) == 1
    metrics = {"size_mb": args.size_mb, "documents": results["local_1"]["docs"], "outputs_identical": int(identical)}
    for name, r in results.items():
        metrics[f"{name}_docs_per_s"] = round(r["docs_per_s"], 1)
        metrics[f"{name}_wall_s"] = round(r["wall_s"], 2)
        metrics[f"{name}_worker_rss_mb"] = r["worker_rss_mb"]
    metrics["load_average_1m"] = os.getloadavg()[0]
    write_result(args.out, make_result("data_scale", metrics, extra_versions=("ray",)))
    print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
