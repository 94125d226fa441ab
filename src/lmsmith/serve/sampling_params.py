"""Per-request decoding settings (the OpenAI / vLLM knobs), validated up front so bad values fail as 400s."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from lmsmith.errors import LmsmithError

MAX_TOP_LOGPROBS = 20


@dataclass
class SamplingParams:
    """How to decode one request. `temperature=0` is greedy; `n` samples each become their own sequence.

    `logprobs` (True or an int) turns on per-token logprobs; the number of alternatives per token is
    `top_logprobs`, or the int given as `logprobs` (the completions API style) when `top_logprobs` is unset.
    `json_schema` / `json_object` constrain the output to JSON during decoding (token masking).
    """

    max_tokens: int | None = 16
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    n: int = 1
    stop: list[str] | str | None = field(default_factory=list)
    stop_token_ids: list[int] | None = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: bool | int | None = None
    top_logprobs: int | None = 0
    json_schema: dict[str, Any] | None = None
    json_object: bool = False
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def wants_logprobs(self) -> bool:
        return self.logprobs is not None and self.logprobs is not False

    @property
    def num_top_logprobs(self) -> int:
        if not self.wants_logprobs:
            return 0
        if self.top_logprobs:
            return int(self.top_logprobs)
        if isinstance(self.logprobs, int) and not isinstance(self.logprobs, bool):
            return int(self.logprobs)
        return 0

    @property
    def structured(self) -> bool:
        return self.json_schema is not None or self.json_object

    def validate(self) -> "SamplingParams":
        """Raise LmsmithError naming the first invalid field; return self so calls chain."""
        def bad(name: str, value: Any, rule: str) -> LmsmithError:
            return LmsmithError(f"invalid sampling parameter {name}={value!r}: {rule}")

        def finite(name: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad(name, value, "must be a finite number")
            return float(value)

        if self.max_tokens is not None and (isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int)
                                            or self.max_tokens < 1):
            raise bad("max_tokens", self.max_tokens, "must be an integer >= 1")
        if not 0.0 <= finite("temperature", self.temperature) <= 100.0:
            raise bad("temperature", self.temperature, "must be between 0 and 100")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < -1:
            raise bad("top_k", self.top_k, "must be an integer >= 0 (0 or -1 = off)")
        if not 0.0 < finite("top_p", self.top_p) <= 1.0:
            raise bad("top_p", self.top_p, "must be in (0, 1]")
        if not 0.0 <= finite("min_p", self.min_p) <= 1.0:
            raise bad("min_p", self.min_p, "must be in [0, 1]")
        if finite("repetition_penalty", self.repetition_penalty) <= 0.0:
            raise bad("repetition_penalty", self.repetition_penalty, "must be > 0 (1 = off)")
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2.0 <= finite(name, getattr(self, name)) <= 2.0:
                raise bad(name, getattr(self, name), "must be between -2 and 2")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise bad("seed", self.seed, "must be an integer")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or not 1 <= self.n <= 128:
            raise bad("n", self.n, "must be an integer between 1 and 128")
        if self.n > 1 and self.greedy and self.seed is None:
            pass  # allowed: n identical greedy samples, as in vLLM
        if not all(isinstance(s, str) and s for s in self.stop):
            raise bad("stop", self.stop, "must be non-empty strings")
        if len(self.stop) > 16:
            raise bad("stop", self.stop, "at most 16 stop strings")
        if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in self.stop_token_ids):
            raise bad("stop_token_ids", self.stop_token_ids, "must be non-negative token ids")
        if self.logprobs is not None and not isinstance(self.logprobs, (bool, int)):
            raise bad("logprobs", self.logprobs, "must be a boolean or an integer")
        if isinstance(self.logprobs, int) and not isinstance(self.logprobs, bool) \
                and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            raise bad("logprobs", self.logprobs, f"must be between 0 and {MAX_TOP_LOGPROBS}")
        if self.top_logprobs is not None and (isinstance(self.top_logprobs, bool) or not isinstance(self.top_logprobs, int)
                                              or not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS):
            raise bad("top_logprobs", self.top_logprobs, f"must be an integer between 0 and {MAX_TOP_LOGPROBS}")
        if self.json_schema is not None and not isinstance(self.json_schema, dict):
            raise bad("json_schema", type(self.json_schema).__name__, "must be a JSON schema object (a dict)")
        return self
