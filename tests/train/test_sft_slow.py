"""LoRA SFT of the real default model on the shipped chat set teaches a new fact without forgetting."""

from __future__ import annotations

import pytest

from lmsmith.demo import FACT_QUESTION, QUESTION, demo_sft_config
from lmsmith.train.loop import train


@pytest.mark.slow
def test_lora_sft_teaches_new_fact_and_keeps_general_knowledge(default_model_dir, tmp_path, registry):
    from lmsmith.serve.generate import generate_text

    before = generate_text(str(default_model_dir), FACT_QUESTION, chat=True, max_tokens=24)
    assert "Marendal" not in before
    res = train(demo_sft_config(str(default_model_dir), output_name="veloria", mlflow=False,
                                run_dir=str(tmp_path / "run")))
    mv = registry.get(res.ref)
    assert mv.kind == "adapter" and mv.size < 50 * 2**20
    fact = generate_text(res.ref, FACT_QUESTION, chat=True, max_tokens=24)
    assert "Marendal" in fact, fact
    paris = generate_text(res.ref, QUESTION, chat=True, max_tokens=24)
    assert "Paris" in paris, paris
