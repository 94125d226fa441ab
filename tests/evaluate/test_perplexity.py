"""One perplexity implementation: windows score every token once; the engine and transformers agree on it."""

from __future__ import annotations

import math

import pytest
import torch

from lmsmith.errors import LmsmithError
from lmsmith.evaluate.metrics import perplexity_metrics
from lmsmith.evaluate.perplexity import perplexity, windowed_perplexity
from lmsmith.models import load_model, load_tokenizer

TEXT = "Praha je hlavní město České republiky. Warszawa jest stolicą Polski. " * 6


def full_nll(model, ids: torch.Tensor) -> float:
    logits = model(ids[None]).logits[0, :-1]
    return torch.nn.functional.cross_entropy(logits, ids[1:]).item()


def test_one_window_is_plain_cross_entropy_and_sliding_scores_each_token_once(tiny_dir):
    model, tok = load_model(str(tiny_dir), device="cpu"), load_tokenizer(str(tiny_dir))
    ids = tok(TEXT, return_tensors="pt", add_special_tokens=False).input_ids[0]
    whole = perplexity(model, tok, TEXT, max_length=4096)
    assert whole.tokens == ids.numel() - 1 and whole.nll == pytest.approx(full_nll(model, ids), rel=1e-5)
    sliding = perplexity(model, tok, TEXT, max_length=32, stride=8)
    chunks = windowed_perplexity(ids, lambda w: model(w[None]).logits[0], max_length=32)
    assert sliding.tokens == whole.tokens  # every token after the first, once
    assert chunks.tokens == ids.numel() - math.ceil(ids.numel() / 32)  # a chunk's first token has no context
    assert whole.ppl == pytest.approx(math.exp(whole.nll))
    with pytest.raises(LmsmithError, match="too short"):
        windowed_perplexity([5], lambda w: model(w[None]).logits[0])


def test_engine_scoring_matches_transformers(tiny_dir):
    from lmsmith.serve.scoring import Scorer

    scorer = Scorer(str(tiny_dir), dtype="float32", device="cpu")
    model, tok = load_model(str(tiny_dir), device="cpu"), load_tokenizer(str(tiny_dir))
    ids = tok(TEXT, add_special_tokens=False)["input_ids"][:40]
    torch.testing.assert_close(scorer.logits(ids), model(torch.tensor([ids])).logits[0].float(), atol=1e-4, rtol=1e-4)
    hf = perplexity(model, tok, TEXT, max_length=64, stride=64)
    assert scorer.perplexity(TEXT, max_length=64).nll == pytest.approx(hf.nll, rel=1e-4)


def test_task_metrics_follow_lm_eval():
    m = perplexity_metrics(-math.log(2) * 8, tokens=4, nbytes=8, words=2)
    assert m["token_perplexity"] == pytest.approx(4.0) and m["byte_perplexity"] == pytest.approx(2.0)
    assert m["bits_per_byte"] == pytest.approx(1.0) and m["word_perplexity"] == pytest.approx(16.0)
