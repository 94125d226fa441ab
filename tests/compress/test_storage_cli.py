"""Quantized versions in the registry: save, register with lineage, load back through load_model; the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lmsmith.cli import main
from lmsmith.models import load_model
from lmsmith.quant import Int4Linear, Int8Linear, quantize_model_

SAMPLE = Path(__file__).parent / "data" / "english_sample.txt"


def tensor_names(model_dir: Path) -> set[str]:
    names: set[str] = set()
    for f in model_dir.glob("*.safetensors"):
        with safe_open(f, "pt") as s:
            names |= set(s.keys())
    return names


@pytest.mark.parametrize("method,extra,cls", [("int8", [], Int8Linear), ("int4", ["--group-size", "32"], Int4Linear)])
def test_quantize_register_load_round_trip(tiny_ref, registry, tiny_dir, capsys, method, extra, cls):
    assert main(["compress", "quantize", tiny_ref, "--method", method, *extra, "--output-name", f"tiny-{method}"]) == 0
    ref = capsys.readouterr().out.strip()
    mv = registry.get(ref)
    assert mv.lineage.parent == "tiny@1" and mv.lineage.stage == "compress"
    assert mv.lineage.config["method"] == method and mv.tags["quantization"] == method
    assert mv.metrics["size_bytes"] < mv.metrics["parent_size_bytes"]
    config = json.loads((mv.dir / "config.json").read_text())
    section = config["quantization"]
    assert section["quant_method"] == "lmsmith" and section["method"] == method
    assert section["group_size"] == (32 if method == "int4" else None)
    names = tensor_names(mv.dir)
    assert "model.layers.0.mlp.down_proj.qweight" in names and "model.layers.0.mlp.down_proj.scales" in names
    assert ("model.layers.0.mlp.down_proj.zeros" in names) == (method == "int4")
    assert "model.layers.0.mlp.down_proj.weight" not in names and "lm_head.weight" in names
    assert (mv.dir / "tokenizer.json").exists()

    loaded = load_model(ref, device="cpu")
    assert isinstance(loaded.model.layers[1].self_attn.q_proj, cls)
    fresh = load_model(str(tiny_dir), dtype="float32", device="cpu")
    quantize_model_(fresh, method, 32 if method == "int4" else None)
    ids = torch.randint(3, 500, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, fresh(ids).logits, atol=1e-5)


def test_tied_embeddings_survive_the_round_trip(tmp_path, tiny_dir, registry):
    """Tied lm_head is saved once and re-tied on load (the default model ties its embeddings)."""
    import shutil

    from lmsmith.quant.format import load_quantized, save_quantized
    from lmsmith.tiny import tiny_model

    src = tmp_path / "tied"
    model = tiny_model("llama", tie_word_embeddings=True)
    model.save_pretrained(src)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if (tiny_dir / f).exists():
            shutil.copy(tiny_dir / f, src / f)
    spec = quantize_model_(model, "int8")
    save_quantized(model, src, tmp_path / "q", spec)
    assert "lm_head.weight" not in tensor_names(tmp_path / "q")
    loaded = load_quantized(tmp_path / "q")
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([[4, 5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-5)


def test_cli_errors_are_one_line(tiny_ref, capsys):
    assert main(["compress", "quantize", tiny_ref, "--method", "int4", "--group-size", "128", "--output-name", "x"]) == 1
    err = capsys.readouterr().err
    assert "group size 128 does not divide in_features=64" in err and "--group-size 64" in err
    assert main(["compress", "quantize", tiny_ref, "--method", "fp8", "--output-name", "x"]) == 0  # offline conversion works
    capsys.readouterr()
    assert main(["generate", "x", "--prompt", "hi", "--max-tokens", "2"]) == 1  # but running fp8 on CPU does not
    assert "fp8 weights need a CUDA GPU" in capsys.readouterr().err
    assert main(["compress", "ppl", tiny_ref, "--text", "missing.txt"]) == 1
    assert "text file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compress", "quantize", tiny_ref, "--method", "int3", "--output-name", "x"])


def test_ppl_command_compares_methods(tiny_ref, capsys):
    assert main(["compress", "ppl", tiny_ref, "--text", str(SAMPLE), "--method", "none,int8,int4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [r["method"] for r in rows] == ["none", "int8", "int4"]
    assert rows[0]["tokens"] > 1000 and rows[0]["delta_pct"] == 0
    assert all(r["ppl"] > 1 for r in rows)
    assert abs(rows[1]["delta_pct"]) < abs(rows[2]["delta_pct"]) + 0.5


def test_quantize_with_eval_text_stores_metrics(tiny_ref, registry, capsys):
    assert main(["compress", "quantize", tiny_ref, "--method", "int8", "--output-name", "q8", "--eval-text", str(SAMPLE)]) == 0
    mv = registry.get(capsys.readouterr().out.strip())
    assert abs(mv.metrics["ppl"] / mv.metrics["parent_ppl"] - 1) * 100 == pytest.approx(abs(mv.metrics["ppl_delta_pct"]))


def test_quantized_version_serves_through_the_engine(tiny_ref):
    """The engine routes a quantized checkpoint to the transformers path; greedy output matches load_model."""
    from lmsmith.models import load_model, load_tokenizer
    from lmsmith.serve import LLM, SamplingParams

    assert main(["compress", "quantize", tiny_ref, "--method", "int8", "--output-name", "q8"]) == 0
    prompt = load_tokenizer("q8")("Praha je")["input_ids"]
    out = LLM("q8").generate([prompt], SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True), use_tqdm=False)
    model = load_model("q8", device="cpu")
    ref = model.generate(torch.tensor([prompt]), max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=2)
    assert out[0].outputs[0].token_ids == ref[0, len(prompt):].tolist()


@pytest.mark.parametrize("method", ["int8", "fp8"])
def test_save_load_round_trip_is_exact(tmp_path, method):
    """Same bytes in, same logits out (fp8 through its CPU emulation). A model cast with `.to(bfloat16)` would
    not compare equal: that also rounds RoPE's inv_freq buffer, which a model built in bf16 keeps in fp32."""
    from transformers import AutoModelForCausalLM

    from lmsmith.quant import set_backend
    from lmsmith.quant.format import build_empty, read_state, save_quantized
    from lmsmith.tiny import build_tiny, tiny_model

    src = build_tiny(tmp_path / "tiny", "llama")
    fp32 = tiny_model("llama", hidden_size=128, intermediate_size=256)
    model = AutoModelForCausalLM.from_config(fp32.config, dtype=torch.bfloat16)
    model.load_state_dict(fp32.state_dict())
    ids = torch.randint(3, 500, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        spec = quantize_model_(model, method, allow_cpu_fp8=True)
        set_backend(model, "reference")
        after = model(ids).logits
    model.config.save_pretrained(src)
    save_quantized(model, src, tmp_path / "q", spec)
    loaded = build_empty(tmp_path / "q", torch.bfloat16)  # load_quantized's steps (it refuses fp8 on a CPU)
    quantize_model_(loaded, method, allow_cpu_fp8=True, empty=True)
    loaded.load_state_dict(read_state(tmp_path / "q"), strict=False)
    loaded.tie_weights()
    set_backend(loaded, "reference")
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, after)
    inv = dict(loaded.named_buffers())["model.rotary_emb.inv_freq"]
    assert inv.dtype == torch.float32 and fp32.to(torch.bfloat16).model.rotary_emb.inv_freq.dtype == torch.bfloat16


def test_cli_lm_head_method(tiny_ref, registry, capsys):
    assert main(["compress", "quantize", tiny_ref, "--method", "int4", "--lm-head", "int8", "--output-name", "q4h8"]) == 0
    mv = registry.get(capsys.readouterr().out.strip())
    cfg = json.loads((mv.dir / "config.json").read_text())["quantization"]
    assert cfg["method"] == "int4" and cfg["lm_head_method"] == "int8" and "lm_head" in cfg["modules"]
    assert isinstance(load_model(mv.ref, device="cpu").lm_head, Int8Linear)
