"""Reward scorers behind one interface, named by a spec string on the command line:

- `rm:NAME`                      a reward model trained with `lmsmith train rm` (or any 1-label HF classifier)
- `judge:REF`                    an LLM judge (lmsmith.evaluate.judge's absolute grading) run locally
- `judge-endpoint:URL`           the same judge prompt sent to an OpenAI-compatible server (`--judge-model`)
- `verifier:module:function`     any Python function with TRL's reward signature
- `verifier:NAME`                a built-in verifier (exact_number, json_schema, tool_call)

`score(rows, completions)` returns one float per completion, or None where a scorer has no opinion (a judge
verdict that did not parse, a record without an answer); callers count those, never treat them as 0.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from lmsmith.data.preference import PromptRow, prompt_messages, render_answer
from lmsmith.errors import LmsmithError

SPEC_HINT = "use rm:NAME, judge:REF, judge-endpoint:URL, verifier:module:function or verifier:NAME"


class Scorer:
    name: str = "score"

    def score(self, rows: Sequence[PromptRow], completions: Sequence[str]) -> list[float | None]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class VerifierScorer(Scorer):
    def __init__(self, fn: Callable[..., Any], name: str):
        self.fn, self.name = fn, name

    def score(self, rows: Sequence[PromptRow], completions: Sequence[str]) -> list[float | None]:
        keys = sorted({k for r in rows for k in r.columns})
        columns = {k: [r.columns.get(k) for r in rows] for k in keys}
        try:
            out = self.fn([r.prompt for r in rows], list(completions), **columns)
        except Exception as e:
            raise LmsmithError(f"verifier {self.name} failed: {type(e).__name__}: {e}",
                               "it must accept (prompts, completions, **columns) and return one float per completion") from None
        out = list(out)
        if len(out) != len(completions):
            raise LmsmithError(f"verifier {self.name} returned {len(out)} scores for {len(completions)} completions")
        return [None if v is None else float(v) for v in out]


def load_verifier(target: str) -> VerifierScorer:
    from lmsmith.align.verifiers import BUILTIN

    if target in BUILTIN:
        return VerifierScorer(BUILTIN[target], target)
    mod_name, _, fn_name = target.rpartition(":")
    if not mod_name or not fn_name:
        raise LmsmithError(f"unknown verifier '{target}'",
                           f"give module:function, or one of the built-ins: {', '.join(BUILTIN)}")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise LmsmithError(f"cannot import verifier module '{mod_name}': {e}",
                           "put it on PYTHONPATH (or in the current directory)") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise LmsmithError(f"module '{mod_name}' has no function '{fn_name}'")
    return VerifierScorer(fn, fn_name)


class RewardModelScorer(Scorer):
    """A scalar-head classifier scoring prompt + answer rendered exactly as `train rm` rendered them."""

    def __init__(self, ref: str, device: str | None = None, batch_size: int = 16):
        from transformers import AutoModelForSequenceClassification

        from lmsmith.models import default_device, load_tokenizer, quiet_transformers, resolve

        quiet_transformers()
        h = resolve(ref)
        if h.kind == "adapter":
            raise LmsmithError(f"{h.ref} is an adapter, not a reward model", "train one with `lmsmith train rm`")
        self.device = torch.device(device or default_device())
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(h.dir, dtype=torch.float32).to(self.device).eval()
        except (OSError, ValueError) as e:
            raise LmsmithError(f"cannot load reward model {h.ref}: {str(e).splitlines()[0]}") from None
        if self.model.config.num_labels != 1:
            raise LmsmithError(f"{h.ref} has {self.model.config.num_labels} labels; a reward model has one",
                               "train one with `lmsmith train rm`")
        self.tokenizer = load_tokenizer(ref)
        self.batch_size = batch_size
        self.name = f"rm:{h.ref}"
        self.ref = h.ref

    @torch.no_grad()
    def score_ids(self, seqs: list[list[int]]) -> list[float]:
        pad = self.model.config.pad_token_id
        pad = pad if pad is not None else (self.tokenizer.pad_token_id or 0)
        out: list[float] = []
        for i in range(0, len(seqs), self.batch_size):
            chunk = seqs[i:i + self.batch_size]
            t = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), t), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, s in enumerate(chunk):
                ids[j, :len(s)] = torch.tensor(s)
                mask[j, :len(s)] = 1
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            out += logits[:, 0].float().tolist()
        return out

    def score(self, rows: Sequence[PromptRow], completions: Sequence[str]) -> list[float | None]:
        seqs = [render_answer(self.tokenizer, r.prompt, c, r.where, r.columns.get("tools")).input_ids
                for r, c in zip(rows, completions)]
        return list(self.score_ids(seqs))


class JudgeScorer(Scorer):
    """Absolute grading with the evaluate stage's judge prompt; an unparsable verdict scores None."""

    def __init__(self, backend: Any, name: str, scale: tuple[int, int] = (1, 10), rubric: str = ""):
        from lmsmith.evaluate.judge import JudgeConfig

        self.backend, self.name = backend, name
        self.cfg = JudgeConfig(mode="absolute", scale=scale, rubric=rubric, max_tokens=128)

    def score(self, rows: Sequence[PromptRow], completions: Sequence[str]) -> list[float | None]:
        from lmsmith.evaluate.backends import GenParams
        from lmsmith.evaluate.judge import absolute_prompt, parse_score

        items = [{"prompt": prompt_text(r.prompt), "response": c, "reference": r.columns.get("reference")}
                 for r, c in zip(rows, completions)]
        outs = self.backend.generate([absolute_prompt(it, self.cfg) for it in items],
                                     GenParams(max_tokens=self.cfg.max_tokens, temperature=0.0, seed=self.cfg.seed))
        return [parse_score(o, self.cfg.scale) for o in outs]


def prompt_text(prompt: Any) -> str:
    """The prompt as a judge reads it: the text, or the conversation's turns one per line."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m.get('content') or ''}" for m in prompt_messages(prompt))


@dataclass
class ScorerOptions:
    device: str | None = None
    judge_model: str | None = None  # model name the judge endpoint serves
    api_key: str | None = None
    judge_scale: tuple[int, int] = (1, 10)
    rubric: str = ""


def make_scorer(spec: str, opts: ScorerOptions | None = None) -> Scorer:
    opts = opts or ScorerOptions()
    kind, sep, target = spec.partition(":")
    if not sep or not target:
        raise LmsmithError(f"bad scorer '{spec}'", SPEC_HINT)
    if kind == "verifier":
        return load_verifier(target)
    if kind == "rm":
        return RewardModelScorer(target, opts.device)
    if kind == "judge":
        from lmsmith.evaluate.backends import make_backend

        return JudgeScorer(make_backend(target, chat=True, device=opts.device), spec, opts.judge_scale, opts.rubric)
    if kind == "judge-endpoint":
        from lmsmith.evaluate.backends import make_backend

        if not opts.judge_model:
            raise LmsmithError("judge-endpoint:URL needs --judge-model NAME", "the model name the server serves")
        return JudgeScorer(make_backend(endpoint=target, api_model=opts.judge_model, api_key=opts.api_key, chat=True),
                           spec, opts.judge_scale, opts.rubric)
    raise LmsmithError(f"unknown scorer kind '{kind}' in '{spec}'", SPEC_HINT)


def check_spec(spec: str) -> None:
    """Cheap syntax check before any model loads."""
    kind, sep, target = spec.partition(":")
    if not sep or not target or kind not in ("verifier", "rm", "judge", "judge-endpoint"):
        raise LmsmithError(f"bad scorer '{spec}'", SPEC_HINT)
