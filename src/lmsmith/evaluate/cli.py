"""`lmsmith eval MODEL --tasks ...`, `lmsmith eval compare A B`, `lmsmith eval judge ...`, `lmsmith eval tasks`.

`eval` takes a model as its first word unless that word is a subcommand, so it parses its own arguments.
"""

from __future__ import annotations

import argparse
import json

from lmsmith.config import NONNEGATIVE_INT, POSITIVE_INT, Parser
from lmsmith.evaluate.report import print_compare, print_table
from lmsmith.progress import console, out

SUBCOMMANDS = ("compare", "judge", "tasks")


def _parser(prog: str, description: str):
    return Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_backend_args(p: argparse.ArgumentParser, model_optional: bool = False) -> None:
    p.add_argument("--endpoint", help="OpenAI-compatible server URL (e.g. http://localhost:8000/v1) instead of a local model")
    p.add_argument("--api-model", help="model name on the endpoint")
    p.add_argument("--api-key", help="API key for the endpoint (default: $OPENAI_API_KEY)")
    p.add_argument("--timeout", type=float, default=120.0, help="endpoint: seconds per request attempt, to the last byte")
    p.add_argument("--max-retries", type=int, default=4, help="endpoint: retries on 429/5xx/timeouts (backoff, Retry-After)")
    p.add_argument("--concurrency", type=int, default=4, help="endpoint: requests in flight")
    p.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bfloat16 on GPU), bfloat16, float32, float16")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=16)
    p.add_argument("--chat", action="store_true", help="wrap generation prompts in the model's chat template")


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", help="comma-separated built-in task names or task YAML paths (see `lmsmith eval tasks`)")
    p.add_argument("--num-fewshot", type=NONNEGATIVE_INT, help="override every task's num_fewshot")
    p.add_argument("--limit", type=POSITIVE_INT, help="evaluate only the first N items of each task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", help="where to write the report (default: $LMSMITH_HOME/runs/eval-...)")


def eval_parser():
    p = _parser("lmsmith eval", "Evaluate a model on tasks; writes JSON + Markdown + PNG into a run dir and "
                "attaches the scores to the model version.")
    p.epilog = ("subcommands:\n  lmsmith eval compare REF_A REF_B --tasks ...   side by side with significance\n"
                "  lmsmith eval judge --input FILE ...              LLM-as-judge (absolute or pairwise)\n"
                "  lmsmith eval tasks                               list the built-in tasks")
    p.add_argument("model", nargs="?", help="model ref (NAME, NAME@VERSION, a path); omit with --endpoint")
    add_run_args(p)
    add_backend_args(p)
    p.add_argument("--json", action="store_true", help="print the scores as JSON on stdout")
    p.add_argument("--no-registry", action="store_true", help="do not attach the scores to the model version")
    return p


def compare_parser():
    p = _parser("lmsmith eval compare", "Compare two model versions (or two earlier runs' results.json) item by item: "
                "McNemar for right/wrong metrics, paired bootstrap otherwise.")
    p.add_argument("ref_a")
    p.add_argument("ref_b")
    add_run_args(p)
    add_backend_args(p)
    p.add_argument("--allow-mismatch", action="store_true",
                   help="compare runs whose tasks, few-shot settings or prompts differ (warned in the report)")
    p.add_argument("--json", action="store_true")
    return p


def judge_parser():
    p = _parser("lmsmith eval judge", "Grade responses with a judge model (local ref or --endpoint).")
    p.add_argument("judge_model", nargs="?", help="local judge model ref (or use --endpoint/--api-model)")
    p.add_argument("--input", required=True, help="JSONL: prompt, response[, reference] (absolute) or prompt, response_a, response_b (pairwise)")
    p.add_argument("--mode", choices=("absolute", "pairwise"), default="absolute")
    p.add_argument("--scale", default="1-5", help="score range for absolute grading, e.g. 1-10")
    p.add_argument("--categories", help="comma-separated categories instead of a score scale")
    p.add_argument("--criteria", help="comma-separated criteria scored separately (e.g. fluency,correctness)")
    p.add_argument("--rubric", help="rubric text or a path to a text file")
    p.add_argument("--human", help="JSONL of human labels (id + label/score) to measure agreement")
    p.add_argument("--max-tokens", type=POSITIVE_INT, default=None,
                   help="verdict length (default: 64 for score-only grading, 256 otherwise)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir")
    p.add_argument("--json", action="store_true")
    add_backend_args(p)
    return p


