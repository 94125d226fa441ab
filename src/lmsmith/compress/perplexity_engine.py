"""Perplexity through the serving engine's own forward pass (native runner, quantized kernels as served).

`perplexity.perplexity` scores a transformers model; a quantized checkpoint served by the engine runs other
code (fused quantized QKV / gate-up, Triton GEMVs on CUDA, our attention), so the quality guard checks
that path too: teacher-forced logits for every position of a prompt, one prefill per chunk.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lmsmith.compress.perplexity import Perplexity
from lmsmith.errors import LmsmithError


def load_engine_runner(ref: str, dtype: str = "auto", device: str | None = None):
    from lmsmith.serve.loader import load_runner

    runner, _, limit = load_runner(ref, dtype, device, None, allow_fallback=False)
    runner.use_cuda_graphs = False  # one-off prefills: no decode graphs to capture
    return runner, limit


@torch.inference_mode()
def runner_logits(runner, ids: list[int]) -> torch.Tensor:
    """float32 logits [T, vocab] of one prefill of `ids` (fresh cache)."""
    from lmsmith.serve.attention import AttentionMetadata, PrefillChunk

    t, bs = len(ids), 16
    nb = -(-t // bs)
    runner.allocate_kv(nb, bs, max_num_seqs=1)
    dev = runner.device
    pos = torch.arange(t, device=dev)
    meta = AttentionMetadata(slot_mapping=pos.clone(), decode_rows=None, decode_block_tables=None,
                             decode_context_lens=None, prefills=[PrefillChunk(0, t, 0, torch.arange(nb, device=dev))],
                             block_size=bs, sliding_window=runner.spec.sliding_window, positions=pos)
    cos, sin = (runner.cos, runner.sin) if runner.model.fused else (runner.cos[pos], runner.sin[pos])
    return runner.model(torch.tensor(ids, device=dev), cos, sin, runner.kv_cache, meta, None).float()


def engine_logits(ref: str, ids: list[int], dtype: str = "auto", device: str | None = None) -> torch.Tensor:
    runner, limit = load_engine_runner(ref, dtype, device)
    if len(ids) > limit:
        raise LmsmithError(f"{len(ids)} tokens exceed the model's context of {limit}")
    return runner_logits(runner, ids)


def engine_perplexity(ref: str, text: str, max_length: int = 1024, dtype: str = "auto",
                      device: str | None = None) -> Perplexity:
    """Perplexity of `text` under the engine, in independent chunks of `max_length` tokens."""
    from lmsmith.models import load_tokenizer

    ids = load_tokenizer(ref)(text, add_special_tokens=False)["input_ids"]
    if len(ids) < 2:
        raise LmsmithError("the text is too short to measure perplexity", "use at least a few sentences")
    runner, limit = load_engine_runner(ref, dtype, device)
    max_length = min(max_length, limit)
    nll, n = 0.0, 0
    for start in range(0, len(ids) - 1, max_length):
        chunk = ids[start:start + max_length]
        if len(chunk) < 2:
            break
        logits = runner_logits(runner, chunk)
        nll += F.cross_entropy(logits[:-1], torch.tensor(chunk[1:], device=logits.device), reduction="sum").item()
        n += len(chunk) - 1
    return Perplexity(ppl=math.exp(nll / n), nll=nll / n, tokens=n)
