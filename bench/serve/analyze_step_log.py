"""Where a burst's time to first token goes, from an engine-loop step log (LMSMITH_STEP_LOG, serve.step_log).

Per log: the steps by kind (prefill-only, mixed prefill+decode, decode, overlapped decode) with their durations, the
loop's own overheads (applying commands, acks, handing outputs on), then the bursts: requests whose submissions
come less than `--gap-ms` apart form one burst. For each, the engine-side TTFT of its requests (handler submitted the
add -> the loop ended the step that gave its first token) split into `pickup` (submitted -> the loop applied the
add: the loop was busy stepping, or the pipe/GIL held it back) and `in engine` (applied -> first token: steps it
waited behind plus its own prefill step), and for the first `--bursts` bursts a timeline of the loop's iterations.

    python -m bench.serve.analyze_step_log LOG.jsonl [LOG2.jsonl ...] [--window c32] [--bursts 3] [--json OUT]

`--window NAME` keeps the iterations inside a window the benchmark marked in LOG.windows.json (`mark_window`).
LOG.http.jsonl, when present (the HTTP process's event-loop lag and GC pauses, serve.step_log.HttpMonitor), is
summarized alongside and shown under each burst's timeline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def mark_window(log: str | Path, name: str, start: float, end: float) -> None:
    """Record that workload `name` ran from `start` to `end` (wall clock) next to a step log."""
    side = Path(f"{log}.windows.json")
    marks = json.loads(side.read_text()) if side.exists() else {}
    marks[name] = [start, end]
    side.parent.mkdir(parents=True, exist_ok=True)
    side.write_text(json.dumps(marks))


def load(path: Path, window: str | None, events: bool = False) -> list[dict]:
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    recs = [r for r in recs if events or "event" not in r]
    if window:
        side = Path(f"{path}.windows.json")
        marks = json.loads(side.read_text()) if side.exists() else {}
        if window not in marks:
            raise SystemExit(f"{path}: no window {window!r} (marked: {', '.join(marks) or 'none'})")
        a, b = marks[window]
        recs = [r for r in recs if a <= r["t"] <= b]
    return recs


def kind(r: dict) -> str:
    pf, dec = r.get("pf_tok", 0), r.get("dec", 0)
    if "pf_tok" not in r:
        return "other"  # resolved an overlapped step only, or an engine without step info
    if pf and dec:
        return "mixed"
    if pf:
        return "prefill"
    if dec:
        return "decode-ovl" if r.get("ovl") else "decode"
    return "other"


def end_of(r: dict) -> float:
    """Wall time the iteration's step ended."""
    return r["t"] + (r.get("apply_ms", 0) + r.get("ack_ms", 0) + r.get("step_ms", 0)) / 1000


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


def summarize(xs: list[float]) -> dict:
    return {"n": len(xs), "mean": round(statistics.fmean(xs), 2) if xs else None, "p50": round(pct(xs, 50), 2),
            "p90": round(pct(xs, 90), 2), "p99": round(pct(xs, 99), 2), "max": round(max(xs), 2) if xs else None}


def requests(recs: list[dict]) -> dict[str, dict]:
    """Request id -> submitted / applied / first token (wall times) and the iteration indexes involved."""
    reqs: dict[str, dict] = {}
    for i, r in enumerate(recs):
        for rid, lag in zip(r.get("add_ids", ()), r.get("lag_ms", ())):
            applied = r["t"] + r.get("apply_ms", 0) / 1000
            reqs[rid] = {"submit": applied - lag / 1000, "applied": applied, "i_add": i}
        for rid in r.get("first_ids", ()):
            q = reqs.get(rid)
            if q is not None and "first" not in q:
                q["first"], q["i_first"] = end_of(r), i
                q["own_start"] = r["t"] + (r.get("apply_ms", 0) + r.get("ack_ms", 0)) / 1000
    return {k: v for k, v in reqs.items() if "first" in v}


def bursts(reqs: dict[str, dict], gap_ms: float) -> list[list[str]]:
    order = sorted(reqs, key=lambda k: reqs[k]["submit"])
    out: list[list[str]] = []
    last = None
    for rid in order:
        t = reqs[rid]["submit"]
        if last is None or (t - last) * 1000 > gap_ms:
            out.append([])
        out[-1].append(rid)
        last = t
    return out


