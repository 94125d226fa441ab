"""Self-curation of chat records: length and language filters, exact and MinHash near-duplicate removal
(`data/dedup.py`), then a judge scoring each survivor 1-5 on a rubric; records below the threshold are dropped.

The judge is any object with `prompt(instruction, response)`, `parse(text) -> (score | None, reason)` and an
optional `json_schema` for its verdict; `lmsmith synth curate` builds it from `lmsmith.evaluate.judge`. Its calls
go through the same cached `Caller` as generation, so a killed curation resumes like any synth run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from lmsmith.data.synth.backends import Request, Sampling
from lmsmith.data.synth.runner import Caller, ChunkResult, Item
from lmsmith.data.synth.templates import template_hash
from lmsmith.errors import LmsmithError

# The 5-point scale of instruction backtranslation's self-curation, in our words.
RUBRIC = """Judge whether the response is a good example of how an AI assistant should answer the user's instruction.
1: incomplete, vague, off-topic, harmful, or not what the user asked for; or the instruction itself makes no sense.
2: addresses most of the request but misses a key part or answers it only partly.
3: helpful and answers the request, but reads like a text copied from elsewhere (a blog, a web page, an ad)
   rather than an answer written for this user.
4: written from an assistant's point of view to answer this instruction, complete and well organized; small gaps in focus, concision or style.
5: a perfect assistant answer: focused on the request, expert, correct, well written, nothing irrelevant."""

VERDICT_SCHEMA = {"type": "object", "properties": {"reason": {"type": "string", "maxLength": 300},
                                                   "score": {"type": "integer", "minimum": 1, "maximum": 5}},
                  "required": ["reason", "score"]}


class Judge(Protocol):
    json_schema: dict[str, Any] | None
    template: str  # what the judge prompt is made of (for the cache key)

    def prompt(self, instruction: str, response: str) -> str: ...

    def parse(self, text: str) -> tuple[float | None, str]: ...


@dataclass
class CurateOptions:
    min_chars: int = 1
    max_chars: int | None = None
    language: str | None = None
    min_lang_prob: float = 0.5
    lang_candidates: tuple[str, ...] = ()
    exact_dedup: bool = True
    near_dedup: bool = True
    near_threshold: float = 0.8
    threshold: float = 4.0


def split_record(rec: dict[str, Any], where: Any) -> tuple[str, str]:
    """(instruction, response) of a chat record: everything before the last assistant turn, and that turn."""
    msgs = rec.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise LmsmithError(f"record {where} has no 'messages'", "curate reads chat JSONL (e.g. the output of synth generate)")
    last = max((i for i, m in enumerate(msgs) if isinstance(m, dict) and m.get("role") == "assistant"), default=None)
    if last is None:
        raise LmsmithError(f"record {where} has no assistant turn to judge")
    before = [m for m in msgs[:last] if isinstance(m, dict)]
    if len(before) == 1:
        instruction = str(before[0].get("content") or "")
    else:
        lines = []
        for m in before:
            text = m.get("content") or ""
            if m.get("tool_calls"):
                text = (text + " " if text else "") + " ".join(
                    f"[call {c.get('function', {}).get('name')}({c.get('function', {}).get('arguments')})]" for c in m["tool_calls"])
            lines.append(f"{m.get('role')}: {text}")
        instruction = "\n".join(lines)
    return instruction, str(msgs[last].get("content") or "")


def prefilter(items: list[Item], opts: CurateOptions) -> tuple[list[Item], ChunkResult]:
    """Length, language, exact and near duplicates, in that order (cheap first). Returns survivors and rejects."""
    from lmsmith.data.dedup import MinHasher, NearDedup
    from lmsmith.data.normalize import text_hash

    res = ChunkResult()
    kept: list[Item] = []
    seen: set[int] = set()
    hasher = MinHasher() if opts.near_dedup else None
    near = NearDedup(opts.near_threshold) if opts.near_dedup else None
    first_of: dict[int, Any] = {}
    for it in items:
        instruction, response = split_record(it.record, it.source_id)
        n = len(response.strip())
        if n < opts.min_chars:
            res.reject(it, "length", f"response shorter than {opts.min_chars} characters ({n})")
            continue
        if opts.max_chars and n > opts.max_chars:
            res.reject(it, "length", f"response longer than {opts.max_chars} characters ({n})")
            continue
        text = f"{instruction}\n{response}"
        if opts.language:
            from lmsmith.data.langid import detect

            lang, prob = detect(text, tuple(opts.lang_candidates))
            if lang != opts.language or prob < opts.min_lang_prob:
                res.reject(it, "language", f"language {lang} ({prob:.2f}), wanted {opts.language}")
                continue
        if opts.exact_dedup:
            h = text_hash(text)
            if h in seen:
                res.reject(it, "exact_dedup", "exact duplicate")
                continue
            seen.add(h)
        if near is not None and hasher is not None:
            idx = len(first_of)
            other = near.add(idx, hasher.signature(text))
            if other is not None:
                res.reject(it, "near_dedup", f"near duplicate of {first_of[other]}")
                continue
            first_of[idx] = it.source_id
        kept.append(it)
    res.steps["prefilter/kept"] = len(kept)
    return kept, res


@dataclass
class JudgeStep:
    """The chunk generator of `synth curate`: score each record, keep those at or above the threshold."""

    judge: Judge | None
    threshold: float = 4.0
    max_tokens: int = 256
    seed: int = 0
    name: ClassVar[str] = "curate"

    def template_hashes(self) -> dict[str, str]:
        return {"judge": template_hash(self.judge.template)} if self.judge else {}

    def process(self, items: list[Item], caller: Caller) -> ChunkResult:
        res = ChunkResult()
        if self.judge is None:
            res.records = [it.record for it in items]
            return res
        pairs = [split_record(it.record, it.source_id) for it in items]
        thash = template_hash(self.judge.template)
        replies = caller.call_many([Request([{"role": "user", "content": self.judge.prompt(ins, resp)}],
                                            Sampling(temperature=0.0, max_tokens=self.max_tokens, seed=self.seed,
                                                     json_schema=self.judge.json_schema), thash)
                                    for ins, resp in pairs])
        scores: Counter = Counter()
        for it, r in zip(items, replies):
            if isinstance(r, Exception):
                res.failed += 1
                res.steps["judge/failed"] += 1
                continue
            score, reason = self.judge.parse(r.text)
            if score is None:
                res.reject(it, "judge", "unparseable verdict", raw=r.text[:300])
                continue
            scores[int(score)] += 1
            if score < self.threshold:
                res.reject(it, "judge", f"score {score:g} < {self.threshold:g}", score=score, score_reason=reason)
                continue
            res.steps["judge/kept"] += 1
            rec = dict(it.record)
            rec["metadata"] = {**(rec.get("metadata") or {}), "score": score, "score_reason": reason,
                               "judge": caller.model}
            res.records.append(rec)
        for s, n in scores.items():
            res.steps[f"judge/score_{s}"] += n
        return res
