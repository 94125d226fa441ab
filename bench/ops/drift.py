"""Drift detection power and false-alarm rate over seeded splits of the shipped traffic, and the cost of the
request log at 100k requests (write throughput, time on the request path, time to a drift report).

Splits (each seed draws fresh samples of --n texts per side from src/lmsmith/assets/monitor/traffic.jsonl):
- null: both sides from the same mix (en/cs/pl x shop/health/code): any drift verdict is a false alarm;
- language: reference en+cs, current en+cs with a share (--shifts) of it replaced by Polish;
- domain: reference shop+code, current shop+code with a share of it replaced by health questions.

    python -m bench.ops.drift                   # 100 seeds, default embedder, 100k-request log timing
    python -m bench.ops.drift --seeds 3 --log-requests 2000 --embedder none --out /tmp/drift.json   # smoke
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._result import make_result, write_result
from bench.common import RESULTS, TRAFFIC
from lmsmith.ops.monitor.drift import DriftConfig, drift_report
from lmsmith.ops.monitor.embed import Embedder
from lmsmith.ops.monitor.logs import load_texts
from lmsmith.serve.request_log import RequestLog, RequestLogConfig

SIGNALS = ("unseen_tokens", "vocabulary", "length", "language", "domain_classifier", "mmd")


def scenario(rows: list[dict], kind: str, n: int, shift: float, rng: random.Random) -> tuple[list[str], list[str]]:
    def pool(**where):
        return [r["text"] for r in rows if all(r[k] in v for k, v in where.items())]

    if kind == "null":
        texts = rng.sample([r["text"] for r in rows], 2 * n)
        return texts[:n], texts[n:]
    if kind == "language":
        base, new = pool(lang={"en", "cs"}), pool(lang={"pl"})
    else:
        base, new = pool(domain={"shop", "code"}), pool(domain={"health"})
    k = int(round(shift * n))
    both = rng.sample(base, 2 * n - k)
    return both[:n], both[n:] + rng.sample(new, k)


def log_timing(texts: list[str], n: int, embed) -> dict[str, float]:
    """Write n requests through the request log, then time a drift report over them (two time windows)."""
    with tempfile.TemporaryDirectory() as d:
        rl = RequestLog(RequestLogConfig(d, queue_size=n + 10)).start()
        t0 = time.time()
        lat = []
        t = time.perf_counter()
        for i in range(n):
            row = {"ts": t0 + i * 1e-3, "endpoint": "chat", "model": "m", "version": "1", "status": 200,
                   "prompt": texts[i % len(texts)], "completion": "ok", "prompt_tokens": 20, "completion_tokens": 2,
                   "latency_s": 0.1}
            a = time.perf_counter()
            rl.log(row)
            lat.append(time.perf_counter() - a)
        enqueue_s = time.perf_counter() - t
        rl.flush(timeout=3600)
        write_s = time.perf_counter() - t
        rl.close()
        mid = t0 + n / 2 * 1e-3
        if hasattr(embed, "cache"):
            embed.cache.clear()  # time the report with cold embeddings
        t = time.perf_counter()
        ref = load_texts(d, since=None, until=mid)
        cur = load_texts(d, since=mid)
        read_s = time.perf_counter() - t
        rep = drift_report(ref, cur, DriftConfig(), embed=embed)
        report_s = time.perf_counter() - t
        lat_us = np.array(lat) * 1e6
        return {"log_requests": n, "log_write_rows_per_s": round(n / write_s), "log_enqueue_p50_us": round(float(np.percentile(lat_us, 50)), 2),
                "log_enqueue_p99_us": round(float(np.percentile(lat_us, 99)), 2), "log_enqueue_total_s": round(enqueue_s, 3),
                "log_dropped": rl.dropped, "log_read_s": round(read_s, 2), "report_s": round(report_s, 2),
                "report_drift_on_same_traffic": int(rep["drift"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--n", type=int, default=150, help="texts per side")
    ap.add_argument("--shifts", type=float, nargs="+", default=[0.1, 0.3],
                    help="shares of the current side that are shifted")
    ap.add_argument("--embedder", default="all-MiniLM-L6-v2", help="or none")
    ap.add_argument("--log-requests", type=int, default=100_000)
    ap.add_argument("--embed-cache", help="an .npz to keep the pool's embeddings in between runs")
    ap.add_argument("--out", default=str(RESULTS / "drift.json"))
    args = ap.parse_args()

    rows = [json.loads(line) for line in TRAFFIC.read_text(encoding="utf-8").splitlines()]
    embed = None if args.embedder == "none" else Embedder(args.embedder)
    t = time.perf_counter()
    texts = [r["text"] for r in rows]
    if embed is not None and args.embed_cache and Path(args.embed_cache).exists():
        embed.cache.update(zip(texts, np.load(args.embed_cache)["emb"]))
    if embed is not None:
        emb = embed(texts)
        if args.embed_cache:
            np.savez(args.embed_cache, emb=emb)
    embed_s = time.perf_counter() - t
    metrics: dict[str, float] = {"texts": len(rows), "embed_all_s": round(embed_s, 1)}
    cases = [("null", 0.0)] + [(k, s) for s in args.shifts for k in ("language", "domain")]
    for kind, shift in cases:
        hits, by_signal, secs = 0, dict.fromkeys(SIGNALS, 0), []
        label = kind if kind == "null" else f"{kind}_{int(round(shift * 100))}pct"
        for seed in range(args.seeds):
            ref, cur = scenario(rows, kind, args.n, shift, random.Random(f"{label}-{seed}"))
            a = time.perf_counter()
            rep = drift_report(ref, cur, DriftConfig(seed=seed), embed=embed)
            secs.append(time.perf_counter() - a)
            hits += rep["drift"]
            for s in rep["drifted_signals"]:
                by_signal[s] += 1
        rate = hits / args.seeds
        metrics["false_alarm_rate" if kind == "null" else f"power_{label}"] = round(rate, 3)
        for s, c in by_signal.items():
            if s in rep["signals"]:
                metrics[f"{label}_{s}_rate"] = round(c / args.seeds, 3)
        metrics[f"{label}_report_s_mean"] = round(float(np.mean(secs)), 3)
        print(f"{label}: drift in {hits}/{args.seeds} splits ({np.mean(secs):.2f} s per report)", flush=True)
    metrics.update(log_timing([r["text"] for r in rows], args.log_requests, embed))
    write_result(args.out, make_result("drift", metrics, device="cpu", workload={
        "traffic": "src/lmsmith/assets/monitor/traffic.jsonl", "seeds": args.seeds,
                           "texts_per_side": args.n, "shifts": args.shifts, "embedder": args.embedder,
                           "alpha": DriftConfig().alpha, "permutations": DriftConfig().permutations},
                 notes="Same-mix splits for the false-alarm rate; 10% or 30% of the current side in another language "
                       "(Polish into en+cs) or another domain (health into shop+code) for the power. The report "
                       "time covers reading both windows from the SQLite log and all six signals, embeddings "
                       "computed cold (max 1000 texts per side embedded, 20k per side for the text signals)."))


if __name__ == "__main__":
    main()