def fmt_iter(r: dict, t0: float) -> str:
    k = kind(r)
    what = {"prefill": f"prefill {r.get('pf_tok')} tok / {r.get('pf_seqs')} seqs",
            "mixed": f"mixed {r.get('pf_tok')} tok / {r.get('pf_seqs')} seqs + {r.get('dec')} dec",
            "decode": f"decode {r.get('dec')} (sync)", "decode-ovl": f"decode {r.get('dec')} (overlapped)",
            "other": "resolve/none"}[k]
    if r.get("graph"):
        what += " [graph]"
    adds = f"+{r['adds']} adds (lag {min(r['lag_ms']):.1f}-{max(r['lag_ms']):.1f})" if r.get("adds") else ""
    idle = f"idle {r['idle_ms']:.1f} " if r.get("idle_ms", 0) >= 0.05 else ""
    extra = "".join(f" {name} {r[key]:.2f}" for name, key in (("apply", "apply_ms"), ("ack", "ack_ms"), ("send", "send_ms"))
                    if r.get(key, 0) >= 0.2)
    if r.get("gc_ms", 0) >= 0.5:
        extra += f" GC {r['gc_ms']:.1f} (gen {r['gc_gen']})"
    return (f"  {1000 * (r['t'] - t0):8.1f} ms  {idle}{adds:28s} {what:42s} {r.get('step_ms', 0):6.2f} ms"
            f"  first {r.get('first', 0):2d}  w {r.get('w', '-')} r {r.get('r', '-')}{extra}")


