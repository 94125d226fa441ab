"""Offline batch API: `LLM(ref).generate(prompts, SamplingParams(...))`, like vLLM's, on our engine."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any
from typing import Sequence as Seq

from lmsmith.data.chat import chat_ids
from lmsmith.errors import LmsmithError
from lmsmith.serve.engine import Engine
from lmsmith.serve.process_tuning import frozen_while
from lmsmith.serve.sampling_params import SamplingParams


@dataclass
class CompletionOutput:
    index: int
    token_ids: list[int]
    text: str
    finish_reason: str | None
    stop_reason: str | int | None = None
    logprobs: list[dict[str, Any]] | None = None
    token_times: list[float] = field(default_factory=list)  # seconds since arrival, one per token


@dataclass
class Completion:
    prompt: str | list[int]
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    ttft: float | None  # seconds from arrival to the first token (first sample)
    token_times: list[float]  # seconds since arrival for each token of the first sample
    num_cached_tokens: int = 0
    e2e: float | None = None


class LLM:
    def __init__(self, model_ref: str, dtype: str = "auto", **engine_kwargs: Any):
        self.engine = Engine(model_ref, dtype=dtype, **engine_kwargs)
        self.engine.incremental_text = False  # results only: decode each output once, at its end
        self.tokenizer = self.engine.tokenizer
        self._ids = itertools.count()

    def close(self) -> None:
        """Stop tensor-parallel workers now (otherwise at interpreter exit)."""
        self.engine.close()

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def generate(self, prompts: str | list[int] | Seq[str | list[int]],
                 params: SamplingParams | Seq[SamplingParams] | None = None, use_tqdm: bool = True) -> list[Completion]:
        """Run all prompts through the engine at once (continuous batching); results are in prompt order."""
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        prompts = list(prompts)  # type: ignore[arg-type]
        if params is None:
            params = SamplingParams()
        plist = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise LmsmithError(f"got {len(plist)} SamplingParams for {len(prompts)} prompts", "pass one, or one per prompt")
        rids = [f"llm-{next(self._ids)}" for _ in prompts]
        for rid, prompt, p in zip(rids, prompts, plist):
            self.engine.add_request(rid, prompt, p)
        final: dict[tuple[str, int], Any] = {}
        logprobs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        total = sum(p.n for p in plist)
        ctx = _progress(total) if use_tqdm else _null_progress()
        with ctx as advance, frozen_while():
            while self.engine.has_unfinished():
                for out in self.engine.step():
                    if out.logprobs:
                        logprobs.setdefault((out.request_id, out.index), []).extend(out.logprobs)
                    if out.finished:
                        final[(out.request_id, out.index)] = out
                        advance(1)
        results = []
        for rid, prompt, p in zip(rids, prompts, plist):
            outs = [final[(rid, i)] for i in range(p.n)]
            arrival = outs[0].metrics.arrival_time
            comps = [CompletionOutput(o.index, list(o.token_ids), o.text, o.finish_reason, o.stop_reason,
                                      None if o.logprobs is None else logprobs.get((rid, o.index), []),
                                      [t - arrival for t in o.metrics.token_times]) for o in outs]
            m = outs[0].metrics
            results.append(Completion(
                prompt=prompt, prompt_token_ids=list(outs[0].prompt_token_ids), outputs=comps,
                ttft=(m.first_token_time - arrival) if m.first_token_time else None,
                token_times=comps[0].token_times, num_cached_tokens=outs[0].num_cached_tokens,
                e2e=(m.finish_time - arrival) if m.finish_time else None))
        return results

    def chat(self, conversations: list[dict[str, Any]] | list[list[dict[str, Any]]],
             params: SamplingParams | Seq[SamplingParams] | None = None, tools: list[dict[str, Any]] | None = None,
             use_tqdm: bool = True) -> list[Completion]:
        """Apply the chat template (with `tools` if given) to each conversation, then generate."""
        if conversations and isinstance(conversations[0], dict):
            conversations = [conversations]  # type: ignore[list-item]
        if not self.tokenizer.chat_template:
            raise LmsmithError("this model's tokenizer has no chat template", "use generate() with plain prompts")
        prompts = []
        for conv in conversations:
            prompts.append(chat_ids(self.tokenizer, conv, tools or None, add_generation_prompt=True))
        return self.generate(prompts, params, use_tqdm=use_tqdm)


class _null_progress:
    def __enter__(self):
        return lambda *a, **k: None

    def __exit__(self, *exc):
        return False


def _progress(total: int):
    from lmsmith.progress import task

    return task("generate", total)
