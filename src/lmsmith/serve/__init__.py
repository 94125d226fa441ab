"""The serve stage: our inference engine (`Engine`, `LLM`) and the OpenAI-compatible server."""

from __future__ import annotations

from typing import Any

__all__ = ["LLM", "SamplingParams", "Engine", "RequestOutput"]


def __getattr__(name: str) -> Any:  # lazy: `import lmsmith.serve` stays cheap for the CLI
    if name == "SamplingParams":
        from lmsmith.serve.sampling_params import SamplingParams

        return SamplingParams
    if name in ("LLM", "Completion", "CompletionOutput"):
        from lmsmith.serve import llm

        return getattr(llm, name)
    if name in ("Engine", "RequestOutput"):
        from lmsmith.serve import engine

        return getattr(engine, name)
    raise AttributeError(name)