def analyze(path: Path, window: str | None, gap_ms: float, n_bursts: int, out=sys.stdout) -> dict:
    recs = load(path, window)
    p = lambda *a: print(*a, file=out)  # noqa: E731
    loop = recs[0].get("loop", "?") if recs else "?"
    p(f"== {path} ({loop} loop, {len(recs)} iterations{', window ' + window if window else ''})")
    if not recs:
        return {}
    span = end_of(recs[-1]) - recs[0]["t"]
    by_kind: dict[str, list[float]] = {}
    for r in recs:
        by_kind.setdefault(kind(r), []).append(r.get("step_ms", 0.0))
    res: dict = {"loop": loop, "iterations": len(recs), "span_s": round(span, 3), "steps": {}}
    p(f"span {span:.2f} s; step time {sum(r.get('step_ms', 0) for r in recs) / 1000 / span:.0%} of it, "
      f"idle {sum(r.get('idle_ms', 0) for r in recs) / 1000 / span:.0%}")
    p("steps by kind (ms):")
    for k, xs in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
        s = summarize(xs)
        res["steps"][k] = s
        p(f"  {k:11s} n {s['n']:6d}  mean {s['mean']:6.2f}  p50 {s['p50']:6.2f}  p90 {s['p90']:6.2f}  "
          f"max {s['max']:7.2f}")
    for key in ("apply_ms", "ack_ms", "send_ms"):
        xs = [r[key] for r in recs if key in r]
        if xs:
            s = summarize(xs)
            res[key] = s
            p(f"  loop {key[:-3]:6s} mean {s['mean']:.3f}  p99 {s['p99']:.3f}  max {s['max']:.3f} ms "
              f"({sum(xs) / 1000 / span:.1%} of the span)")
    gcs = [(r["gc_gen"], r["gc_ms"]) for r in recs if "gc_ms" in r]
    if gcs:
        res["gc_ms_total"] = round(sum(x for _, x in gcs), 2)
        res["gc_ms_max"] = max(x for _, x in gcs)
        p(f"  garbage collection in the loop's process: {len(gcs)} iterations with a collection, "
          f"{res['gc_ms_total']:.1f} ms in all, max {res['gc_ms_max']:.1f} ms; gen2: "
          f"{sum(1 for g, _ in gcs if g == 2)} ({sum(x for g, x in gcs if g == 2):.1f} ms)")
    http = Path(f"{path}.http.jsonl")
    hev = load(http, None, events=True) if http.exists() else []
    if hev and window:
        a, b = recs[0]["t"], end_of(recs[-1])
        hev = [e for e in hev if a <= e["t"] <= b]
    lags = [e["ms"] for e in hev if e.get("event") == "lag"]
    hgc = [e["ms"] for e in hev if e.get("event") == "gc"]
    if http.exists():
        res["http_lag"] = summarize(lags) | {"total_ms": round(sum(lags), 1)}
        res["http_gc_ms_total"] = round(sum(hgc), 1)
        p(f"  HTTP process: event loop late > 2 ms {len(lags)} times ({sum(lags):.0f} ms in all, max "
          f"{max(lags, default=0):.1f} ms); GC pauses > 1 ms: {len(hgc)} ({sum(hgc):.0f} ms, max {max(hgc, default=0):.1f})")
    t_first = recs[0]["t"]
    total = lambda r: sum(r.get(k, 0) for k in ("apply_ms", "ack_ms", "step_ms", "send_ms", "gc_ms"))  # noqa: E731
    slow = sorted(recs, key=total, reverse=True)[:8]
    res["slowest_iterations_ms"] = [round(total(r), 2) for r in slow]
    p("slowest loop iterations (apply + ack + step + send + GC), times from the window's start:")
    for r in slow:
        p(fmt_iter(r, t_first))
    pre = [r["preempt"] for r in recs if "preempt" in r]
    if pre:
        res["preemptions"] = pre[-1] - pre[0]
        p(f"  preemptions in the span: {res['preemptions']}")
    reqs = requests(recs)
    if not reqs:
        p("no request with both its add and its first token in the log")
        return res
    ttft = [1000 * (q["first"] - q["submit"]) for q in reqs.values()]
    pickup = [1000 * (q["applied"] - q["submit"]) for q in reqs.values()]
    inside = [1000 * (q["first"] - q["applied"]) for q in reqs.values()]
    steps_to_first = [q["i_first"] - q["i_add"] + 1 for q in reqs.values()]
    behind = [1000 * max(0.0, q["own_start"] - q["applied"]) for q in reqs.values()]
    own = [1000 * (q["first"] - max(q["own_start"], q["applied"])) for q in reqs.values()]
    res |= {"engine_ttft_ms": summarize(ttft), "pickup_ms": summarize(pickup), "in_engine_ms": summarize(inside),
            "behind_steps_ms": summarize(behind), "own_step_ms": summarize(own),
            "steps_to_first": summarize([float(x) for x in steps_to_first])}
    p(f"engine-side TTFT (submitted -> first token), {len(ttft)} requests: p50 {pct(ttft, 50):.1f}  p90 "
      f"{pct(ttft, 90):.1f}  p99 {pct(ttft, 99):.1f}  max {max(ttft):.1f} ms")
    p(f"  pickup (submitted -> applied by the loop): mean {statistics.fmean(pickup):.1f}  p99 {pct(pickup, 99):.1f} ms")
    p(f"  in engine (applied -> first token):        mean {statistics.fmean(inside):.1f}  p99 {pct(inside, 99):.1f} ms;"
      f" loop iterations from add to first token: mean {statistics.fmean(steps_to_first):.1f}, max {max(steps_to_first)}")
    p(f"    of which behind earlier steps mean {statistics.fmean(behind):.1f} (p99 {pct(behind, 99):.1f}), in the step that "
      f"gave the first token mean {statistics.fmean(own):.1f} (p99 {pct(own, 99):.1f}) ms")
    groups = bursts(reqs, gap_ms)
    res["bursts"] = []
    for b in groups:
        sub = [reqs[k]["submit"] for k in b]
        first = [reqs[k]["first"] for k in b]
        i0, i1 = min(reqs[k]["i_add"] for k in b), max(reqs[k]["i_first"] for k in b)
        kinds = [kind(recs[i]) for i in range(i0, i1 + 1)]
        res["bursts"].append({"requests": len(b), "arrival_span_ms": round(1000 * (max(sub) - min(sub)), 2),
                              "ttft_p50_ms": round(1000 * statistics.median(f - s for f, s in zip(first, sub)), 2),
                              "ttft_max_ms": round(1000 * max(f - s for f, s in zip(first, sub)), 2),
                              "iterations": i1 - i0 + 1, "prefill_or_mixed_steps": sum(k in ("prefill", "mixed")
                                                                                       for k in kinds)})
    sizes = [x["requests"] for x in res["bursts"]]
    p(f"bursts (submissions < {gap_ms:g} ms apart): {len(groups)}, sizes p50 {pct(sizes, 50)} max {max(sizes)}")
    p("   #  reqs  arrival span ms  TTFT p50 / max ms  iterations  prefill+mixed steps")
    for i, x in enumerate(res["bursts"][:max(n_bursts, 12)]):
        p(f"  {i:2d}  {x['requests']:4d}  {x['arrival_span_ms']:15.1f}  {x['ttft_p50_ms']:8.1f} / {x['ttft_max_ms']:6.1f}"
          f"  {x['iterations']:10d}  {x['prefill_or_mixed_steps']:5d}")
    big = sorted(range(len(groups)), key=lambda i: -len(groups[i]))[:n_bursts]
    for bi in sorted(big):
        b = groups[bi]
        t0 = min(reqs[k]["submit"] for k in b)
        i0, i1 = min(reqs[k]["i_add"] for k in b), max(reqs[k]["i_first"] for k in b)
        p(f"-- burst {bi}: {len(b)} requests; times from its first submission; the iteration before it, then up to "
          f"its last first token")
        for i in range(max(0, i0 - 1), i1 + 1):
            p(fmt_iter(recs[i], t0))
        t_end = max(reqs[k]["first"] for k in b)
        near = [e for e in hev if t0 - 0.02 <= e["t"] <= t_end]
        if near:
            p("     HTTP process meanwhile: " + ", ".join(
                f"{1000 * (e['t'] - t0):.1f} ms {'loop late' if e['event'] == 'lag' else 'GC gen %d' % e['gen']} "
                f"{e['ms']:.1f} ms" for e in near[:20]))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="+", type=Path)
    ap.add_argument("--window", help="only the iterations inside this marked window (e.g. c32)")
    ap.add_argument("--gap-ms", type=float, default=20.0, help="submissions closer than this form one burst")
    ap.add_argument("--bursts", type=int, default=3, help="timelines of this many of the largest bursts")
    ap.add_argument("--json", help="also write the summaries here")
    args = ap.parse_args()
    results = {}
    for log in args.logs:
        results[str(log)] = analyze(log, args.window, args.gap_ms, args.bursts)
        print()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
