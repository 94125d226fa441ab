"""Quantization-aware training: the fake-quant grid is the storage grid, the loop trains through it, and the
result converts to our int4/int8 format without further loss (round trip)."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.mark.parametrize("method,group", [("int4", 32), ("int4", 64), ("int8", None)])
def test_fake_quant_is_the_storage_grid(method, group):
    from lmsmith.quant import dequantize_int4, dequantize_int8, quantize_int4, quantize_int8
    from lmsmith.train.qat import fake_quant

    w = torch.randn(16, 128)
    ref = dequantize_int4(*quantize_int4(w, group), group) if method == "int4" else dequantize_int8(*quantize_int8(w))
    assert torch.allclose(fake_quant(w, method, group), ref, atol=1e-6)
    again = fake_quant(fake_quant(w, method, group), method, group)  # on the grid already: idempotent
    assert torch.allclose(again, fake_quant(w, method, group), atol=1e-6)


def test_straight_through_gradient():
    from torch.nn.utils import parametrize

    from lmsmith.train.qat import FakeQuant

    lin = torch.nn.Linear(64, 8, bias=False)
    parametrize.register_parametrization(lin, "weight", FakeQuant("int4", 32))
    x = torch.randn(4, 64)
    lin(x).sum().backward()
    g = lin.parametrizations.weight.original.grad
    assert torch.allclose(g, x.sum(0).expand(8, 64))  # identity backward through the rounding


def write_text(tmp_path):
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src" / "lmsmith" / "assets" / "compress" / "en_calibration.txt"
    p = tmp_path / "corpus.txt"
    p.write_text(src.read_text())
    return p


def test_qat_round_trip_through_compress_quantize(tmp_path, tiny_ref, registry, capsys):
    from lmsmith.cli import main
    from lmsmith.models import load_model

    data = write_text(tmp_path)
    assert main(["train", "pretrain", "--model", tiny_ref, "--data", str(data), "--seq-len", "64", "--steps", "3",
                 "--batch-size", "2", "--full", "--qat", "int4", "--qat-group-size", "32", "--lr", "1e-3",
                 "--output-name", "tiny-qat", "--no-mlflow", "--no-plot", "--device", "cpu"]) == 0
    mv = registry.get("tiny-qat")
    assert json.loads((mv.path and __import__("pathlib").Path(mv.path) / "config.json").read_text())["lmsmith_qat"] == \
        {"method": "int4", "group_size": 32, "modules": 14}
    assert mv.lineage.config["qat"] == "int4"
    dense = load_model(mv.ref, dtype="float32", device="cpu")
    base = load_model(tiny_ref, dtype="float32", device="cpu")
    assert not torch.equal(dense.model.layers[0].mlp.down_proj.weight, base.model.layers[0].mlp.down_proj.weight)
    capsys.readouterr()
    assert main(["compress", "quantize", mv.ref, "--method", "int4", "--output-name", "tiny-qat-int4"]) == 0
    q = registry.get("tiny-qat-int4")
    section = json.loads((__import__("pathlib").Path(q.path) / "config.json").read_text())["quantization"]
    assert section["group_size"] == 32 and section["algorithm"] == "qat"
    from lmsmith.quant import set_backend

    quant = load_model(q.ref, dtype="float32", device="cpu")
    set_backend(quant, "reference")
    ids = torch.randint(0, 300, (1, 16))
    with torch.no_grad():
        a, b = dense(ids).logits, quant(ids).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()  # conversion adds no error


def test_qat_with_lora_is_one_clear_error(tmp_path, tiny_ref, capsys):
    from lmsmith.cli import main

    data = write_text(tmp_path)
    assert main(["train", "sft", "--model", tiny_ref, "--data", str(data), "--qat", "int4", "--steps", "1"]) == 1
    assert "--full" in capsys.readouterr().err
