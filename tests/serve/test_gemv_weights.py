"""Which projections the batch-1 GEMV step reads itself (CPU: the choice logic; the kernels run in tests/gpu)."""

from __future__ import annotations

import torch
from torch import nn

from lmsmith.quant import Fp8Linear, Int4Linear, Int8Linear, quantize_model_
from lmsmith.serve.gemv import (
    CANDIDATE_TILES,
    PLANAR_TILES,
    planar_tiles,
    qkv_weight,
    tile_candidates,
    uses_planar,
    weight_kind,
)


def test_weight_kind_covers_stored_forms():
    lin = nn.Linear(256, 64, bias=False)
    assert weight_kind(lin.to(torch.bfloat16)) == "dense" and weight_kind(lin.weight) == "dense"
    assert weight_kind(nn.Linear(256, 64, bias=False)) is None  # fp32: the model's own step
    assert weight_kind(Int4Linear.from_linear(lin.float(), 128)) == "int4"
    assert weight_kind(Int4Linear.from_linear(lin.float(), 32, symmetric=True)) == "int4"
    assert weight_kind(Int8Linear.from_linear(lin.float())) == "int8"
    assert weight_kind(Fp8Linear.from_linear(lin.float())) is None  # fp8 stays on the model's own step
    assert weight_kind(Int4Linear.from_linear(nn.Linear(256, 64), 128)) is None  # a bias
    assert weight_kind(torch.zeros(64, 256, dtype=torch.bfloat16).t()) is None  # not contiguous


def test_tile_candidates_follow_the_weight_kind(monkeypatch):
    lin = nn.Linear(256, 64, bias=False)
    q4 = Int4Linear.from_linear(lin, 64)
    # int4: the planar kernels only (the stored layout never beat tinygemm); int8: planar and stored
    assert tile_candidates("down", q4) == [None] + planar_tiles("down", "int4")
    assert {t[1] for t in planar_tiles("down", "int4")} <= {"F", "S", "P"} and any(t[3] > 1 for t in PLANAR_TILES["down"])
    assert tile_candidates("lm_head", Int8Linear.from_linear(lin)) == ([None] + planar_tiles("lm_head", "int8")
                                                                       + CANDIDATE_TILES["int8"]["*"])
    assert all(t[1] == "P" for t in planar_tiles("gate_up", "int8"))  # one int8 planar kernel: no duplicates
    monkeypatch.setenv("LMSMITH_GEMV_PLANAR", "0")  # round 1's kernels (benchmarks compare)
    assert tile_candidates("down", q4) == [None] + CANDIDATE_TILES["int4"]["*"]
    assert tile_candidates("lm_head", Int8Linear.from_linear(lin)) == [None] + CANDIDATE_TILES["int8"]["*"]
    assert uses_planar({"down": (8, "F", 4, 2), "qkv": None}) and not uses_planar({"down": (4, 1024, 4)})
    assert tile_candidates("qkv", lin.to(torch.bfloat16)) == [None] + CANDIDATE_TILES["dense"]["qkv"]
    assert tile_candidates("qkv", lin.weight.to(torch.bfloat16), bias=torch.zeros(64)) == [None]  # a qkv bias
    assert tile_candidates("o_proj", Fp8Linear.from_linear(lin)) == [None]


def test_engine_fused_quantized_qkv_is_read_as_stored():
    """The engine's fused q|k|v of a quantized model is one Int4Linear (concat_linears): the GEMV reads that."""
    from lmsmith.serve.llama import LlamaForCausalLM, spec_from_config
    from lmsmith.tiny import tiny_config

    model = LlamaForCausalLM(spec_from_config(tiny_config("llama", hidden_size=128, intermediate_size=256)))
    quantize_model_(model, "int4", 128, lm_head_method="int8")
    model.fuse()
    attn = model.model.layers[0].self_attn
    assert qkv_weight(attn) is attn.qkv_proj and weight_kind(attn.qkv_proj) == "int4"
    assert weight_kind(model.lm_head) == "int8"
