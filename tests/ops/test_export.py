"""`lmsmith models export` writes directories that plain transformers loads and runs the same."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmsmith.cli import main
from lmsmith.models import load_model, load_tokenizer
from lmsmith.train.config import SFTConfig
from lmsmith.train.loop import train


def greedy(model, tok, text: str = "Hello world", n: int = 8) -> list[int]:
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.eos_token_id)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("method", ["int4", "int8"])
def test_quantized_export_loads_in_transformers_with_same_tokens(tiny_ref, tmp_path, capsys, method):
    assert main(["compress", "quantize", tiny_ref, "--method", method, "--output-name", "tq"]) == 0
    assert main(["models", "export", "tq", str(tmp_path / "out")]) == 0
    assert "dequantized" in capsys.readouterr().out
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    assert "quantization" not in json.loads((tmp_path / "out" / "config.json").read_text())
    tok = load_tokenizer("tq")
    ours = load_model("tq", dtype="float32", device="cpu")
    assert greedy(exported, tok) == greedy(ours, tok)
    # weights equal the dequantized ones, not random
    q = ours.model.layers[0].self_attn.q_proj.dequantize(torch.float32)
    assert torch.equal(exported.model.layers[0].self_attn.q_proj.weight, q)


def test_adapter_export_is_standalone_and_merge_matches(tiny_ref, registry, tmp_path, capsys):
    data = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"{i}?"}, {"role": "assistant", "content": f"{i}!"}]} for i in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train(SFTConfig(model=tiny_ref, data=[str(data)], lora_r=4, steps=3, seq_len=128, batch_size=4, lr=1e-2,
                    mlflow=False, plot=False, workers=1, output_name="ad", run_dir=str(tmp_path / "run")))
    assert main(["models", "export", "ad", str(tmp_path / "adapter")]) == 0
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    home = str(registry.root)
    assert home not in cfg["base_model_name_or_path"] and cfg["base_model_name_or_path"] == "tiny@1"
    assert main(["models", "export", "ad", str(tmp_path / "merged"), "--merge"]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    tok = load_tokenizer("ad")
    assert greedy(merged, tok) == greedy(load_model("ad", dtype="float32", device="cpu"), tok)
    capsys.readouterr()
    (tmp_path / "file").write_text("x")
    assert main(["models", "export", "ad", str(tmp_path / "file")]) == 1
    assert "is a file" in capsys.readouterr().err
    assert main(["models", "export", "tiny", str(tmp_path / "m2"), "--merge"]) == 1
    assert "--merge is for adapters" in capsys.readouterr().err
