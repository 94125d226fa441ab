"""`lmsmith align score`: a reward model's scores for preference pairs or single answers, with accuracy.

Records may be any of TRL's preference formats (scored on both sides: accuracy = share of pairs where the
chosen answer scores higher) or single answers: `{"prompt", "completion"}` (TRL's prompt-completion format)
or `{"messages": [...]}` (the last assistant turn is the answer).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lmsmith.data.chat import iter_jsonl
from lmsmith.data.preference import parse_pair, render_answer
from lmsmith.errors import LmsmithError


def _single(obj: dict[str, Any], where: str) -> tuple[Any, str]:
    if "completion" in obj and "prompt" in obj:
        comp = obj["completion"]
        if isinstance(comp, list):
            comp = comp[-1].get("content") or "" if comp else ""
        return obj["prompt"], comp
    msgs = obj.get("messages")
    if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "assistant":
        return msgs[:-1], msgs[-1].get("content") or ""
    raise LmsmithError(f"{where}: not a pair or a single answer",
                       'give {"prompt", "chosen", "rejected"}, {"prompt", "completion"} or {"messages": [..., '
                       '{"role": "assistant", ...}]}')


def score_file(ref: str, path: str | Path, device: str | None = None, batch_size: int = 16) -> dict[str, Any]:
    from lmsmith.align.scorers import RewardModelScorer

    path = Path(path)
    if not path.is_file():
        raise LmsmithError(f"data file not found: {path}")
    records: list[tuple[str, dict[str, Any], Any]] = []
    for n, obj in iter_jsonl(path):
        where = f"{path}:{n}"
        if isinstance(obj, dict) and "chosen" in obj and "rejected" in obj:
            records.append(("pair", obj, parse_pair(obj, where)))
        elif isinstance(obj, dict):
            records.append(("single", obj, (*_single(obj, where), where)))
        else:
            raise LmsmithError(f"{where}: a record must be a JSON object")
    if not records:
        raise LmsmithError(f"{path} has no records")
    rm = RewardModelScorer(ref, device, batch_size)
    seqs: list[list[int]] = []
    for kind, _obj, x in records:
        if kind == "pair":
            tools = obj.get("tools")
            seqs.append(render_answer(rm.tokenizer, x.prompt, x.chosen, x.where, tools).input_ids)
            seqs.append(render_answer(rm.tokenizer, x.prompt, x.rejected, x.where, tools).input_ids)
        else:
            prompt, answer, where = x
            seqs.append(render_answer(rm.tokenizer, prompt, answer, where).input_ids)
    scores = rm.score_ids(seqs)
    rows, i = [], 0
    pair_margins: list[float] = []
    for kind, _obj, x in records:
        if kind == "pair":
            c, r = scores[i], scores[i + 1]
            i += 2
            rows.append({"line": x.where.rsplit(":", 1)[1], "chosen_score": c, "rejected_score": r, "margin": c - r,
                         "correct": c > r})
            pair_margins.append(c - r)
        else:
            rows.append({"line": x[2].rsplit(":", 1)[1], "score": scores[i]})
            i += 1
    summary: dict[str, Any] = {"reward_model": rm.ref, "data": str(path), "records": len(records),
                               "pairs": len(pair_margins), "mean_reward": sum(scores) / len(scores),
                               "min_reward": min(scores), "max_reward": max(scores)}
    if pair_margins:
        summary["accuracy"] = sum(m > 0 for m in pair_margins) / len(pair_margins)
        summary["margin"] = sum(pair_margins) / len(pair_margins)
        summary["ties"] = sum(m == 0 for m in pair_margins)
    assert all(math.isfinite(s) for s in scores)
    return {"summary": summary, "records": rows}


__all__ = ["score_file"]
