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
from lmsmith.train.attention import DocumentMasks, collate_docs, doc_mask_mode, resolve_sdpa_backend, sdpa_context


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
