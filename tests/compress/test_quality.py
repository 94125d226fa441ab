"""The quality guard on the real default model: int8 perplexity within 1% of the unquantized model."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLE = Path(__file__).parent / "data" / "english_sample.txt"


@pytest.mark.slow
def test_default_model_int8_perplexity_within_one_percent(default_model_dir):
    from lmsmith.evaluate.perplexity import perplexity
    from lmsmith.models import load_model, load_tokenizer
    from lmsmith.quant import quantize_model_, set_backend

    ref = str(default_model_dir)
    text = SAMPLE.read_text()
    tok = load_tokenizer(ref)
    results = {}
    for method in ("none", "int8", "int4", "fp8"):
        model = load_model(ref, dtype="float32", device="cpu")
        if method != "none":  # int4 in groups of 32, the block size of the Q4_1 GGUF the default model ships as
            quantize_model_(model, method, group_size=32 if method == "int4" else None, allow_cpu_fp8=True)
        if method == "fp8":
            set_backend(model, "reference")  # fp8 math emulated on the CPU (the GPU runs it with _scaled_mm)
        results[method] = perplexity(model, tok, text)
        del model
    base = results["none"].ppl
    deltas = {m: 100 * (r.ppl / base - 1) for m, r in results.items()}
    print("\nperplexity on the English sample:", {m: round(r.ppl, 3) for m, r in results.items()},
          "delta %:", {m: round(d, 2) for m, d in deltas.items()})
    assert results["none"].tokens > 900
    assert 1 < base < 50  # a real model on real English, not noise
    assert abs(deltas["int8"]) < 1.0
    # reported rather than guarded tightly (measured on this sample: int4 g32 +0.2..0.3%; fp8 emulated +2.5% with
    # transformers 5.17, +5.6% with 5.25 and torch 2.13 on CPU: to be explained, the GPU path is _scaled_mm)
    assert deltas["int4"] < 5.0
    assert deltas["fp8"] < 8.0


@pytest.mark.slow
def test_default_model_engine_path_perplexity(default_model_dir, tmp_path):
    """The same guard through the serving engine (fused quantized layers, the engine's attention): int8 within
    1% of the engine's unquantized perplexity; int4 (g32, int8 lm_head) reported and loosely bounded."""
    from lmsmith.compress.quantize import quantize_to_dir
    from lmsmith.serve.scoring import engine_perplexity

    text = SAMPLE.read_text()
    results = {"none": engine_perplexity(str(default_model_dir), text, dtype="float32", device="cpu")}
    for name, method, kw in (("int8", "int8", {}), ("int4+int8head", "int4", {"group_size": 32, "lm_head_method": "int8"})):
        qdir = tmp_path / name
        quantize_to_dir(default_model_dir, qdir, method, **kw)
        results[name] = engine_perplexity(str(qdir), text, dtype="float32", device="cpu")
    base = results["none"].ppl
    deltas = {m: 100 * (r.ppl / base - 1) for m, r in results.items()}
    print("\nengine-path perplexity:", {m: round(r.ppl, 3) for m, r in results.items()},
          "delta %:", {m: round(d, 2) for m, d in deltas.items()})
    assert results["none"].tokens > 900 and 1 < base < 50
    assert abs(deltas["int8"]) < 1.0
    assert deltas["int4+int8head"] < 5.0
