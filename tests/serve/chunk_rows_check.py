"""Run by test_decode_attention.py in a subprocess with TRITON_INTERPRET=1: chunks after cached tokens (prefix-cache
hits) attended as rows of the paged decode kernel (the CUDA path, here with Triton's interpreter standing in for the
GPU) give the same greedy tokens and log-probabilities as the per-chunk SDPA path. Prints "ok ..." lines or raises."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

assert os.environ.get("TRITON_INTERPRET") == "1", "run under TRITON_INTERPRET=1"


import lmsmith.serve.paged_decode as pd  # noqa: E402

pd.available = lambda device: True  # the CUDA attention path, on CPU tensors (before the runner imports it)

from lmsmith.serve import SamplingParams  # noqa: E402
from lmsmith.serve.engine import Engine  # noqa: E402
from lmsmith.tiny import build_tiny  # noqa: E402


def run(model: Path, chunk_rows: int) -> list:
    eng = Engine(str(model), dtype="float32", device="cpu", max_num_seqs=4, max_num_batched_tokens=256,
                 async_scheduling=False)
    eng.runner.chunk_rows = chunk_rows
    converted = []
    execute = eng.runner.execute

    def spy(batch, *a, **k):
        converted.extend(s.num_tokens for s in batch if s.start and 1 < s.num_tokens <= chunk_rows)
        return execute(batch, *a, **k)
    eng.runner.execute = spy
    base = list(range(5, 45))  # 40 tokens: two full 16-token blocks land in the prefix cache
    sp = SamplingParams(max_tokens=1, temperature=0.0)
    eng.add_request("warm", base, sp)
    while eng.has_unfinished():
        eng.step()
    outs = {}
    sp = SamplingParams(max_tokens=6, temperature=0.0, logprobs=2)
    for i, extra in enumerate(([50, 51, 52], list(range(60, 78)))):  # chunks of 11 and 26 tokens after the hit
        eng.add_request(f"r{i}", base + extra, sp)
    lps: dict[str, list] = {}
    while eng.has_unfinished():
        for o in eng.step():
            lps.setdefault(o.request_id, []).extend(o.logprobs or [])
            if o.finished:
                outs[o.request_id] = (list(o.token_ids), lps[o.request_id])
    if chunk_rows:
        assert sorted(converted) == [11, 26], converted  # both prefix hits took the decode-row path
    return [outs[k] for k in sorted(outs)]


def main() -> int:
    model = build_tiny(Path(tempfile.mkdtemp()) / "tiny", "llama")
    want = run(model, 0)
    got = run(model, 32)
    for (gt, gl), (wt, wl) in zip(got, want):
        assert gt == wt, (gt, wt)
        assert len(gl) == len(wl) == len(gt)
        err = max(abs(a["logprob"] - b["logprob"]) for a, b in zip(gl, wl))  # each sampled token's log-probability
        assert err < 1e-4, err
        print(f"ok chunk-rows {gt} {err:.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
