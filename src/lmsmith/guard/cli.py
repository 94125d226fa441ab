"""`lmsmith guard scan|eval|train|output …`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmsmith.errors import LmsmithError
from lmsmith.progress import console, out, task


def _guard(args: argparse.Namespace):
    from lmsmith.guard.scan import Guard

    extra: list[str] = []
    if getattr(args, "tokenizer", None):
        from lmsmith.guard.rules import tokenizer_special_tokens
        from lmsmith.models import load_tokenizer

        extra = tokenizer_special_tokens(load_tokenizer(args.tokenizer))
    return Guard(args.model, threshold=args.threshold, window_words=args.window_words, extra_control_tokens=extra,
                 hf_model=getattr(args, "hf_model", None), fpr=getattr(args, "fpr", None))


def cmd_scan(args: argparse.Namespace) -> int:
    from lmsmith.guard.scan import read_records

    recs = read_records(args.input)
    guard = _guard(args)
    results = []
    with task("scan", len(recs)) if not args.json else _quiet() as bar:
        for r in recs:
            results.append(guard.scan(r["text"], id=r["id"]))
            bar(1)
    flagged = sum(r.flagged for r in results)
    if args.json:
        for r in results:
            sys.stdout.write(json.dumps(r.to_dict(full=args.details), ensure_ascii=False) + "\n")
    else:
        from rich.table import Table

        t = Table("id", "score", "flagged", "reasons")
        for r in results:
            t.add_row(str(r.id), f"{r.score:.3f}", "[bold red]yes[/]" if r.flagged else "no", ", ".join(r.reasons))
        out.print(t)
        console.print(f"{flagged} of {len(results)} flagged (threshold {guard.threshold:.3f})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from lmsmith.guard.evaluate import evaluate, plot_roc, write_report
    from lmsmith.guard.scan import read_records

    recs = read_records(args.data, need_label=True)
    guard = _guard(args)
    scores = []
    with task("eval", len(recs)) as bar:
        for r in recs:
            scores.append(guard.scan(r["text"], id=r["id"]).score)
            bar(1)
    report = evaluate(recs, scores, guard.threshold)
    out_dir = Path(args.out)
    report["plot"] = str(plot_roc(recs, scores, out_dir / "guard_roc.png", title=f"lmsmith guard: {Path(args.data).name}"))
    report["data"] = str(args.data)
    write_report(report, out_dir / "guard_eval.json")
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return 0
    from rich.table import Table

    t = Table("language", "attacks", "benign", "ROC AUC", "TPR@FPR≤1%", "TPR@FPR≤5%", "TPR @thr", "FPR @thr")
    rows = [*report["languages"].items(), ("all", report["overall"])]
    for lang, m in rows:
        t.add_row(lang, str(m["n_pos"]), str(m["n_neg"]), f"{m['auc']:.3f}", f"{m['tpr_at_fpr_0.01']:.3f}",
                  f"{m['tpr_at_fpr_0.05']:.3f}", f"{m['tpr']:.3f}", f"{m['fpr']:.3f}")
    out.print(t)
    console.print(f"threshold {guard.threshold:.3f}; report {out_dir / 'guard_eval.json'}; ROC {report['plot']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from lmsmith.guard.train import TrainConfig, feature_options, train

    if not 0 < args.target_fpr < 1:
        raise LmsmithError(f"--target-fpr {args.target_fpr} is not in (0, 1)", "e.g. --target-fpr 0.01")
    model, meta = train(TrainConfig(data_dir=args.data_dir, out=args.out, target_fpr=args.target_fpr,
                                    steps=args.steps, **feature_options(args)))
    v = meta["validation"]
    out.print(f"{args.out}: threshold {model.threshold:.3f} for FPR <= {args.target_fpr:g} on validation "
              f"(TPR {v['tpr']:.3f}, FPR {v['fpr']:.3f}, AUC {v['auc']:.3f})")
    return 0


def cmd_output(args: argparse.Namespace) -> int:
    from lmsmith.guard.output import OutputGuard
    from lmsmith.guard.scan import read_records

    system = Path(args.system_prompt_file).read_text() if args.system_prompt_file else None
    og = OutputGuard()
    for r in read_records(args.input):
        res = og.check(r["text"], system_prompt=r.get("system_prompt") or system)
        sys.stdout.write(json.dumps({"id": r["id"], **res.to_dict(), "text": res.text}, ensure_ascii=False) + "\n")
    return 0


class _quiet:
    def __enter__(self):
        return lambda *a, **k: None

    def __exit__(self, *exc):
        return False


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="guard model directory (guard.safetensors + guard.json; default: the shipped one)")
    p.add_argument("--threshold", type=float, help="flag at or above this score (default: the model's, chosen on "
                                                    "validation for its target FPR)")
    p.add_argument("--fpr", type=float, help="use the model's operating point for this validation false-positive "
                                             "rate (0.01 = the default threshold, or 0.05: more attacks caught)")
    p.add_argument("--window-words", type=int, default=80, help="words per scan window (windows overlap by half)")
    p.add_argument("--tokenizer", help="also count this tokenizer's special tokens as control tokens (a model ref)")
    p.add_argument("--hf-model", help="also use this HF sequence classifier (a ref or path) on each window")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("guard", help="prompt-injection scanning of inputs, secret/PII/leak scanning of outputs")
    gsub = p.add_subparsers(dest="guard_command", metavar="COMMAND", parser_class=type(p))
    s = gsub.add_parser("scan", help="score JSONL records ({id, text}) for prompt injection")
    s.add_argument("--input", required=True, help="JSONL file, one {\"id\", \"text\"} per line")
    s.add_argument("--json", action="store_true", help="print one {id, score, flagged, reasons} per line")
    s.add_argument("--details", action="store_true", help="with --json: add control_tokens, span and matched snippets")
    _model_args(s)
    s.set_defaults(func=cmd_scan)
    e = gsub.add_parser("eval", help="TPR at fixed FPR, ROC AUC and a per-language table on labeled JSONL")
    e.add_argument("--data", required=True, help="JSONL with text, label (1/0 or injection/benign), optional lang")
    e.add_argument("--out", default="guard-eval", help="directory for guard_eval.json and guard_roc.png")
    e.add_argument("--json", action="store_true", help="print the report as JSON")
    _model_args(e)
    e.set_defaults(func=cmd_eval)
    t = gsub.add_parser("train", help="train the classifier and choose its threshold on the validation split")
    from lmsmith.guard.model import DEFAULT_DIR
    from lmsmith.guard.train import DATA_DIR

    t.add_argument("--data-dir", type=Path, default=DATA_DIR, help="directory with train.jsonl and validation.jsonl")
    t.add_argument("--out", type=Path, required=True, help=f"output directory (the shipped model is {DEFAULT_DIR})")
    t.add_argument("--target-fpr", type=float, default=0.01, help="false-positive rate on validation (default 0.01)")
    t.add_argument("--steps", type=int, default=300)
    from lmsmith.guard.train import add_feature_args

    add_feature_args(t)
    t.set_defaults(func=cmd_train)
    o = gsub.add_parser("output", help="scan completions ({id, text[, system_prompt]}) for secrets, PII, prompt leaks")
    o.add_argument("--input", required=True)
    o.add_argument("--system-prompt-file", help="the system prompt to check leakage against")
    o.set_defaults(func=cmd_output)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
