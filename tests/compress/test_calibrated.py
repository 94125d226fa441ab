"""GPTQ, AWQ and k-bit grids on tiny models: the math, the stored format, loading through `generate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmsmith.compress.gptq import gptq_quantize, quantization_error
from lmsmith.compress.grid import Grid, weight_of

CAL = Path(__file__).resolve().parents[2] / "src" / "lmsmith" / "assets" / "compress" / "en_calibration.txt"


def correlated_inputs(k: int, n_tokens: int = 2048, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_tokens, k, generator=g) @ (torch.randn(k, k, generator=g) / k ** 0.5 + torch.eye(k))
    return x * torch.linspace(0.2, 3.0, k)


@pytest.mark.parametrize("grid,group", [(Grid("int4", 4), 32), (Grid("int4", 3), 64), (Grid("int4", 4, True), 32),
                                        (Grid("int8", 8, True), None)])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_rtn_on_the_layer_output(grid, group, act_order):
    torch.manual_seed(0)
    w = torch.randn(96, 128)
    x = correlated_inputs(128)
    h = x.t() @ x / x.shape[0]
    rtn = quantization_error(w, weight_of(*grid.rtn(w, group)), h)
    q, s, z = gptq_quantize(w, h, grid, group, act_order=act_order)
    assert q.shape == w.shape and s.shape == z.shape == (96, 1 if group is None else 128 // group)
    assert q.min() >= grid.qmin and q.max() <= grid.qmax and torch.equal(q, q.round())
    assert quantization_error(w, weight_of(q, s, z), h) < 0.9 * rtn


def test_grid_levels_and_rtn_matches_stored_int4():
    from lmsmith.quant import dequantize_int4, quantize_int4

    w = torch.randn(8, 64)
    assert (Grid("int4", 3).qmin, Grid("int4", 3).qmax) == (0, 7)
    assert (Grid("int4", 3, True).qmin, Grid("int4", 3, True).qmax) == (4, 11)
    q3, _, _ = Grid("int4", 3).rtn(w, 32)
    assert len(q3.unique()) <= 8
    ref = dequantize_int4(*quantize_int4(w, 32), 32)
    assert torch.allclose(Grid("int4", 4).fake_quant(w, 32), ref, atol=1e-5)


def test_bad_bits_is_one_clear_error():
    from lmsmith.errors import LmsmithError

    with pytest.raises(LmsmithError, match="bits"):
        Grid("int4", 5)


def tiny_cal(tmp_path: Path) -> Path:
    p = tmp_path / "cal.jsonl"
    p.write_text("\n".join(json.dumps({"text": line}) for line in CAL.read_text().split("\n\n")) + "\n")
    return p


@pytest.mark.parametrize("algorithm,bits", [("gptq", 4), ("gptq", 3), ("awq", 4), ("awq", 3), ("rtn", 3)])
def test_calibrated_quantize_writes_our_format(tmp_path, tiny_dir, algorithm, bits):
    from lmsmith.compress.ptq import PTQConfig, calibrated_quantize_to_dir
    from lmsmith.models import load_model
    from lmsmith.quant import Int4Linear
    from lmsmith.quant.format import load_quantized

    cfg = PTQConfig(algorithm=algorithm, bits=bits, group_size=32, calibration=str(tiny_cal(tmp_path)),
                    samples=8, seq_len=64)
    out = tmp_path / "q"
    spec, model = calibrated_quantize_to_dir(tiny_dir, out, cfg)
    section = json.loads((out / "config.json").read_text())["quantization"]
    assert section["algorithm"] == algorithm and section["method"] == "int4" and section["group_size"] == 32
    assert section["bits"] == (None if bits == 4 else bits)
    loaded = load_quantized(out)
    layers = [m for m in loaded.modules() if isinstance(m, Int4Linear)]
    assert len(layers) == len(spec.modules) == 14  # 2 layers x (q, k, v, o, gate, up, down)
    for m in layers:
        from lmsmith.quant import unpack_int4

        q = unpack_int4(m.qweight)
        assert q.max() <= 2 ** bits - 1  # the grid's levels, held in int4 storage
    ids = torch.randint(0, 300, (2, 12))
    fp = load_model(str(tiny_dir), dtype="float32", device="cpu")
    with torch.no_grad():
        a, b = fp(ids).logits, loaded(ids).logits
    assert a.shape == b.shape and torch.isfinite(b).all()
    assert (a - b).abs().mean() < a.abs().mean()  # close to the model it came from, not noise


def test_awq_folds_scales_without_changing_the_full_precision_function(tiny_dir):
    from lmsmith.compress.awq import fold_scales, scale_groups
    from lmsmith.compress.calibration import decoder_layers
    from lmsmith.models import load_model

    model = load_model(str(tiny_dir), dtype="float32", device="cpu")
    ids = torch.randint(0, 300, (1, 16))
    with torch.no_grad():
        before = model(ids).logits
        for layer in decoder_layers(model):
            groups = scale_groups(layer)
            assert [g.names for g in groups][0] == ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]
            for g in groups:
                fold_scales(g, torch.rand(g.linears[0].in_features) + 0.5)
        after = model(ids).logits
    assert torch.allclose(before, after, atol=1e-4)


def test_gptq_improves_the_tiny_model_over_rtn(tmp_path, tiny_dir):
    """Layer outputs on the calibration text: GPTQ's relative error below RTN's at 3 bits."""
    from lmsmith.compress.calibration import CalibrationSpec, calibration_ids
    from lmsmith.compress.ptq import PTQConfig, calibrated_quantize_
    from lmsmith.models import load_model, load_tokenizer
    from lmsmith.quant import set_backend

    tok = load_tokenizer(str(tiny_dir))
    cal = tiny_cal(tmp_path)
    ids = calibration_ids(tok, CalibrationSpec(str(cal), 4, 64, seed=1))
    fp = load_model(str(tiny_dir), dtype="float32", device="cpu")
    with torch.no_grad():
        ref = fp(ids).logits
    errs = {}
    for alg in ("rtn", "gptq"):
        m = load_model(str(tiny_dir), dtype="float32", device="cpu")
        calibrated_quantize_(m, tok, PTQConfig(algorithm=alg, bits=3, group_size=32, calibration=str(cal),
                                               samples=16, seq_len=64))
        set_backend(m, "reference")
        with torch.no_grad():
            errs[alg] = float((m(ids).logits - ref).pow(2).mean())
    assert errs["gptq"] < errs["rtn"]


def test_cli_quantize_gptq_registers_and_generates(tmp_path, tiny_ref, registry, capsys):
    from lmsmith.cli import main

    cal = tiny_cal(tmp_path)
    rc = main(["compress", "quantize", tiny_ref, "--method", "int4", "--algorithm", "gptq", "--bits", "3",
               "--group-size", "32", "--calibration", str(cal), "--samples", "4", "--seq-len", "32",
               "--output-name", "tiny-gptq"])
    assert rc == 0
    mv = registry.get("tiny-gptq")
    assert mv.lineage.parent == tiny_ref and mv.lineage.stage == "compress"
    assert mv.lineage.config["algorithm"] == "gptq" and mv.lineage.config["bits"] == 3
    assert mv.lineage.data and mv.lineage.data[0].sha256
    capsys.readouterr()
    assert main(["generate", mv.ref, "--prompt", "Hello", "--max-tokens", "4"]) == 0


def test_cli_gptq_without_calibration_is_one_clear_error(tiny_ref, capsys):
    from lmsmith.cli import main

    rc = main(["compress", "quantize", tiny_ref, "--method", "int4", "--algorithm", "gptq", "--output-name", "x"])
    assert rc == 1
    assert "--calibration" in capsys.readouterr().err


def test_calibration_reads_text_jsonl_and_chat(tmp_path, tiny_dir):
    from lmsmith.compress.calibration import CalibrationSpec, calibration_ids, read_documents
    from lmsmith.errors import LmsmithError
    from lmsmith.models import load_tokenizer

    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "Ahoj"}, {"role": "assistant", "content": "Dobrý den"}]}) + "\n")
    assert read_documents(chat) == ["Ahoj\nDobrý den"]
    ids = calibration_ids(load_tokenizer(str(tiny_dir)), CalibrationSpec(str(CAL), 6, 50))
    assert ids.shape == (6, 50)
    with pytest.raises(LmsmithError, match="fewer than --seq-len"):
        calibration_ids(load_tokenizer(str(tiny_dir)), CalibrationSpec(str(chat), 2, 500))
    with pytest.raises(LmsmithError, match="not found"):
        read_documents(tmp_path / "missing.txt")
