"""One generated sample: its tokens, KV blocks, progress through prefill/decode, and its output so far."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from lmsmith.serve.sampling_params import SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class RequestMetrics:
    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finish_time: float | None = None
    token_times: list[float] = field(default_factory=list)  # wall time each output token was produced


class Sequence:
    """Tokens = prompt + generated. `num_computed` tokens already have K/V in the cache."""

    def __init__(self, request_id: str, index: int, prompt_ids: list[int], params: SamplingParams,
                 arrival_time: float | None = None):
        self.request_id = request_id
        self.index = index
        self.prompt_ids = list(prompt_ids)
        self.tokens = list(prompt_ids)
        self.params = params
        self.status = Status.WAITING
        self.block_table: list[int] = []
        self.num_computed = 0
        self.num_hashed_blocks = 0  # leading blocks whose hashes are registered in the prefix cache
        self.num_cached_tokens = 0  # prompt tokens served from the prefix cache at first admission
        self.admitted_once = False
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None
        self.metrics = RequestMetrics(arrival_time if arrival_time is not None else time.time())
        # output state (filled by the engine)
        self.text = ""
        self.emitted_chars = 0
        self.emitted_tokens = 0
        self.logprobs: list[dict[str, Any]] | None = [] if params.wants_logprobs else None
        self.prefix_offset = 0
        self.read_offset = 0
        self.generator: Any = None
        self.matcher: Any = None
        self.token_counts: dict[int, int] = {}
        self.wait_for: "Sequence | None" = None  # n>1 siblings wait until sample 0 has computed the prompt

    @property
    def key(self) -> tuple[str, int]:
        return (self.request_id, self.index)

    @property
    def output_ids(self) -> list[int]:
        return self.tokens[len(self.prompt_ids):]

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def num_output(self) -> int:
        return len(self.tokens) - len(self.prompt_ids)

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED

    def append(self, token: int) -> None:
        self.tokens.append(token)
        self.token_counts[token] = self.token_counts.get(token, 0) + 1
