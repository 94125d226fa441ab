"""Pruning (magnitude, Wanda, SparseGPT; unstructured and 2:4), low-rank factorization and the report, on
tiny models: exact sparsity patterns, shapes, loading through `generate` and the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

CAL = Path(__file__).resolve().parents[2] / "src" / "lmsmith" / "assets" / "compress" / "en_calibration.txt"
HELDOUT = Path(__file__).resolve().parents[2] / "src" / "lmsmith" / "assets" / "compress" / "en_heldout.txt"


def test_prune_mask_exact_per_row_and_per_group():
    from lmsmith.compress.prune import prune_mask

    score = torch.rand(16, 64)
    m = prune_mask(score, 0.5, None)
    assert (m.sum(1) == 32).all()
    m = prune_mask(score, 0.3, None)
    assert (m.sum(1) == round(0.3 * 64)).all()
    m24 = prune_mask(score, 0, (2, 4))
    assert (m24.reshape(16, 16, 4).sum(-1) == 2).all()
    # the dropped ones are the lowest of their row / group
    kept_min = torch.where(~m24, score, torch.inf).reshape(16, 16, 4).amin(-1)
    dropped_max = torch.where(m24, score, -torch.inf).reshape(16, 16, 4).amax(-1)
    assert (dropped_max <= kept_min).all()


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_sparsegpt_beats_masking_alone(nm):
    from lmsmith.compress.gptq import quantization_error
    from lmsmith.compress.prune import prune_mask, sparsegpt_prune

    torch.manual_seed(0)
    w = torch.randn(64, 256)
    x = torch.randn(2048, 256) @ (torch.randn(256, 256) / 16 + torch.eye(256))
    h = x.t() @ x / x.shape[0]
    pruned = sparsegpt_prune(w, h, 0.5, nm)
    zeros = pruned == 0
    if nm is None:
        assert (zeros.sum(1) == 128).all()
    else:
        assert (zeros.reshape(64, 64, 4).sum(-1) == 2).all()
    wanda = w.masked_fill(prune_mask(w.abs() * h.diag().sqrt()[None, :], 0.5, nm), 0)
    assert quantization_error(w, pruned, h) < quantization_error(w, wanda, h)


@pytest.mark.parametrize("method,pattern", [("magnitude", None), ("wanda", None), ("sparsegpt", None),
                                            ("wanda", "2:4"), ("sparsegpt", "2:4"), ("magnitude", "2:4")])
def test_prune_to_dir_exact_sparsity_and_loads(tmp_path, tiny_dir, method, pattern):
    from lmsmith.compress.prune import SPARSITY_KEY, PruneConfig, prune_to_dir
    from lmsmith.models import load_model
    from lmsmith.quant.passes import target_linears

    cfg = PruneConfig(method=method, sparsity=0.5, pattern=pattern, calibration=str(CAL), samples=4, seq_len=64)
    out = tmp_path / "p"
    info = prune_to_dir(tiny_dir, out, cfg)
    assert abs(info["measured_sparsity"] - 0.5) < 1e-6
    assert json.loads((out / "config.json").read_text())[SPARSITY_KEY]["method"] == method
    model = load_model(str(out), dtype="float32", device="cpu")
    fp = load_model(str(tiny_dir), dtype="float32", device="cpu")
    for name, lin in target_linears(model):
        zero = lin.weight == 0
        if pattern:
            assert (zero.reshape(lin.out_features, -1, 4).sum(-1) == 2).all(), name
        else:
            assert (zero.sum(1) == lin.in_features // 2).all(), name
    assert torch.equal(model.lm_head.weight, fp.lm_head.weight)  # not pruned
    with torch.no_grad():
        assert torch.isfinite(model(torch.randint(0, 300, (1, 8))).logits).all()


def test_prune_cli_registers_with_lineage_and_generates(tiny_ref, registry, capsys):
    from lmsmith.cli import main

    assert main(["compress", "prune", tiny_ref, "--method", "wanda", "--sparsity", "0.5", "--calibration", str(CAL),
                 "--samples", "4", "--seq-len", "32", "--output-name", "tiny-wanda"]) == 0
    mv = registry.get("tiny-wanda")
    assert mv.lineage.parent == tiny_ref and mv.lineage.config["prune"]["method"] == "wanda"
    assert abs(mv.metrics["sparsity"] - 0.5) < 1e-6
    assert main(["generate", mv.ref, "--prompt", "Hello", "--max-tokens", "3"]) == 0


def test_prune_errors_are_clear(tiny_ref, capsys):
    from lmsmith.cli import main

    assert main(["compress", "prune", tiny_ref, "--method", "wanda", "--output-name", "x"]) == 1
    assert "--calibration" in capsys.readouterr().err
    assert main(["compress", "prune", tiny_ref, "--method", "magnitude", "--pattern", "4:2", "--output-name", "x"]) == 1
    assert "N must be between 0 and M" in capsys.readouterr().err


def test_factorize_is_exact_at_full_rank_and_asvd_weights_inputs():
    from lmsmith.compress.lowrank import factorize

    torch.manual_seed(0)
    w = torch.randn(24, 32)
    up, down = factorize(w, 24)
    assert torch.allclose(up @ down, w, atol=1e-4)
    x = torch.randn(512, 32) * torch.cat([torch.full((4,), 20.0), torch.ones(28)])
    s = x.abs().mean(0)
    plain = factorize(w, 6)
    aware = factorize(w, 6, s)
    out_err = lambda f: float((x @ (f[0] @ f[1]).t() - x @ w.t()).pow(2).mean())  # noqa: E731
    assert out_err(aware) < out_err(plain)


@pytest.mark.parametrize("method", ["svd", "asvd"])
def test_lowrank_to_dir_shapes_params_and_loads(tmp_path, tiny_dir, method):
    from lmsmith.compress.lowrank import LowRankLinear, lowrank_to_dir, rank_for
    from lmsmith.models import load_model

    out = tmp_path / "lr"
    info = lowrank_to_dir(tiny_dir, out, __import__("lmsmith.compress.lowrank", fromlist=["x"]).LowRankConfig(
        rank_ratio=0.5, method=method, calibration=str(CAL), samples=4, seq_len=64))
    assert info["num_factorized"] == 14 and info["params_after"] < info["params_before"]
    model = load_model(str(out), dtype="float32", device="cpu")
    lr = {n: m for n, m in model.named_modules() if isinstance(m, LowRankLinear)}
    assert len(lr) == 14
    q = lr["model.layers.0.self_attn.q_proj"]
    assert q.rank == rank_for(64, 64, 0.5) == 16
    assert q.down.weight.shape == (16, 64) and q.up.weight.shape == (64, 16)
    fp = load_model(str(tiny_dir), dtype="float32", device="cpu")
    ids = torch.randint(0, 300, (1, 8))
    with torch.no_grad():
        a, b = fp(ids).logits, model(ids).logits
    assert a.shape == b.shape and torch.isfinite(b).all()


def test_lowrank_cli_generate_and_engine(tiny_ref, registry, capsys):
    from lmsmith.cli import main
    from lmsmith.serve.llm import LLM
    from lmsmith.serve.sampling_params import SamplingParams

    assert main(["compress", "lowrank", tiny_ref, "--rank-ratio", "0.5", "--method", "svd",
                 "--output-name", "tiny-lr"]) == 0
    mv = registry.get("tiny-lr")
    assert mv.lineage.parent == tiny_ref and mv.lineage.config["lowrank"]["num_factorized"] == 14
    assert main(["generate", mv.ref, "--prompt", "Hello", "--max-tokens", "3"]) == 0
    # the engine multiplies the factors back: same greedy tokens as the transformers model
    from lmsmith.models import load_model, load_tokenizer

    tok = load_tokenizer(mv.ref)
    hf = load_model(mv.ref, dtype="float32", device="cpu")
    ids = tok("Hello there", add_special_tokens=False).input_ids
    ref_out = hf.generate(torch.tensor([ids]), max_new_tokens=5, do_sample=False, pad_token_id=2)[0, len(ids):].tolist()
    with LLM(mv.ref, dtype="float32", device="cpu") as llm:
        got = llm.generate([ids], SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True))[0].outputs[0].token_ids
    assert got == ref_out


def test_report_table_png_and_json(tmp_path, tiny_ref, registry, capsys):
    from lmsmith.cli import main

    assert main(["compress", "quantize", tiny_ref, "--method", "int8", "--output-name", "tiny-int8"]) == 0
    capsys.readouterr()
    png = tmp_path / "r.png"
    assert main(["compress", "report", tiny_ref, "tiny-int8", "--text", str(HELDOUT), "--speed-tokens", "4",
                 "--output", str(png), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["kind"] for r in rows] == ["full precision", "rtn int8"]
    assert rows[1]["parent"] == tiny_ref and rows[1]["size_bytes"] < rows[0]["size_bytes"]
    assert all(r["ppl"] > 1 and r["tok_s"] > 0 for r in rows)
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
