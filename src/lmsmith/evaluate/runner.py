"""Run one task against one backend: build requests, score every item, aggregate with standard errors.

Per-item results are kept (not just the means) so that two runs can be compared item by item.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from lmsmith.errors import LmsmithError
from lmsmith.evaluate import metrics as M
from lmsmith.evaluate.backends import Backend, GenParams
from lmsmith.evaluate.needle import run_needle
from lmsmith.evaluate.result import TaskResult
from lmsmith.evaluate.tasks import Task
from lmsmith.progress import task as progress_task


def task_config(task: Task) -> dict[str, Any]:
    return {"path": str(task.path), "num_fewshot": task.num_fewshot, "fewshot_seed": task.fewshot_seed,
            "target_delimiter": task.target_delimiter, "fewshot_delimiter": task.fewshot_delimiter,
            "metrics": task.metrics, "generation_kwargs": task.generation_kwargs}


def run_task(task: Task, backend: Backend, seed: int = 0) -> TaskResult:
    t0 = time.time()
    if task.kind in ("multiple_choice", "perplexity") and not backend.supports_loglikelihood:
        raise LmsmithError(f"task {task.name} needs log-likelihoods, which this backend cannot give",
                           "use a local model or an endpoint returning prompt logprobs")
    if task.kind == "multiple_choice":
        result = run_multiple_choice(task, backend)
    elif task.kind == "generation":
        result = run_generation(task, backend, seed)
    elif task.kind == "perplexity":
        result = run_perplexity(task, backend)
    else:
        result = run_needle(task, backend)
    result.config = task_config(task)
    result.seconds = round(time.time() - t0, 2)
    return result


def aggregate(items: list[dict[str, Any]], names: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in names:
        vals = [it[name] for it in items]
        out[name] = float(np.mean(vals))
        out[f"{name}_stderr"] = M.mean_stderr(vals)
    return out


def run_multiple_choice(task: Task, backend: Backend) -> TaskResult:
    """lm-eval's method: one request per choice, continuation = target_delimiter + choice;
    acc = argmax of log-likelihoods, acc_norm = argmax of log-likelihood / characters of the choice."""
    requests, spans, contexts = [], [], []
    for doc in task.docs:
        ctx, choices = task.context(doc), task.choices(doc)
        spans.append((len(requests), len(choices)))
        contexts.append(ctx)
        requests += [(ctx, task.target_delimiter + c) for c in choices]
    with progress_task(f"{task.name}", len(requests)) as bar:
        lls = backend.loglikelihood(requests, progress=bar)
    items = []
    for doc, (start, k), ctx in zip(task.docs, spans, contexts):
        choices, gold = task.choices(doc), task.target(doc)
        ll = np.array([lls[start + j][0] for j in range(k)])
        lengths = np.array([float(len(c)) for c in choices])
        pred, pred_norm = int(np.argmax(ll)), int(np.argmax(ll / lengths))
        items.append({"id": doc.index, "prompt": ctx, "gold": gold, "pred": pred, "pred_norm": pred_norm,
                      "acc": float(pred == gold), "acc_norm": float(pred_norm == gold),
                      "loglikelihoods": [round(float(x), 5) for x in ll]})
    return TaskResult(task.name, task.kind, len(items), aggregate(items, task.metrics), items)


def gen_params(task: Task, seed: int) -> GenParams:
    g = task.generation_kwargs
    until = g.get("until", ["\n\n"])
    return GenParams(max_tokens=int(g.get("max_gen_toks", g.get("max_tokens", 128))),
                     until=[until] if isinstance(until, str) else list(until),
                     temperature=float(g.get("temperature", 0.0)) if g.get("do_sample", g.get("temperature", 0) > 0) else 0.0,
                     seed=seed)


def score_generation(task: Task, pred: str, targets: list[str]) -> dict[str, float]:
    s: dict[str, float] = {}
    for name in task.metrics:
        if name == "exact_match":
            s[name] = M.exact_match(pred, targets)
        elif name == "regex_match":
            got = M.regex_extract(pred, task.regex or "")
            s[name] = 0.0 if got is None else M.exact_match(got, targets)
        elif name == "f1":
            gold = [M.normalize(t) for t in targets] if len(targets) > 1 else M.terms(targets[0], task.regex)
            s[name] = M.f1(M.terms(pred, task.regex), gold)
        elif name == "rouge_l":
            s[name] = max(M.rouge_l(pred, t) for t in targets)
        elif name == "length_ok":
            ln = task.length or {}
            s[name] = M.length_ok(pred, ln.get("unit", "words"), ln.get("min"), ln.get("max"))
        elif name == "json_valid":
            s[name] = M.json_valid(pred, task.json_schema or {})
    return s


def run_generation(task: Task, backend: Backend, seed: int = 0) -> TaskResult:
    params = gen_params(task, seed)
    prompts = [task.context(doc) for doc in task.docs]
    with progress_task(f"{task.name}", len(prompts)) as bar:
        preds = backend.generate(prompts, params, progress=bar)
    items = []
    for doc, pred, prompt in zip(task.docs, preds, prompts):
        target = task.target(doc)
        targets = target if isinstance(target, list) else [target]
        items.append({"id": doc.index, "prompt": prompt, "target": target, "prediction": pred,
                      **score_generation(task, pred, targets)})
    return TaskResult(task.name, task.kind, len(items), aggregate(items, task.metrics), items)


def run_perplexity(task: Task, backend: Backend) -> TaskResult:
    texts = [task.text(doc) for doc in task.docs]
    with progress_task(f"{task.name}", len(texts)) as bar:
        scored = backend.loglikelihood_rolling(texts, progress=bar)
    items, total_ll, total_tok, total_bytes, total_words = [], 0.0, 0, 0, 0
    for doc, text, (ll, ntok) in zip(task.docs, texts, scored):
        nbytes, nwords = len(text.encode("utf-8")), max(1, len(text.split()))
        items.append({"id": doc.index, "loglikelihood": ll, "tokens": ntok, "bytes": nbytes, "words": nwords})
        total_ll, total_tok, total_bytes, total_words = total_ll + ll, total_tok + ntok, total_bytes + nbytes, total_words + nwords
    all_metrics = M.perplexity_metrics(total_ll, total_tok, total_bytes, total_words)
    return TaskResult(task.name, task.kind, len(items), {k: all_metrics[k] for k in task.metrics}, items,
                      extra={"tokens": total_tok, "bytes": total_bytes, "tokens_per_byte": total_tok / max(1, total_bytes)})
