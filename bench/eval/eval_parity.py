"""Parity with lm-evaluation-harness: the same multiple-choice JSONL task scored by lmsmith and by lm-eval's
`hf` backend on the same local model; acc and acc_norm must agree within 0.5 points.

lm-eval is a benchmark-only dependency (`pip install lm-eval`), never a project one. Nothing is downloaded:
the model is the registered default model's directory, the data a local JSONL read through
`dataset_path: json` + `dataset_kwargs: {data_files: ...}`, with HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1.

    python -m bench.eval.eval_parity                    # default model, built-in cs_facts, 0-shot, CPU
    python -m bench.eval.eval_parity --device cuda --out bench/results/eval_parity-gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench._result import make_result, write_result

os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")

from bench.common import ROOT

# lm-eval's Jinja rendering of the built-in cs_facts prompt (0-shot); checked below against lmsmith's own prompt.
LMEVAL_DOC_TO_TEXT = ("Následují otázky s výběrem jedné správné odpovědi.\n\nOtázka: {{question}}\n"
                      "{% for c in choices %}{{ 'ABCDEFGH'[loop.index0] }}. {{c}}\n{% endfor %}Odpověď:")


def lmeval_task_yaml(name: str, data_file: Path) -> str:
    import yaml

    return yaml.safe_dump({
        "task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": LMEVAL_DOC_TO_TEXT,
        "doc_to_choice": "{{choices}}", "doc_to_target": "answer", "target_delimiter": " ",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
    }, allow_unicode=True, sort_keys=False)


def run_lmsmith(model_dir: str, task_name: str, device: str, dtype: str, batch_size: int, limit: int | None):
    from lmsmith.evaluate.backends import HFBackend
    from lmsmith.evaluate.runner import run_task
    from lmsmith.evaluate.tasks import load_task, render

    task = load_task(task_name, num_fewshot=0, limit=limit)
    mismatched = [d.source for d in task.docs if render(LMEVAL_DOC_TO_TEXT, d.fields) != task.context(d)]
    if mismatched:
        sys.exit(f"the lm-eval prompt differs from lmsmith's for {mismatched[0]}: fix LMEVAL_DOC_TO_TEXT")
    t = time.time()
    res = run_task(task, HFBackend(model_dir, dtype=dtype, device=device, batch_size=batch_size))
    return res, time.time() - t, task


def run_lmeval(model_dir: str, data_file: Path, device: str, dtype: str, batch_size: int, limit: int | None):
    import lm_eval
    from lm_eval.tasks import TaskManager

    name = "lmsmith_parity"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / f"{name}.yaml").write_text(lmeval_task_yaml(name, data_file), encoding="utf-8")
        t = time.time()
        out = lm_eval.simple_evaluate(
            model="hf", model_args=f"pretrained={model_dir},dtype={dtype}", tasks=[name], num_fewshot=0,
            batch_size=batch_size, device=device, limit=limit, task_manager=TaskManager(include_path=tmp),
            log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
        seconds = time.time() - t
    r = out["results"][name]
    per_doc = {s["doc_id"]: (s["acc"], s["acc_norm"]) for s in out.get("samples", {}).get(name, [])}
    return r["acc,none"], r["acc_norm,none"], per_doc, seconds, getattr(lm_eval, "__version__", None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory or ref (default: the registered default model)")
    ap.add_argument("--task", default="cs_facts", help="built-in multiple-choice task (its test JSONL is used)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--lmeval-results", help="reuse lm-eval results saved earlier with --save-lmeval instead of running lm-eval")
    ap.add_argument("--save-lmeval", help="save lm-eval's results (scores and per-item outcomes) to this JSON file")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "eval_parity-cpu.json"))
    a = ap.parse_args()

    from lmsmith.models import resolve

    if a.model:
        model_dir = str(resolve(a.model).dir)
    else:
        from lmsmith.registry.importers import pull_default

        model_dir = str(pull_default()[0].dir)
    ours, our_s, task = run_lmsmith(model_dir, a.task, a.device, a.dtype, a.batch_size, a.limit)
    data_file = Path(task.docs[0].source.rsplit(":", 1)[0])
    print(f"lmsmith: acc={ours.metrics['acc']:.4f} acc_norm={ours.metrics['acc_norm']:.4f} ({our_s:.0f} s)", flush=True)
    if a.lmeval_results:
        saved = json.loads(Path(a.lmeval_results).read_text())
        acc, acc_norm, their_s, lmeval_version = saved["acc"], saved["acc_norm"], saved["seconds"], saved["version"]
        per_doc = {int(k): tuple(v) for k, v in saved["per_doc"].items()}
    else:
        acc, acc_norm, per_doc, their_s, lmeval_version = run_lmeval(model_dir, data_file, a.device, a.dtype, a.batch_size, a.limit)
    if a.save_lmeval:
        Path(a.save_lmeval).write_text(json.dumps({"acc": acc, "acc_norm": acc_norm, "seconds": their_s, "version": lmeval_version,
                                                   "per_doc": {str(k): list(v) for k, v in per_doc.items()}}))
    print(f"lm-eval: acc={acc:.4f} acc_norm={acc_norm:.4f} ({their_s:.0f} s)")
    same = [per_doc[it["id"]] == (it["acc"], it["acc_norm"]) for it in ours.items if it["id"] in per_doc]

    result = make_result(
        "eval_parity", {"n": ours.n, "lmsmith_acc": ours.metrics["acc"], "lmeval_acc": acc,
                    "lmsmith_acc_norm": ours.metrics["acc_norm"], "lmeval_acc_norm": acc_norm,
                    "abs_diff_acc_points": round(100 * abs(ours.metrics["acc"] - acc), 4),
                    "abs_diff_acc_norm_points": round(100 * abs(ours.metrics["acc_norm"] - acc_norm), 4),
                    "items_identical": sum(same), "lmsmith_seconds": round(our_s, 1), "lmeval_seconds": round(their_s, 1)},
        a.device, model=model_dir, task=a.task, num_fewshot=0, dtype=a.dtype)
    result["versions"]["lm_eval"] = lmeval_version or result["versions"].get("lm_eval", "?")
    write_result(a.out, result, echo=False)
    ok = result["metrics"]["abs_diff_acc_points"] <= 0.5 and result["metrics"]["abs_diff_acc_norm_points"] <= 0.5
    print(json.dumps(result["metrics"]), f"\n{'PASS' if ok else 'FAIL'}: within 0.5 points -> {a.out}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
