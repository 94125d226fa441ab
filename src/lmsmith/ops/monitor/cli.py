"""`lmsmith monitor drift …` and `lmsmith monitor judge …`."""

from __future__ import annotations

import argparse
import json
import sys

from lmsmith.progress import console, out


def cmd_drift(args: argparse.Namespace) -> int:
    from rich.table import Table

    from lmsmith.config import config_from_args
    from lmsmith.ops.monitor.drift import DriftConfig, drift_report
    from lmsmith.ops.monitor.embed import get_embedder
    from lmsmith.ops.monitor.logs import load_texts

    window = dict(since=args.since, until=args.until)
    own = args.reference_since or args.reference_until  # the reference's own window replaces the shared one
    ref = load_texts(args.reference, args.field, since=args.reference_since if own else args.since,
                     until=args.reference_until if own else args.until)
    cur = load_texts(args.current, args.field, **window)
    cfg = config_from_args(DriftConfig, args)
    with console.status("loading the embedder" if cfg.embedder != "none" else "comparing"):
        embed = get_embedder(cfg.embedder)
    with console.status(f"comparing {len(ref)} reference and {len(cur)} current texts"):
        report = drift_report(ref, cur, cfg, embed=embed, keep_artifacts=bool(args.html))
    if args.html:
        from lmsmith.ops.monitor.report import write_html

        path = write_html(report, args.html)
        console.print(f"report: {path}")
    report.pop("_artifacts", None)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    else:
        t = Table("signal", "verdict", "p-value", "value", title=f"drift: {args.reference} -> {args.current}")
        for name, s in report["signals"].items():
            value = next((f"{k}={s[k]:.4g}" for k in ("share", "log_ratio_vs_expected", "psi", "tvd", "roc_auc", "mmd2")
                          if isinstance(s.get(k), float)), "")
            t.add_row(name, "[bold red]DRIFT" if s["drift"] else "[green]ok", f"{s['p_value']:.4g}", value)
        out.print(t)
        new = report["signals"].get("unseen_tokens", {}).get("top_new_tokens")
        if new:
            out.print("top new tokens: " + ", ".join(f"{w} ({c})" for w, c in new[:10]))
        out.print(f"drift: {'YES' if report['drift'] else 'no'}")
    return 4 if report["drift"] and args.fail_on_drift else 0


def cmd_judge(args: argparse.Namespace) -> int:
    from rich.table import Table

    from lmsmith.evaluate.backends import make_backend
    from lmsmith.ops.monitor.quality import DEFAULT_RUBRIC, monitor_quality

    backend = make_backend(args.judge, endpoint=args.endpoint, api_model=args.api_model, api_key=args.api_key,
                           dtype=args.dtype, chat=True)
    res = monitor_quality(args.log, backend, sample=args.sample, seed=args.seed, since=args.since, until=args.until,
                          rubric=args.rubric or DEFAULT_RUBRIC, judge_name=args.api_model or args.judge or "",
                          regrade=args.regrade)
    if args.json:
        sys.stdout.write(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
        return 0
    t = Table("graded at", "version", "n", "mean score (1-5)", title=f"quality of {args.log} (judge {args.judge or args.api_model})")
    import datetime as dt

    for h in res["history"][-20:]:
        when = dt.datetime.fromtimestamp(h["ts"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        t.add_row(when, h["version"] or "-", str(h["n"]), "-" if h["mean_score"] is None else f"{h['mean_score']:.2f}")
    out.print(t)
    if res["summary"].get("unparseable"):
        console.print(f"[yellow]{res['summary']['unparseable']} verdicts could not be parsed")
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    import datetime as dt

    from rich.table import Table

    from lmsmith.ops.monitor.logs import read_log, summarize

    groups = summarize(read_log(args.log, args.since, args.until, status=None))
    if args.json:
        sys.stdout.write(json.dumps(groups, indent=2) + "\n")
        return 0

    def when(ts: float) -> str:
        return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")

    t = Table("model", "version", "requests", "errors", "latency p50 / p95", "TTFT p50", "tokens in / out", "from", "to",
              title=f"request log {args.log}")
    for g in groups:
        lat = "-" if g["latency_p50_s"] is None else f"{g['latency_p50_s']:.3f} / {g['latency_p95_s']:.3f} s"
        t.add_row(g["model"] or "-", g["version"] or "-", str(g["requests"]), f"{g['errors']} ({g['error_rate']:.1%})",
                  lat, "-" if g["ttft_p50_s"] is None else f"{g['ttft_p50_s']:.3f} s",
                  f"{g['prompt_tokens']:,} / {g['completion_tokens']:,}", when(g["first"]), when(g["last"]))
    out.print(t)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from lmsmith.config import add_config_args
    from lmsmith.ops.monitor.drift import DriftConfig

    p = sub.add_parser("monitor", help="monitor served traffic: drift of inputs/outputs, answer quality by a judge")
    msub = p.add_subparsers(dest="monitor_command", metavar="WHAT", required=True)
    d = msub.add_parser("drift", help="compare current traffic to a reference: tokens, lengths, languages, embeddings")
    d.add_argument("--reference", required=True, help="JSONL file (text / messages / prompt+completion) or request-log DIR")
    d.add_argument("--current", required=True, help="JSONL file or request-log DIR")
    d.add_argument("--field", default="prompt", choices=["prompt", "completion", "both"],
                   help="which text of chat/completion records (default: prompt, the traffic going in)")
    d.add_argument("--since", help="request logs: start of the window (ISO time, unix seconds, or an age: 24h, 7d)")
    d.add_argument("--until", help="request logs: end of the window")
    d.add_argument("--reference-since", help="window of the reference log, when it differs")
    d.add_argument("--reference-until", help="window of the reference log, when it differs")
    add_config_args(d, DriftConfig)  # --alpha, --permutations, --embedder, --min-psi, ... (or --config FILE.yaml)
    d.add_argument("--json", action="store_true", help="print one JSON object (drift, signals, ...)")
    d.add_argument("--html", metavar="FILE", help="write an HTML report with plots")
    d.add_argument("--fail-on-drift", action="store_true", help="exit with status 4 when drift is found (CI, cron)")
    d.set_defaults(func=cmd_drift)
    g = msub.add_parser("log", help="what the request log holds: requests, errors, latency and tokens per version")
    g.add_argument("log", help="request-log DIR (from `lmsmith serve --log-requests DIR`)")
    g.add_argument("--since", help="window start (ISO time, unix seconds, or an age: 24h)")
    g.add_argument("--until", help="window end")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=cmd_log)
    j = msub.add_parser("judge", help="grade a sample of logged answers with an LLM judge; track the score per version")
    j.add_argument("--log", required=True, help="request-log DIR (from `lmsmith serve --log-requests DIR`)")
    j.add_argument("--judge", help="judge model ref (or --endpoint URL --api-model NAME)")
    j.add_argument("--endpoint", help="an OpenAI-compatible server as the judge")
    j.add_argument("--api-model", help="the model name at --endpoint")
    j.add_argument("--api-key")
    j.add_argument("--sample", type=int, default=50, help="answers to grade (split evenly over versions)")
    j.add_argument("--since", help="window start (ISO time or an age: 24h)")
    j.add_argument("--until", help="window end")
    j.add_argument("--rubric", help="grading rubric (default: helpful, correct, same language)")
    j.add_argument("--regrade", action="store_true", help="also sample requests graded in earlier runs")
    j.add_argument("--dtype", default="auto")
    j.add_argument("--seed", type=int, default=0)
    j.add_argument("--json", action="store_true")
    j.set_defaults(func=cmd_judge)
