"""`lmsmith compress report REF...`: what each compressed version costs and saves, side by side.

Per model: bytes on disk, perplexity on the user's held-out text, greedy decode speed on this machine
(transformers `generate` with its KV cache, batch 1: the same path for every kind of model), how it
was made (quantized / pruned / low-rank, from config.json) and its parent (registry lineage). One
table and one PNG of perplexity against size, the trade-off users pick from.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmsmith.errors import LmsmithError


@dataclass
class ReportConfig:
    refs: list[str] = field(default_factory=list)
    text: str = ""
    max_length: int = 512
    speed_tokens: int = 32
    output: str | None = "compress-report.png"
    device: str = "cpu"


def describe(model_dir: Path) -> str:
    """How a model directory was compressed, from its config.json sections."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return "?"
    q = config.get("quantization")
    if isinstance(q, dict) and q.get("quant_method") == "lmsmith":
        bits = f"{q.get('bits') or 4}-bit g{q.get('group_size')}" if q.get("method") == "int4" else q.get("method")
        return f"{q.get('algorithm', 'rtn')} {q.get('method')} ({bits})" if q.get("method") == "int4" else \
            f"{q.get('algorithm', 'rtn')} {q.get('method')}"
    s = config.get("lmsmith_sparsity")
    if isinstance(s, dict):
        return f"{s.get('method')} {s.get('pattern') or format(s.get('sparsity', 0), '.0%')} sparse"
    lr = config.get("lmsmith_lowrank")
    if isinstance(lr, dict):
        return f"{lr.get('method')} rank ratio {lr.get('rank_ratio')}"
    return "full precision"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def weight_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))


@torch.no_grad()
def decode_speed(model, tokenizer, n_tokens: int, prompt: str = "The history of the city") -> float:
    """Greedy tokens per second at batch 1 (one warm-up run first)."""
    device = next(model.parameters()).device
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    kw = dict(do_sample=False, pad_token_id=tokenizer.eos_token_id)
    model.generate(ids, max_new_tokens=2, min_new_tokens=2, **kw)
    t = time.perf_counter()
    out = model.generate(ids, max_new_tokens=n_tokens, min_new_tokens=n_tokens, **kw)
    dt = time.perf_counter() - t
    return (out.shape[1] - ids.shape[1]) / dt


def measure(ref: str, text: str, cfg: ReportConfig) -> dict[str, Any]:
    from lmsmith.compress.perplexity import perplexity
    from lmsmith.models import load_model, load_tokenizer
    from lmsmith.registry.registry import Registry

    registry = Registry()
    h = registry.resolve(ref)
    if h.kind == "adapter":
        raise LmsmithError(f"{h.ref} is an adapter", "report on merged models (`lmsmith train merge`)")
    lineage = getattr(h, "lineage", None)
    model = load_model(ref, dtype="float32", device=cfg.device)
    tok = load_tokenizer(ref)
    row: dict[str, Any] = {"ref": h.ref if hasattr(h, "version") else ref, "kind": describe(h.dir),
                           "size_bytes": weight_bytes(h.dir), "parent": getattr(lineage, "parent", None)}
    row.update(perplexity(model, tok, text, max_length=cfg.max_length).to_dict())
    if cfg.speed_tokens:
        row["tok_s"] = decode_speed(model, tok, cfg.speed_tokens)
    del model
    return row


def compress_report(cfg: ReportConfig) -> list[dict[str, Any]]:
    from lmsmith.compress.perplexity import read_text
    from lmsmith.progress import task

    text = read_text(cfg.text)
    rows = []
    with task("measuring", total=len(cfg.refs)) as tick:
        for ref in cfg.refs:
            rows.append(measure(ref, text, cfg))
            tick(1, info=ref)
    base = rows[0]["ppl"]
    for r in rows:
        r["ppl_delta_pct"] = 100 * (r["ppl"] / base - 1)
    if cfg.output:
        plot(rows, Path(cfg.output), Path(cfg.text).name)
    return rows


def plot(rows: list[dict[str, Any]], path: Path, text_name: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [r["size_bytes"] / 2**20 for r in rows]
    ys = [r["ppl"] for r in rows]
    ax.scatter(xs, ys, s=40, color="tab:blue", zorder=3)
    for x, y, r in zip(xs, ys, rows):
        ax.annotate(f"{r['ref']}\n{r['kind']}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.set_xlabel("weights on disk (MiB)")
    ax.set_ylabel(f"perplexity on {text_name} (lower is better)")
    ax.set_title("quality vs size")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render(rows: list[dict[str, Any]], cfg: ReportConfig) -> None:
    from rich.table import Table

    from lmsmith.progress import console, out

    t = Table("model", "compression", "size", "perplexity", f"vs {rows[0]['ref']}", "tok/s", "parent",
              title=f"compression report on {cfg.text} ({cfg.device})")
    for r in rows:
        t.add_row(r["ref"], r["kind"], human_bytes(r["size_bytes"]), f"{r['ppl']:.3f}", f"{r['ppl_delta_pct']:+.1f}%",
                  f"{r['tok_s']:.1f}" if "tok_s" in r else "-", r["parent"] or "-")
    out.print(t)
    if cfg.output:
        console.print(f"plot: {cfg.output}")
