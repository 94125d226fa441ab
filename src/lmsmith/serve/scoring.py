"""Scoring through the serving engine's own forward pass: teacher-forced logits for every position of a prompt.

A quantized checkpoint served by the engine runs other code than transformers (fused quantized QKV / gate-up,
Triton GEMVs on CUDA, our attention), so quality checks score that path too. This is the engine's public
scoring call: nothing outside `serve/` needs its runner.
"""

from __future__ import annotations

import torch

from lmsmith.errors import LmsmithError
from lmsmith.evaluate.perplexity import Perplexity, windowed_perplexity
from lmsmith.models import ResolvedModel, load_tokenizer, resolve_model
from lmsmith.serve.attention import AttentionMetadata, PrefillChunk
from lmsmith.serve.loader import load_runner


class Scorer:
    """A model loaded on the engine's native runner for scoring (one prefill per call, a fresh KV cache each)."""

    def __init__(self, ref: str | ResolvedModel, dtype: str = "auto", device: str | None = None):
        self.model = resolve_model(ref)
        self.runner, _, self.max_length = load_runner(self.model, dtype, device, None, allow_fallback=False)
        self.runner.use_cuda_graphs = False  # one-off prefills: no decode graphs to capture

    @torch.inference_mode()
    def logits(self, ids: list[int] | torch.Tensor) -> torch.Tensor:
        """float32 logits [T, vocab] of one prefill of `ids`."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        t, bs = ids.numel(), 16
        if t > self.max_length:
            raise LmsmithError(f"{t} tokens exceed the model's context of {self.max_length}")
        runner = self.runner
        nb = -(-t // bs)
        runner.allocate_kv(nb, bs, max_num_seqs=1)
        dev = runner.device
        pos = torch.arange(t, device=dev)
        meta = AttentionMetadata(slot_mapping=pos.clone(), decode_rows=None, decode_block_tables=None,
                                 decode_context_lens=None,
                                 prefills=[PrefillChunk(0, t, 0, torch.arange(nb, device=dev))],
                                 block_size=bs, sliding_window=runner.spec.sliding_window, positions=pos)
        cos, sin = (runner.cos, runner.sin) if runner.model.fused else (runner.cos[pos], runner.sin[pos])
        return runner.model(ids.to(dev), cos, sin, runner.kv_cache, meta, None).float()

    def perplexity(self, text: str, max_length: int = 1024) -> Perplexity:
        """Perplexity of `text` in independent chunks of `max_length` tokens (evaluate's implementation)."""
        ids = load_tokenizer(self.model)(text, add_special_tokens=False)["input_ids"]
        return windowed_perplexity(ids, self.logits, min(max_length, self.max_length))


def engine_logits(ref: str | ResolvedModel, ids: list[int], dtype: str = "auto", device: str | None = None
                  ) -> torch.Tensor:
    return Scorer(ref, dtype, device).logits(ids)


def engine_perplexity(ref: str | ResolvedModel, text: str, max_length: int = 1024, dtype: str = "auto",
                      device: str | None = None) -> Perplexity:
    return Scorer(ref, dtype, device).perplexity(text, max_length)
