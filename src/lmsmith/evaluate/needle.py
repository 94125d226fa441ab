"""Needle in a haystack: a fact hidden at depths 0-100 % of filler text of growing length.

Each (length, depth) cell is one greedy generation, scored 1 if the answer appears in the output. The run
also reports the KV cache the longest prompt needed: 2 x layers x KV heads x head dim x bytes x tokens.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lmsmith.errors import LmsmithError
from lmsmith.evaluate.backends import Backend, GenParams
from lmsmith.evaluate.metrics import normalize
from lmsmith.evaluate.result import TaskResult
from lmsmith.evaluate.tasks import Task
from lmsmith.progress import task as progress_task

DEFAULT_TEMPLATE = "{haystack}\n\n{question}"


def needle_settings(task: Task) -> dict[str, Any]:
    cfg = dict(task.needle)
    where = task.where("needle")
    for key in ("text", "question", "answer", "filler"):
        if not cfg.get(key):
            raise LmsmithError(f"{where}: needle is missing '{key}'", "see the built-in needle task for an example")
    filler = str(cfg["filler"])
    fp = task.path.parent / filler
    if "\n" not in filler and len(filler) < 200 and fp.suffix == ".txt":
        if not fp.exists():
            raise LmsmithError(f"{where}: filler file does not exist: {fp}")
        filler = fp.read_text(encoding="utf-8")
    cfg["filler"] = filler
    cfg.setdefault("depths", [0, 25, 50, 75, 100])
    cfg.setdefault("lengths", [256, 512, 1024, 2048])
    cfg.setdefault("max_new_tokens", 24)
    cfg.setdefault("template", DEFAULT_TEMPLATE)
    if any(not 0 <= float(d) <= 100 for d in cfg["depths"]):
        raise LmsmithError(f"{where}: depths are percentages between 0 and 100")
    return cfg


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def build_haystack(filler: list[str], needle: str, budget: int, depth: float, count) -> str:
    """Filler sentences (repeated as needed) up to `budget` tokens, the needle at the sentence boundary
    closest to `depth` percent of them."""
    out: list[str] = []
    used, i = 0, 0
    while True:
        s = filler[i % len(filler)]
        n = count(" " + s)
        if used + n > budget and out:
            break
        out.append(s)
        used += n
        i += 1
        if i > 100_000:
            break
    pos = round(len(out) * depth / 100)
    out.insert(pos, needle)
    return " ".join(out)


def run_needle(task: Task, backend: Backend):
    cfg = needle_settings(task)
    filler = sentences(cfg["filler"])
    if not filler:
        raise LmsmithError(f"{task.where('needle')}: the filler text is empty")
    count = backend.count_tokens
    max_len = backend.info.max_length
    lengths, skipped = [], []
    for length in cfg["lengths"]:
        length = int(max_len) if str(length) == "max" and max_len else int(length)
        (skipped if max_len and length + cfg["max_new_tokens"] > max_len else lengths).append(length)
    if not lengths:
        raise LmsmithError(f"{task.where('needle')}: every length exceeds the model's context of {max_len} tokens",
                           "use smaller lengths")
    depths = [float(d) for d in cfg["depths"]]
    overhead = count(cfg["template"].format(haystack="", question=cfg["question"])) + count(" " + cfg["text"])
    prompts, cells = [], []
    for length in lengths:
        for depth in depths:
            hay = build_haystack(filler, cfg["text"], max(1, length - overhead), depth, count)
            prompts.append(cfg["template"].format(haystack=hay, question=cfg["question"]))
            cells.append((length, depth))
    params = GenParams(max_tokens=int(cfg["max_new_tokens"]), until=list(cfg.get("until", ["\n"])))
    with progress_task(task.name, len(prompts)) as bar:
        outs = backend.generate(prompts, params, progress=bar)
    answer = normalize(cfg["answer"])
    items = []
    for (length, depth), prompt, out in zip(cells, prompts, outs):
        items.append({"length": length, "depth": depth, "prompt_tokens": count(prompt), "prediction": out,
                      "retrieval": float(answer in normalize(out))})
    longest = max(it["prompt_tokens"] for it in items) + params.max_tokens
    kv = backend.info.kv_cache_bytes(longest)
    metrics = {"retrieval": sum(it["retrieval"] for it in items) / len(items)}
    from lmsmith.evaluate.metrics import mean_stderr

    metrics["retrieval_stderr"] = mean_stderr([it["retrieval"] for it in items])
    extra = {"lengths": lengths, "depths": depths, "skipped_lengths": skipped, "max_tokens": longest,
             "kv_cache_bytes": kv, "kv_formula": kv_formula(backend, longest)}
    return TaskResult(task.name, task.kind, len(items), metrics, items, extra=extra)


def kv_formula(backend: Backend, tokens: int) -> str:
    i = backend.info
    if i.kv_cache_bytes(tokens) is None:
        return "unknown (the backend does not expose the model's shape)"
    return (f"2 x {i.layers} layers x {i.kv_heads} kv heads x {i.head_dim} head dim x {i.dtype_bytes} bytes x "
            f"{tokens} tokens = {i.kv_cache_bytes(tokens) / 2**20:.1f} MiB")


def heatmap(result: dict[str, Any], path: Path) -> Path:
    """Depth (rows) x length (columns) retrieval heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    lengths, depths = result["extra"]["lengths"], result["extra"]["depths"]
    grid = np.zeros((len(depths), len(lengths)))
    for it in result["items"]:
        grid[depths.index(it["depth"]), lengths.index(it["length"])] = it["retrieval"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(lengths), 1.2 + 0.5 * len(depths)))
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(lengths)), [str(x) for x in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:g}%" for d in depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(f"{result['task']}: retrieval {result['metrics']['retrieval']:.0%}")
    for r in range(len(depths)):
        for c in range(len(lengths)):
            ax.text(c, r, f"{grid[r, c]:.0f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
