"""DPO family on tiny models: ln 2 at step 0, every loss variant trains every weight, held-out accuracy,
TRL's three data formats with response-only labels, file:line errors, and loss parity with TRL."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lmsmith.data.chat import IGNORE_INDEX
from lmsmith.data.preference import parse_pair, read_pairs, render_pair
from lmsmith.errors import LmsmithError
from lmsmith.train.config import DPOConfig
from lmsmith.train.loop import train
from lmsmith.train.tracking import read_metrics

from .conftest import fast, synthetic_pairs, write_jsonl


def records(run_dir: Path, split: str = "train") -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("split", "train") == split]


def test_step0_sigmoid_loss_is_ln2_and_trl_metric_names(tiny_ref, pairs_file, tmp_path):
    res = train(DPOConfig(model=tiny_ref, data=[str(pairs_file)], steps=1, lr=1e-3, run_dir=str(tmp_path / "r"),
                          **fast()))
    first = records(res.run_dir)[0]
    assert abs(first["loss"] - math.log(2)) < 1e-5, first["loss"]
    for k in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
              "logps/rejected"):
        assert k in first
    assert abs(first["rewards/margins"]) < 1e-5 and first["logps/chosen"] < 0


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "hinge", "simpo", "orpo"])
def test_each_loss_changes_every_trainable_parameter(tiny_ref, tiny_dir, pairs_file, tmp_path, loss):
    from transformers import AutoModelForCausalLM

    res = train(DPOConfig(model=tiny_ref, data=[str(pairs_file)], steps=1, lr=1e-3, loss=loss,
                          run_dir=str(tmp_path / "r"), **fast()))
    before = AutoModelForCausalLM.from_pretrained(tiny_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(res.output_dir).state_dict()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, unchanged
    assert math.isfinite(records(res.run_dir)[0]["loss"])


def test_tiny_dpo_reaches_heldout_accuracy(tiny_ref, tmp_path, registry):
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(60, "conversational"))
    res = train(DPOConfig(model=tiny_ref, data=[str(data)], steps=30, lr=2e-3, beta=0.5,
                          eval_every=10, run_dir=str(tmp_path / "r"), output_name="tiny-dpo",
                          **fast(eval_fraction=0.2)))
    evals = records(res.run_dir, "eval")
    assert evals[0]["step"] == 0 and abs(evals[0]["rewards/margins"]) < 1e-4
    assert evals[-1]["rewards/accuracies"] >= 0.9, evals[-1]
    assert evals[-1]["rewards/margins"] > 0
    mv = registry.get(res.ref)
    assert mv.lineage.stage == "dpo" and mv.lineage.parent == "tiny@1" and mv.lineage.data[0].sha256
    assert mv.metrics["eval_rewards/accuracies"] >= 0.9


def test_lora_reference_is_the_adapter_switched_off(tiny_ref, pairs_file, tmp_path):
    res = train(DPOConfig(model=tiny_ref, data=[str(pairs_file)], steps=2, lr=1e-2, lora_r=4, rpo_alpha=1.0,
                          run_dir=str(tmp_path / "r"), **fast(full=False)))
    recs = records(res.run_dir)
    assert recs[0]["rewards/margins"] == pytest.approx(0, abs=1e-5)  # LoRA B starts at zero: policy == reference
    assert recs[0]["loss"] > math.log(2)  # + the chosen NLL
    assert (res.output_dir / "adapter_model.safetensors").exists()


def test_three_formats_render_the_same_tokens(tiny_dir):
    from lmsmith.models import load_tokenizer

    tok = load_tokenizer(str(tiny_dir))
    rendered = [render_pair(tok, parse_pair(synthetic_pairs(3, fmt)[2], "x:1")) for fmt in
                ("standard", "conversational", "implicit")]
    for ex in rendered[1:]:
        assert ex.chosen.input_ids == rendered[0].chosen.input_ids and ex.chosen.labels == rendered[0].chosen.labels
    ex = rendered[0]
    answer = tok.decode([t for t in ex.chosen.labels if t != IGNORE_INDEX])
    assert answer.startswith("yes 2 yes") and "color" not in answer  # loss on the answer only
    assert ex.rejected.input_ids[:10] == ex.chosen.input_ids[:10]


def test_prompt_assistant_turns_are_not_scored(tiny_dir):
    from lmsmith.models import load_tokenizer

    tok = load_tokenizer(str(tiny_dir))
    rec = {"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "earlier turn"},
                      {"role": "user", "content": "again"}],
           "chosen": [{"role": "assistant", "content": "good"}], "rejected": [{"role": "assistant", "content": "bad"}]}
    ex = render_pair(tok, parse_pair(rec, "x:1"))
    assert "earlier" not in tok.decode([t for t in ex.chosen.labels if t != IGNORE_INDEX])


@pytest.mark.parametrize("line,msg", [
    ('{"prompt": "q", "chosen": "a"}', "needs 'chosen' and 'rejected'"),
    ('{"prompt": "q", "chosen": "a", "rejected": "a"}', "identical"),
    ('{"prompt": "q", "chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]}', "same form"),
    ('{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "user", "content": "a"}], '
     '"rejected": [{"role": "assistant", "content": "b"}]}', "assistant message"),
    ('{not json', "not valid JSON"),
])
def test_bad_record_is_named_by_file_and_line(tmp_path, line, msg):
    f = write_jsonl(tmp_path / "p.jsonl", synthetic_pairs(2) + [line])
    with pytest.raises(LmsmithError, match=rf"p.jsonl:3: .*{msg}"):
        read_pairs(f)
    assert len(read_pairs(f, skip_bad_lines=True)[0]) == 2


def test_cli_dpo_runs_and_registers(tiny_ref, pairs_file, tmp_path, registry):
    from lmsmith.cli import main

    rc = main(["train", "dpo", "--model", tiny_ref, "--data", str(pairs_file), "--steps", "2", "--beta", "0.2",
               "--loss", "ipo", "--seq-len", "64", "--batch-size", "4", "--lr", "1e-3", "--no-mlflow", "--no-plot",
               "--lora-r", "4", "--output-name", "cli-dpo", "--run-dir", str(tmp_path / "r")])
    assert rc == 0
    mv = registry.get("cli-dpo")
    assert mv.kind == "adapter" and mv.lineage.config["loss"] == "ipo" and mv.lineage.config["beta"] == 0.2
