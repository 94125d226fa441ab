"""Our engine as a `lmsmith synth` backend: every request of a batch goes into the engine at once
(continuous batching), each answer is handed back the moment its sequence finishes, so the synth cache keeps
everything answered even if the run is killed mid-batch. JSON schemas are enforced by constrained decoding.

serve implements the protocol that `lmsmith.data.synth.backends` defines; data never imports serve.
"""

from __future__ import annotations

import itertools
from typing import Any

from lmsmith.data.chat import chat_ids
from lmsmith.data.synth.backends import OnReply, Reply, Request
from lmsmith.errors import LmsmithError
from lmsmith.serve.llm import LLM
from lmsmith.serve.sampling_params import SamplingParams


class EngineBackend:
    def __init__(self, ref: str, dtype: str = "auto", device: str | None = None, max_num_seqs: int = 64,
                 llm: LLM | None = None, **engine_kwargs: Any):
        from lmsmith.models import resolve

        self.llm = llm or LLM(ref, dtype=dtype, device=device, max_num_seqs=max_num_seqs, **engine_kwargs)
        self.engine = self.llm.engine
        self.tokenizer = self.llm.tokenizer
        if not getattr(self.tokenizer, "chat_template", None):
            raise LmsmithError(f"model {ref} has no chat template, so it cannot answer chat prompts",
                               "use an instruct/chat model for synth")
        self.model = resolve(ref).ref  # name@version: a new version is a new model for the cache
        self.backend_id = f"engine:{self.engine.device.type}:{dtype}"
        self._ids = itertools.count()

    def render(self, messages: list[dict[str, Any]]) -> list[int]:
        """The one safe chat renderer: text in the records never becomes control tokens."""
        return chat_ids(self.tokenizer, messages, add_generation_prompt=True)

    def run(self, requests: list[Request], on_reply: OnReply) -> None:
        live: dict[str, int] = {}
        for i, req in enumerate(requests):
            s = req.sampling
            params = SamplingParams(max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p, seed=s.seed,
                                    json_schema=s.json_schema)
            rid = f"synth-{next(self._ids)}"
            try:
                self.engine.add_request(rid, self.render(req.messages), params)
            except LmsmithError as e:
                on_reply(i, e)
                continue
            live[rid] = i
        while self.engine.has_unfinished():
            for out in self.engine.step():
                if out.finished and out.request_id in live:
                    i = live.pop(out.request_id)
                    on_reply(i, Reply(out.text, out.finish_reason, len(out.prompt_token_ids), len(out.token_ids)))

    def close(self) -> None:
        self.llm.close()
