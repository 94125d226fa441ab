"""JSON output enforced while decoding: llguidance compiles the JSON schema to a grammar and masks every token
that could not continue a valid document, so the result always parses and validates."""

from __future__ import annotations

from typing import Any

import torch

from lmsmith.errors import LmsmithError

JSON_OPTIONS = {"whitespace_flexible": False}  # compact JSON: no runaway whitespace from weak models


def close_objects(schema: Any) -> Any:
    """Objects that don't say otherwise get `additionalProperties: false` (as in OpenAI's strict mode): the model
    writes only the declared keys, so it cannot ramble through extra ones and run out of tokens mid-document.
    Anything generated this way still validates against the original schema."""
    if isinstance(schema, list):
        return [close_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: close_objects(v) if k not in ("enum", "const", "default", "examples") else v for k, v in schema.items()}
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out \
            and "patternProperties" not in out:
        out["additionalProperties"] = False
    return out


class GrammarCompiler:
    """One per engine: wraps the tokenizer for llguidance once (about a second for a large vocabulary)."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_token_ids: list[int]):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.eos_token_ids = eos_token_ids
        self._lltok = None

    def _ll_tokenizer(self):
        if self._lltok is None:
            import llguidance.hf

            self._lltok = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab_size,
                                                      eos_token=self.eos_token_ids[0] if self.eos_token_ids else None)
        return self._lltok

    def matcher(self, json_schema: dict[str, Any] | None, json_object: bool):
        """A fresh matcher for one sequence; raises LmsmithError for a schema it cannot compile."""
        import llguidance

        schema = close_objects(json_schema) if json_schema is not None else {"type": "object"}
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
        except (ValueError, TypeError) as e:
            raise LmsmithError(f"invalid JSON schema: {e}") from None
        is_err, msgs = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self._ll_tokenizer())
        if is_err:
            raise LmsmithError(f"unsupported JSON schema: {msgs[0] if msgs else 'unknown error'}",
                               "simplify the schema (see llguidance's JSON schema support)")
        m = llguidance.LLMatcher(self._ll_tokenizer(), grammar, log_level=0)
        if m.is_error():
            raise LmsmithError(f"unsupported JSON schema: {m.get_error()}")
        return m

    def mask(self, matcher, device: torch.device) -> torch.Tensor:
        """Bool [vocab] of tokens the grammar allows next."""
        words = torch.frombuffer(bytearray(matcher.compute_bitmask()), dtype=torch.int32)
        bits = (words[:, None] >> torch.arange(32, dtype=torch.int32)[None, :]) & 1
        return bits.flatten()[:self.vocab_size].bool().to(device)
