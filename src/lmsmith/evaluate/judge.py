"""LLM-as-judge: absolute grading (scale or categories, rubric, reference, per-criterion scores) and pairwise
comparison run in both orders to cancel position bias. Verdicts that cannot be parsed are counted and
reported, never dropped silently."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmsmith.errors import LmsmithError
from lmsmith.evaluate import agreement as AG
from lmsmith.evaluate.backends import Backend, GenParams
from lmsmith.evaluate.metrics import bootstrap_ci, extract_json
from lmsmith.progress import task as progress_task

ABSOLUTE_PROMPT = """You are an impartial judge. Grade the response to the user's question.
{rubric}{reference}
[Question]
{prompt}

[Response]
{response}

{instruction}"""

PAIRWISE_PROMPT = """You are an impartial judge. Compare two assistants' responses to the user's question and decide which is better.
Do not let the order of the responses, their length or the assistants' names influence you.
{rubric}{reference}
[Question]
{prompt}

[Response A]
{response_a}

[Response B]
{response_b}

Answer with a JSON object {{"reason": "<one sentence>", "verdict": "A" | "B" | "tie"}}."""


@dataclass
class JudgeConfig:
    mode: str = "absolute"  # or "pairwise"
    scale: tuple[int, int] = (1, 5)
    categories: list[str] = field(default_factory=list)  # absolute grading into categories instead of a scale
    criteria: list[str] = field(default_factory=list)  # per-criterion scores (each on the scale)
    rubric: str = ""
    max_tokens: int | None = None  # None: SCORE_ONLY_TOKENS for score-only grading, else 256
    seed: int = 0

    @property
    def score_only(self) -> bool:
        return self.mode == "absolute" and not self.categories and not self.criteria

    @property
    def tokens(self) -> int:
        return self.max_tokens or (SCORE_ONLY_TOKENS if self.score_only else 256)


# A score-only verdict is `{"score": N, "reason": "<one sentence>"}`: the score comes first, so even a
# verdict cut short by this budget parses.
SCORE_ONLY_TOKENS = 64


# ----------------------------------------------------------------------------- prompts
def absolute_instruction(cfg: JudgeConfig) -> str:
    lo, hi = cfg.scale
    if cfg.categories:
        return (f"Classify the response into exactly one category: {', '.join(cfg.categories)}. "
                f'Answer with a JSON object {{"reason": "<one sentence>", "category": "<category>"}}.')
    crit = ""
    if cfg.criteria:
        crit = (f' Also score each criterion ({", ".join(cfg.criteria)}) from {lo} to {hi} under "criteria": '
                '{"<criterion>": <score>, ...}.')
    if not cfg.criteria:
        return (f'Score the response from {lo} (worst) to {hi} (best). Answer with a JSON object '
                f'{{"score": <{lo}-{hi}>, "reason": "<one short sentence>"}}.')
    return (f'Score the response from {lo} (worst) to {hi} (best). '
            f'Answer with a JSON object {{"reason": "<one sentence>", "score": <{lo}-{hi}>}}.{crit}')


def absolute_prompt(item: dict[str, Any], cfg: JudgeConfig) -> str:
    return ABSOLUTE_PROMPT.format(
        rubric=f"\n[Rubric]\n{cfg.rubric}\n" if cfg.rubric else "",
        reference=f"\n[Reference answer]\n{item['reference']}\n" if item.get("reference") else "",
        prompt=item["prompt"], response=item["response"], instruction=absolute_instruction(cfg))


def pairwise_prompt(item: dict[str, Any], cfg: JudgeConfig, swap: bool) -> str:
    a, b = (item["response_b"], item["response_a"]) if swap else (item["response_a"], item["response_b"])
    return PAIRWISE_PROMPT.format(
        rubric=f"\n[Rubric]\n{cfg.rubric}\n" if cfg.rubric else "",
        reference=f"\n[Reference answer]\n{item['reference']}\n" if item.get("reference") else "",
        prompt=item["prompt"], response_a=a, response_b=b)


# ----------------------------------------------------------------------------- verdict parsing
def _json_obj(text: str) -> dict[str, Any] | None:
    try:
        v = extract_json(text)
    except ValueError:
        return None
    return v if isinstance(v, dict) else None


NUM = r"(-?\d+(?:\.\d+)?)"


def parse_score(text: str, scale: tuple[int, int] = (1, 5)) -> float | None:
    """A score in [lo, hi] from JSON ("score"/"rating"), "[[4]]", "Score: 4", "Rating: 4/5"; else None."""
    lo, hi = scale
    obj = _json_obj(text)
    candidates: list[Any] = []
    if obj:
        candidates += [obj.get(k) for k in ("score", "rating", "grade", "hodnocení") if k in obj]
    for pat in (r"\[\[\s*" + NUM + r"\s*\]\]", r"(?:score|rating|grade|hodnocení|skóre)[\"']?\s*[:=]?\s*\**\s*" + NUM,
                r"^\s*" + NUM + r"\s*(?:/\s*\d+)?\s*$"):
        m = re.search(pat, text, flags=re.IGNORECASE | re.MULTILINE)
        if m:
            candidates.append(m.group(1))
    for c in candidates:
        try:
            v = float(c)
        except (TypeError, ValueError):
            continue
        if lo <= v <= hi:
            return v
    return None


def parse_category(text: str, categories: list[str]) -> str | None:
    obj = _json_obj(text)
    lower = {c.casefold(): c for c in categories}
    if obj:
        for k in ("category", "label", "verdict"):
            v = obj.get(k)
            if isinstance(v, str) and v.strip().casefold() in lower:
                return lower[v.strip().casefold()]
    m = re.search(r"(?:category|label|verdict)\s*[:=]\s*\**\s*([^\s.,*\"]+)", text, flags=re.IGNORECASE)
    if m and m.group(1).casefold() in lower:
        return lower[m.group(1).casefold()]
    found = {c for c in categories if re.search(rf"\b{re.escape(c)}\b", text, flags=re.IGNORECASE)}
    return found.pop() if len(found) == 1 else None


def parse_criteria(text: str, criteria: list[str], scale: tuple[int, int]) -> dict[str, float | None]:
    obj = _json_obj(text) or {}
    crit = obj.get("criteria") if isinstance(obj.get("criteria"), dict) else obj
    out: dict[str, float | None] = {}
    for c in criteria:
        v = crit.get(c) if isinstance(crit, dict) else None
        try:
            out[c] = float(v) if v is not None and scale[0] <= float(v) <= scale[1] else None
        except (TypeError, ValueError):
            out[c] = None
    return out


TIE_WORDS = ("tie", "draw", "equal", "remíza", "nerozhodně", "[[c]]")


def parse_pairwise(text: str) -> str | None:
    """'A', 'B', 'tie' or None. Accepts JSON {"verdict": ...}, MT-Bench's [[A]]/[[B]]/[[C]], 'Verdict: A',
    'Response A is better'. An answer naming both or neither is unparseable."""
    obj = _json_obj(text)
    if obj:
        for k in ("verdict", "winner", "better", "choice"):
            v = obj.get(k)
            if isinstance(v, str):
                got = _verdict_word(v)
                if got:
                    return got
    m = re.search(r"\[\[\s*(A|B|C|tie)\s*\]\]", text, flags=re.IGNORECASE)
    if m:
        return _verdict_word(m.group(1).replace("C", "tie").replace("c", "tie"))
    m = re.search(r"(?:verdict|winner|answer|better)\s*(?:is)?\s*[:=]?\s*\**\s*\"?(response\s+|assistant\s+)?(A|B|tie)\b",
                  text, flags=re.IGNORECASE)
    if m:
        return _verdict_word(m.group(2))
    a = re.search(r"\b(?:response|assistant|answer)\s+A\b[^.]*\b(?:better|wins|preferred)", text, flags=re.IGNORECASE)
    b = re.search(r"\b(?:response|assistant|answer)\s+B\b[^.]*\b(?:better|wins|preferred)", text, flags=re.IGNORECASE)
    if bool(a) != bool(b):
        return "A" if a else "B"
    if any(w in text.casefold() for w in TIE_WORDS) and not (a or b):
        return "tie"
    stripped = text.strip().strip(".*\"'").upper()
    return stripped if stripped in ("A", "B") else None


def _verdict_word(v: str) -> str | None:
    v = v.strip().strip(".*\"'[]").casefold()
    if v in ("a", "response a", "assistant a"):
        return "A"
    if v in ("b", "response b", "assistant b"):
        return "B"
    if v in TIE_WORDS or v in ("c", "none", "both"):
        return "tie"
    return None


def combine_orders(first: str | None, second_swapped: str | None) -> tuple[str | None, bool]:
    """Merge the verdicts of (A, B) and (B, A) order into one about the original A/B.

    `second_swapped` is what the judge said when B was shown first, so its A means our B. Returns
    (verdict, consistent): disagreeing orders mean the judge followed position, not quality -> tie."""
    if first is None or second_swapped is None:
        return None, False
    second = {"A": "B", "B": "A", "tie": "tie"}[second_swapped]
    if first == second:
        return first, True
    return "tie", False


# ----------------------------------------------------------------------------- running
def read_items(path: str | Path, mode: str) -> list[dict[str, Any]]:
    from lmsmith.evaluate.tasks import read_records

    docs = read_records(Path(path).expanduser())
    need = ("prompt", "response") if mode == "absolute" else ("prompt", "response_a", "response_b")
    items = []
    for d in docs:
        f = dict(d.fields)
        if "prompt" not in f and "question" in f:
            f["prompt"] = f["question"]
        missing = [k for k in need if k not in f]
        if missing:
            raise LmsmithError(f"{d.source}: missing field '{missing[0]}' for {mode} judging",
                               f"each record needs {', '.join(need)} (and optionally reference, id)")
        f.setdefault("id", d.index)
        items.append(f)
    return items


def judge(items: list[dict[str, Any]], backend: Backend, cfg: JudgeConfig) -> dict[str, Any]:
    params = GenParams(max_tokens=cfg.tokens, temperature=0.0, seed=cfg.seed)
    if cfg.mode == "absolute":
        prompts = [absolute_prompt(it, cfg) for it in items]
    elif cfg.mode == "pairwise":
        prompts = [pairwise_prompt(it, cfg, swap) for it in items for swap in (False, True)]
    else:
        raise LmsmithError(f"unknown judge mode '{cfg.mode}'", "use absolute or pairwise")
    with progress_task(f"judge ({cfg.mode})", len(prompts)) as bar:
        outs = backend.generate(prompts, params, progress=bar)
    return summarize_absolute(items, outs, cfg) if cfg.mode == "absolute" else summarize_pairwise(items, outs, cfg)


def summarize_absolute(items: list[dict[str, Any]], outs: list[str], cfg: JudgeConfig) -> dict[str, Any]:
    rows = []
    for it, out in zip(items, outs):
        row: dict[str, Any] = {"id": it["id"], "raw": out}
        if cfg.categories:
            row["category"] = parse_category(out, cfg.categories)
            row["parsed"] = row["category"] is not None
        else:
            row["score"] = parse_score(out, cfg.scale)
            row["parsed"] = row["score"] is not None
            if cfg.criteria:
                row["criteria"] = parse_criteria(out, cfg.criteria, cfg.scale)
        rows.append(row)
    ok = [r for r in rows if r["parsed"]]
    summary: dict[str, Any] = {"mode": "absolute", "n": len(rows), "parsed": len(ok), "unparseable": len(rows) - len(ok),
                               "unparseable_ids": [r["id"] for r in rows if not r["parsed"]]}
    if cfg.categories:
        summary["categories"] = {c: sum(r["category"] == c for r in ok) for c in cfg.categories}
    elif ok:
        scores = [r["score"] for r in ok]
        summary["mean_score"] = float(np.mean(scores))
        summary["mean_score_ci"] = list(bootstrap_ci(scores, seed=cfg.seed))
        for c in cfg.criteria:
            vals = [r["criteria"][c] for r in ok if r["criteria"].get(c) is not None]
            summary[f"criterion/{c}"] = float(np.mean(vals)) if vals else None
    return {"summary": summary, "items": rows}


def summarize_pairwise(items: list[dict[str, Any]], outs: list[str], cfg: JudgeConfig) -> dict[str, Any]:
    rows = []
    for i, it in enumerate(items):
        first, second = parse_pairwise(outs[2 * i]), parse_pairwise(outs[2 * i + 1])
        verdict, consistent = combine_orders(first, second)
        rows.append({"id": it["id"], "verdict": verdict, "consistent": consistent, "order_ab": first, "order_ba": second,
                     "raw_ab": outs[2 * i], "raw_ba": outs[2 * i + 1], "parsed": verdict is not None})
    ok = [r for r in rows if r["parsed"]]
    wins = [1.0 if r["verdict"] == "A" else 0.5 if r["verdict"] == "tie" else 0.0 for r in ok]
    summary = {
        "mode": "pairwise", "n": len(rows), "parsed": len(ok), "unparseable": len(rows) - len(ok),
        "unparseable_ids": [r["id"] for r in rows if not r["parsed"]],
        "a_wins": sum(r["verdict"] == "A" for r in ok), "b_wins": sum(r["verdict"] == "B" for r in ok),
        "ties": sum(r["verdict"] == "tie" for r in ok),
        "position_inconsistent": sum(not r["consistent"] for r in ok),
        "win_rate_a": float(np.mean(wins)) if wins else None,
        "win_rate_a_ci": list(bootstrap_ci(wins, seed=cfg.seed)) if wins else None,
    }
    return {"summary": summary, "items": rows}


def read_human_labels(human_path: str | Path) -> dict[str, Any]:
    """Human labels by id; read (and checked) before any judging, so a bad file costs no judge time."""
    from lmsmith.evaluate.tasks import read_records

    human: dict[str, Any] = {}
    for d in read_records(Path(human_path).expanduser()):
        if "id" not in d.fields:
            raise LmsmithError(f"{d.source}: a human label needs an 'id' matching the judged item")
        label = next((d.fields[k] for k in ("label", "score", "verdict", "category") if k in d.fields), None)
        if label is None:
            raise LmsmithError(f"{d.source}: no human label", "give one of: label, score, verdict, category")
        human[str(d.fields["id"])] = label
    return human


def human_agreement(result: dict[str, Any], human: dict[str, Any], cfg: JudgeConfig) -> dict[str, Any]:
    """Match judge verdicts to human labels by id; kappa + agreement for labels, Spearman/Kendall for scores.
    Uses what is usable: unparseable verdicts and ids without a label are counted, not fatal."""
    key = "verdict" if cfg.mode == "pairwise" else ("category" if cfg.categories else "score")
    judged = {str(r["id"]) for r in result["items"]}
    pairs = [(r[key], human[str(r["id"])]) for r in result["items"] if r["parsed"] and str(r["id"]) in human]
    out: dict[str, Any] = {"n": len(pairs), "judged_without_label": len(judged - set(human)),
                           "labels_without_judged_item": len(set(human) - judged),
                           "unparseable_verdicts": sum(not r["parsed"] for r in result["items"])}
    if not pairs:
        out["error"] = "no parsed verdict has a human label with the same id"
        return out
    judge_l, human_l = [p[0] for p in pairs], [p[1] for p in pairs]
    if key == "score":
        hs = [float(h) for h in human_l]
        out.update(spearman=AG.spearman(judge_l, hs), kendall=AG.kendall(judge_l, hs),
                   agreement_rate=AG.agreement_rate([float(j) for j in judge_l], hs),
                   cohen_kappa=AG.cohen_kappa([float(j) for j in judge_l], hs))
    else:
        norm = (lambda v: _verdict_word(str(v)) or str(v)) if key == "verdict" else (lambda v: str(v).casefold())
        hl, jl = [norm(h) for h in human_l], [norm(j) for j in judge_l]
        out.update(cohen_kappa=AG.cohen_kappa(jl, hl), agreement_rate=AG.agreement_rate(jl, hl))
    return out


def write_judge_run(run_dir: Path, result: dict[str, Any]) -> None:
    (run_dir / "judge.json").write_text(json.dumps(result, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    s = result["summary"]
    lines = [f"# LLM-as-judge ({s['mode']})", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s.items() if k != "unparseable_ids"]
    if result.get("human_agreement"):
        lines += ["", "## Agreement with human labels", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in result["human_agreement"].items()]
    (run_dir / "judge.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
