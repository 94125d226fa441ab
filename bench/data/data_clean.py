"""Throughput of `lmsmith data clean`: documents/s and peak RSS on a synthetic multilingual corpus.

The corpus (default 100 MB of JSONL) is generated in a temporary directory from the real Czech, Polish,
Slovene, English and Slovak sample paragraphs of the test suite: documents of recombined sentences,
with ~5% exact duplicates, ~5% near duplicates, ~3% junk and ~3% documents with PII. The clean command
runs as a subprocess; its RSS (with its worker processes) is sampled from /proc every 0.2 s. CPU time of
the run is reported too: on a shared machine wall-clock docs/s depends on the other load, docs per
CPU-second does not (much).

    python -m bench.data.data_clean --size-mb 100 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._result import make_result, write_result
from bench.common import RESULTS, write_dirty_corpus


def tree_rss(pid: int) -> int:
    """Resident set size of a process and all its descendants, in bytes."""
    total, stack, seen = 0, [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with open(f"/proc/{p}/task/{p}/children") as f:
                stack += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-docs", type=int, default=2000)
    ap.add_argument("--output", default=str(RESULTS / "data_clean.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lmsmith-bench-clean-") as tmp:
        src = Path(tmp) / "corpus.jsonl"
        t = time.time()
        n = write_dirty_corpus(src, args.size_mb)
        print(f"generated {n:,} documents, {src.stat().st_size / 1e6:.1f} MB in {time.time() - t:.1f} s", file=sys.stderr)
        cmd = [sys.executable, "-m", "lmsmith.cli", "data", "clean", str(src), "--output", str(Path(tmp) / "out"),
               "--lang", "cs,pl,sl,en", "--workers", str(args.workers), "--chunk-docs", str(args.chunk_docs), "--json"]
        t = time.time()
        load_before = os.getloadavg()[0]
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.2)
        elapsed = time.time() - t
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the clean process and its waited-for workers
        cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        load_after = os.getloadavg()[0]
        stdout = proc.stdout.read() if proc.stdout else ""
        if proc.returncode != 0:
            print(stdout, file=sys.stderr)
            raise SystemExit(f"clean failed with exit code {proc.returncode}")
        summary = json.loads(stdout)
        out_bytes = sum(p.stat().st_size for p in (Path(tmp) / "out").glob("shard-*"))
    metrics = {
            "input_mb": round(src_size_mb := args.size_mb, 1), "documents_in": summary["documents_in"],
            "documents_out": summary["documents_out"], "seconds": round(elapsed, 1),
            "docs_per_second": round(summary["documents_in"] / elapsed, 1),
            "mb_per_second": round(src_size_mb / elapsed, 2), "peak_rss_mb": round(peak / 2**20, 1),
            "cpu_seconds": round(cpu_s, 1), "docs_per_cpu_second": round(summary["documents_in"] / max(cpu_s, 1e-9), 1),
            "docs_per_second_if_2_free_cores": round(2 * summary["documents_in"] / max(cpu_s, 1e-9), 1),
            "load_average_start": round(load_before, 1), "load_average_end": round(load_after, 1),
            "workers": args.workers, "output_mb_gz": round(out_bytes / 1e6, 1),
            "removed_exact": summary["steps"].get("exact_dedup", {}).get("docs_in", 0) - summary["steps"].get("exact_dedup", {}).get("docs_out", 0),
            "removed_near": summary["steps"].get("near_dedup", {}).get("docs_in", 0) - summary["steps"].get("near_dedup", {}).get("docs_out", 0),
            "removed_quality": summary["steps"].get("quality", {}).get("docs_in", 0) - summary["steps"].get("quality", {}).get("docs_out", 0),
            "removed_langid": summary["steps"].get("langid", {}).get("docs_in", 0) - summary["steps"].get("langid", {}).get("docs_out", 0),
            "pii_replaced": sum(summary["pii"].values()),
    }
    write_result(args.output, make_result("data_clean", metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
