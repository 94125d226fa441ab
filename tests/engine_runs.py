"""Drive an engine until its requests finish (CPU and GPU tests, and the Triton-interpreter checks, which put this
directory on their path)."""

from __future__ import annotations

from typing import Any


def run_all(engine: Any, prompts: list, params: Any) -> dict[tuple[str, int], list[int]]:
    """Add `prompts` as requests r0, r1, ... (`params`: one SamplingParams, or one per prompt), step until all have
    finished; {(request id, sample index): token ids}."""
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", p, params[i] if isinstance(params, list) else params)
    done = {}
    while engine.has_unfinished():
        for o in engine.step():
            if o.finished:
                done[(o.request_id, o.index)] = o.token_ids
    return done