def cmd_eval(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "compare":
        return run_compare(compare_parser().parse_args(argv[1:]))
    if argv and argv[0] == "judge":
        return run_judge(judge_parser().parse_args(argv[1:]))
    if argv and argv[0] == "tasks":
        _parser("lmsmith eval tasks", "List the built-in tasks (name, kind, what it measures).").parse_args(argv[1:])
        return run_list_tasks()
    return run_eval(eval_parser().parse_args(argv))


def backend_kwargs(a: argparse.Namespace) -> dict:
    import os

    return dict(endpoint=a.endpoint, api_model=a.api_model, api_key=a.api_key or os.environ.get("OPENAI_API_KEY"),
                dtype=a.dtype, device=a.device, batch_size=a.batch_size, chat=a.chat,
                endpoint_options={"timeout": a.timeout, "max_retries": a.max_retries, "concurrency": a.concurrency})


def run_eval(a: argparse.Namespace) -> int:
    from lmsmith.errors import LmsmithError
    from lmsmith.evaluate.harness import evaluate

    if not a.tasks:
        raise LmsmithError("--tasks is required", "e.g. --tasks cs_facts,cs_answers (see `lmsmith eval tasks`)")
    payload = evaluate(a.model, a.tasks, num_fewshot=a.num_fewshot, limit=a.limit, seed=a.seed, run_dir=a.run_dir,
                       attach=not a.no_registry, **backend_kwargs(a))
    if a.json:
        out.print_json(json.dumps(no_nan({r["task"]: r["metrics"] for r in payload["results"]})))
    else:
        print_table(payload)
    console.print(f"report: {payload['files']['markdown']}")
    if payload.get("registry_ref"):
        console.print(f"scores attached to {payload['registry_ref']}")
    return 0


def no_nan(obj):
    """JSON has no NaN: an undefined value (a standard error of one item) prints as null."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [no_nan(v) for v in obj]
    return obj


def run_compare(a: argparse.Namespace) -> int:
    from lmsmith.evaluate.harness import compare

    res = compare(a.ref_a, a.ref_b, a.tasks, run_dir=a.run_dir, seed=a.seed, num_fewshot=a.num_fewshot, limit=a.limit,
                  allow_mismatch=a.allow_mismatch, **backend_kwargs(a))
    if a.json:
        out.print_json(json.dumps(no_nan(res["rows"]), default=str))
    else:
        print_compare(res)
    console.print(f"report: {res['run_dir']}/compare.md")
    return 0


def run_judge(a: argparse.Namespace) -> int:
    from pathlib import Path

    from lmsmith.errors import LmsmithError
    from lmsmith.evaluate.backends import make_backend
    from lmsmith.evaluate.judge import (
        JudgeConfig,
        human_agreement,
        judge,
        read_human_labels,
        read_items,
        write_judge_run,
    )
    from lmsmith.evaluate.report import new_run_dir

    try:
        lo, hi = (int(x) for x in a.scale.split("-"))
    except ValueError:
        raise LmsmithError(f"--scale must look like 1-5, got '{a.scale}'") from None
    rubric = a.rubric or ""
    if rubric and Path(rubric).expanduser().is_file():
        rubric = Path(rubric).expanduser().read_text(encoding="utf-8")
    cfg = JudgeConfig(mode=a.mode, scale=(lo, hi), rubric=rubric, max_tokens=a.max_tokens, seed=a.seed,
                      categories=[c.strip() for c in (a.categories or "").split(",") if c.strip()],
                      criteria=[c.strip() for c in (a.criteria or "").split(",") if c.strip()])
    items = read_items(a.input, a.mode)
    human = read_human_labels(a.human) if a.human else None  # a bad label file fails before any judging
    kw = backend_kwargs(a)
    kw["chat"] = None  # the judge's chat template when it has one
    backend = make_backend(a.judge_model, **kw)
    result = judge(items, backend, cfg)
    run_dir = new_run_dir(f"judge-{a.api_model or a.judge_model}", a.run_dir)
    write_judge_run(run_dir, result)  # the verdicts are saved before anything else can fail
    if human is not None:
        result["human_agreement"] = human_agreement(result, human, cfg)
        write_judge_run(run_dir, result)
    summary = {**result["summary"], **({"human_agreement": result["human_agreement"]} if a.human else {})}
    if a.json:
        out.print_json(json.dumps(no_nan(summary), default=str))
    else:
        for k, v in summary.items():
            out.print(f"{k}: {v}")
    if result["summary"]["unparseable"]:
        console.print(f"[yellow]{result['summary']['unparseable']} verdict(s) could not be parsed "
                      f"(ids {result['summary']['unparseable_ids'][:10]}); see {run_dir}/judge.json")
    console.print(f"report: {run_dir}/judge.md")
    if human is not None and result["human_agreement"].get("error"):
        raise LmsmithError(f"no agreement computed: {result['human_agreement']['error']} "
                           f"(verdicts saved in {run_dir}/judge.json)", "the ids in --human must match the judged file's ids")
    return 0


def run_list_tasks() -> int:
    from lmsmith.evaluate.tasks import builtin_tasks, load_yaml_lines

    for name, path in builtin_tasks().items():
        raw, _ = load_yaml_lines(path)
        about = str((raw.get("metadata") or {}).get("about") or "")
        out.print(f"{name:14s} {raw.get('kind', ''):16s} {about}")
    return 0


class _PassThrough(argparse.ArgumentParser):
    """Hands every word after `eval` to `cmd_eval`, so `lmsmith eval --help` and `lmsmith eval --endpoint ...`
    (options before any positional) reach our own parsers."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        ns = namespace or argparse.Namespace()
        ns.argv, ns.func = list(args or []), cmd_eval
        return ns, []


def register(sub: argparse._SubParsersAction) -> None:
    original = sub._parser_class
    sub._parser_class = _PassThrough  # this one command parses its own words
    try:
        sub.add_parser("eval", help="evaluate models: benchmarks, compare versions, LLM-as-judge, needle in a haystack",
                       add_help=False)
    finally:
        sub._parser_class = original
