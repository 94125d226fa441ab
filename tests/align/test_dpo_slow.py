"""LoRA DPO on the real default model: a small preference set moves greedy answers towards the preferred
style (they open with "Certainly!") while general knowledge stays (Paris)."""

from __future__ import annotations

import pytest

from lmsmith.train.config import DPOConfig
from lmsmith.train.loop import train

from .conftest import write_jsonl

QA = [("Name a primary color.", "Red is a primary color."), ("What is 2 + 3?", "2 + 3 is 5."),
      ("What is the opposite of hot?", "The opposite of hot is cold."), ("How many legs does a cat have?", "A cat has four legs."),
      ("What do bees make?", "Bees make honey."), ("What is frozen water called?", "Frozen water is called ice."),
      ("Which planet do we live on?", "We live on Earth."), ("How many days are in a week?", "A week has seven days."),
      ("What color is the sky on a clear day?", "The sky is blue on a clear day."),
      ("What animal says moo?", "A cow says moo."), ("What is 10 minus 4?", "10 minus 4 is 6."),
      ("What do plants need to grow?", "Plants need water and sunlight to grow."),
      ("What is the largest ocean?", "The Pacific is the largest ocean."),
      ("How many hours are in a day?", "A day has 24 hours."), ("What season comes after winter?", "Spring comes after winter."),
      ("What is the boiling point of water in Celsius?", "Water boils at 100 degrees Celsius.")]
HELD_OUT = ["What is 3 + 4?", "What color are bananas?", "How many wheels does a bicycle have?"]


@pytest.mark.slow
def test_lora_dpo_shifts_answers_to_the_preferred_style_and_keeps_paris(default_model_dir, tmp_path, registry):
    from lmsmith.demo import QUESTION
    from lmsmith.serve.generate import generate_text

    base = str(default_model_dir)
    before = [generate_text(base, q, chat=True, max_tokens=16) for q in HELD_OUT]
    assert not any(b.startswith("Certainly") for b in before), before
    pairs = [{"prompt": [{"role": "user", "content": q}],
              "chosen": [{"role": "assistant", "content": f"Certainly! {a}"}],
              "rejected": [{"role": "assistant", "content": a}]} for q, a in QA]
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    res = train(DPOConfig(model=base, data=[str(data)], lora_r=16, lr=5e-4, beta=0.1, rpo_alpha=0.5, steps=12,
                          batch_size=4, seq_len=128, warmup_steps=2, eval_fraction=0.0, mlflow=False, plot=False,
                          run_dir=str(tmp_path / "run"), output_name="polite"))
    mv = registry.get(res.ref)
    assert mv.kind == "adapter" and mv.lineage.stage == "dpo"
    after = [generate_text(res.ref, q, chat=True, max_tokens=16) for q in HELD_OUT]
    assert sum(a.startswith("Certainly") for a in after) >= 2, after
    paris = generate_text(res.ref, QUESTION, chat=True, max_tokens=24)
    assert "Paris" in paris, paris
