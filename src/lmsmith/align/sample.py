"""Rejection sampling: N answers per prompt from the engine, scored, best vs worst written as a DPO pair.

`sample_pairs(cfg)` samples every prompt's N answers in one continuous batch on lmsmith's engine (seeded per
prompt, so reruns give the same file), scores them with any scorer (`lmsmith.align.scorers`), and writes
TRL-format preference records ready for `lmsmith train dpo`: the prompt as given (text or messages), the best
answer as `chosen`, the worst as `rejected`, plus all scores and the margin. Prompts whose best and worst
tie (or with fewer than two scored answers) are skipped and counted. `keep="best"` writes best-of-N SFT
records (`{"messages": [...]}`) instead.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from lmsmith.align.scorers import ScorerOptions, check_spec, make_scorer
from lmsmith.config import Config
from lmsmith.data.preference import PromptRow, prompt_ids, prompt_messages, read_prompts
from lmsmith.errors import LmsmithError
from lmsmith.progress import console


class SampleConfig(Config):
    model: str = Field(..., description="model ref to sample from")
    prompts: str = Field(..., description="JSONL of {\"prompt\": text | messages, ...other fields for verifiers}")
    n: int = Field(8, ge=2, le=128, description="answers sampled per prompt")
    scorer: str = Field(..., description="rm:NAME | judge:REF | judge-endpoint:URL | verifier:module:function | "
                                         "verifier:NAME")
    output: str = Field(..., description="output JSONL")
    keep: Literal["pair", "best"] = Field("pair", description="pair: best/worst DPO pairs; best: best-of-N SFT data")
    temperature: float = Field(1.0, ge=0, description="sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling")
    top_k: int = Field(0, ge=0, description="top-k sampling (0 = off)")
    max_tokens: int = Field(256, gt=0, description="answer length limit in tokens")
    seed: int = Field(0, description="sampling seed (each prompt gets its own stream)")
    min_margin: float = Field(0.0, ge=0, description="skip pairs whose best-worst score margin is at most this")
    judge_model: str | None = Field(None, description="model name served at a judge-endpoint URL")
    dtype: str = Field("auto", description="engine dtype")
    device: str | None = Field(None, description="cpu or cuda (default: cuda when available)")
    skip_bad_lines: bool = Field(False, description="skip (and count) bad prompt records")


def generate(model: str, rows: list[PromptRow], n: int, cfg: Any, dtype: str = "auto",
             device: str | None = None) -> tuple[list[list[str]], int, float]:
    """N completions per prompt with the engine, all in one continuous batch: (texts, new tokens, seconds)."""
    from lmsmith.serve.llm import LLM
    from lmsmith.serve.sampling_params import SamplingParams

    llm = LLM(model, dtype=dtype, device=device)
    try:
        prompts = [prompt_ids(llm.tokenizer, r.prompt, r.columns.get("tools")) for r in rows]
        params = [SamplingParams(n=n, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                                 max_tokens=cfg.max_tokens, seed=cfg.seed * 1_000_003 + i * 1009)
                  for i in range(len(rows))]
        t0 = time.perf_counter()
        outs = llm.generate(prompts, params)
        dt = time.perf_counter() - t0
    finally:
        llm.close()
    texts = [[o.text for o in c.outputs] for c in outs]
    tokens = sum(len(o.token_ids) for c in outs for o in c.outputs)
    return texts, tokens, dt


def answer_field(prompt: Any, text: str) -> Any:
    """The answer in the prompt's own format: a string, or one assistant message (conversational)."""
    return text if isinstance(prompt, str) else [{"role": "assistant", "content": text}]


def sample_pairs(cfg: SampleConfig) -> dict[str, Any]:
    check_spec(cfg.scorer)
    rows = read_prompts(cfg.prompts, cfg.skip_bad_lines)
    out_path = Path(cfg.output)
    if out_path.parent and not out_path.parent.exists():
        raise LmsmithError(f"output directory {out_path.parent} does not exist")
    scorer = make_scorer(cfg.scorer, ScorerOptions(device=cfg.device, judge_model=cfg.judge_model))
    texts, n_tokens, dt = generate(cfg.model, rows, cfg.n, cfg, cfg.dtype, cfg.device)
    flat_rows = [r for r, t in zip(rows, texts) for _ in t]
    flat = [x for t in texts for x in t]
    scores = scorer.score(flat_rows, flat)
    scorer.close()
    stats = {"prompts": len(rows), "samples": len(flat), "written": 0, "ties": 0, "unscored": 0,
             "below_margin": 0, "sample_tokens": n_tokens, "sample_tokens_per_s": n_tokens / max(dt, 1e-9)}
    best_scores, worst_scores, margins = [], [], []
    tmp = out_path.with_name(out_path.name + ".tmp")
    with open(tmp, "w") as f:
        for i, r in enumerate(rows):
            s = scores[i * cfg.n:(i + 1) * cfg.n]
            valid = [(v, j) for j, v in enumerate(s) if v is not None]
            if len(valid) < (1 if cfg.keep == "best" else 2):
                stats["unscored"] += 1
                continue
            best_v, best_j = max(valid, key=lambda x: (x[0], -x[1]))
            worst_v, worst_j = min(valid, key=lambda x: (x[0], x[1]))
            meta = {"scores": s, "scorer": cfg.scorer, "source": r.where}
            if cfg.keep == "best":
                rec = {"messages": prompt_messages(r.prompt) + [{"role": "assistant", "content": texts[i][best_j]}],
                       "score": best_v, **meta}
            else:
                if best_v == worst_v:
                    stats["ties"] += 1
                    continue
                if best_v - worst_v <= cfg.min_margin:
                    stats["below_margin"] += 1
                    continue
                rec = {"prompt": r.prompt, "chosen": answer_field(r.prompt, texts[i][best_j]),
                       "rejected": answer_field(r.prompt, texts[i][worst_j]), "chosen_score": best_v,
                       "rejected_score": worst_v, "margin": best_v - worst_v, **meta}
                worst_scores.append(worst_v)
                margins.append(best_v - worst_v)
            best_scores.append(best_v)
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            stats["written"] += 1
    tmp.replace(out_path)
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    stats.update(mean_chosen_score=mean(best_scores), mean_rejected_score=mean(worst_scores),
                 mean_margin=mean(margins), mean_score=mean([v for v in scores if v is not None]),
                 output=str(out_path))
    what = "pairs" if cfg.keep == "pair" else "best-of-N examples"
    console.print(f"wrote {stats['written']} {what} to {out_path} from {len(rows)} prompts x {cfg.n} samples "
                  f"({stats['ties']} ties and {stats['unscored']} unscored skipped; "
                  f"{stats['sample_tokens_per_s']:,.0f} sampled tokens/s)")
    return stats
