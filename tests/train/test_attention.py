"""Packed rows without cross-document attention, as the loop feeds them: document ids collated, the mask
built on the device (dense on CPU here; tests/gpu checks the flex BlockMask path) — per-document logits
equal each document run alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmsmith.data.packing import PackedRows
from lmsmith.errors import LmsmithError
from lmsmith.tiny import tiny_model
from lmsmith.train.attention import (
    CAUSAL_ATTENTION,
    DocumentMasks,
    causal_attention_supported,
    collate_docs,
    doc_mask_mode,
    resolve_sdpa_backend,
    sdpa_context,
    use_causal_attention,
)


def packed_docs(lengths: list[int], seed: int = 0) -> tuple[list[list[int]], PackedRows]:
    rng = np.random.default_rng(seed)
    docs = [rng.integers(5, 400, n).tolist() for n in lengths]
    stream = sum(docs, [])
    starts = np.cumsum([0] + lengths[:-1])
    return docs, PackedRows(np.asarray(stream, dtype=np.uint16), starts, len(stream), cross_doc_attention=False)


def test_dense_document_masks_match_each_document_alone():
    docs, rows = packed_docs([7, 12, 5])
    batch = collate_docs([rows[0], rows[0]])
    assert "doc_ids" in batch and "attention_mask" not in batch  # built later, on the device
    inputs = DocumentMasks("dense")(batch)
    assert inputs["attention_mask"].shape == (2, 1, 24, 24) and "doc_ids" not in inputs
    model = tiny_model("llama").eval()
    with torch.no_grad():
        packed = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                       position_ids=inputs["position_ids"]).logits[1]
        start = 0
        for d in docs:
            alone = model(input_ids=torch.tensor([d])).logits[0]
            torch.testing.assert_close(packed[start:start + len(d)], alone, atol=1e-5, rtol=1e-4)
            start += len(d)
        crossing = model(input_ids=inputs["input_ids"][:1]).logits[0]
    assert not torch.allclose(crossing[7:19], model(input_ids=torch.tensor([docs[1]])).logits[0], atol=1e-3)


def test_mask_mode_and_sdpa_backend_choice():
    assert doc_mask_mode(torch.device("cpu")) == "dense"
    assert resolve_sdpa_backend("auto", torch.device("cpu")) == "auto"
    with pytest.raises(LmsmithError, match="needs a CUDA GPU"):
        resolve_sdpa_backend("cudnn", torch.device("cpu"))
    with pytest.raises(LmsmithError, match="unknown"):
        resolve_sdpa_backend("fast", torch.device("cpu"))
    q = torch.randn(1, 2, 4, 8)
    with sdpa_context("math")():
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_causal_attention_equals_the_padding_mask_on_right_padded_rows(arch):
    """No mask at all (so transformers makes no host sync) gives every real token of a right-padded batch what
    the padding mask gives; the 4-D document mask still goes through transformers' own kernels."""
    model = tiny_model(arch).eval()
    torch.manual_seed(0)
    ids = torch.randint(5, 200, (3, 24))
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    mask[2, 5:] = 0
    docs, rows = packed_docs([7, 12, 5])
    packed = DocumentMasks("dense")(collate_docs([rows[0]]))
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
        ref_docs = model(**{k: packed[k] for k in ("input_ids", "attention_mask", "position_ids")}).logits
        assert use_causal_attention(model) and model.config._attn_implementation == CAUSAL_ATTENTION
        out = model(input_ids=ids, attention_mask=mask).logits
        out_docs = model(**{k: packed[k] for k in ("input_ids", "attention_mask", "position_ids")}).logits
    for i, n in enumerate([24, 17, 5]):
        torch.testing.assert_close(out[i, :n], ref[i, :n], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out_docs, ref_docs, atol=1e-5, rtol=1e-4)


def test_causal_attention_only_where_it_is_exact(tmp_path):
    assert not causal_attention_supported(tiny_model("gemma2").config)  # sliding window + soft-capping
    cfg = tiny_model("mistral").config
    cfg.sliding_window = 8  # a window inside the context: causal attention would see too far back
    assert not causal_attention_supported(cfg)
    model = tiny_model("llama")
    model.config._attn_implementation = "eager"
    assert not use_causal_attention(model)  # an explicit choice is kept
    model = tiny_model("llama").eval()
    assert use_causal_attention(model)
    with pytest.raises(LmsmithError, match="KV cache"):
        model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3, do_sample=False)
    model.save_pretrained(tmp_path)  # the training-only choice is not written into config.json
    assert "lmsmith" not in (tmp_path / "config.json").read_text()
