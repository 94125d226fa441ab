"""GRPO on the engine: weights pushed in place match a freshly loaded engine; a toy verifiable reward rises."""

from __future__ import annotations

import pytest
import torch

from lmsmith.align.grpo import group_advantages, train_grpo
from lmsmith.train.config import GRPOConfig
from lmsmith.train.tracking import read_metrics

from .conftest import write_jsonl


def test_update_weights_in_place_equals_loading_them(tmp_path):
    from transformers import AutoModelForCausalLM

    from lmsmith.serve.llm import LLM
    from lmsmith.serve.sampling_params import SamplingParams
    from lmsmith.tiny import build_tiny

    a, b = build_tiny(tmp_path / "a", seed=0), build_tiny(tmp_path / "b", seed=1)
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    prompts = ["Praha je", "The quick brown fox"]
    want = [o.outputs[0].token_ids for o in LLM(str(b)).generate(prompts, params, use_tqdm=False)]
    llm = LLM(str(a))
    before = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    assert before != want
    sd = AutoModelForCausalLM.from_pretrained(b).state_dict()
    assert llm.engine.update_weights(sd) >= len(sd) - 1
    got = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    assert got == want


def test_group_advantages():
    adv, std = group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0, 2.0, 2.0, 2.0]), 4)
    assert adv[:4].sum().abs() < 1e-6 and adv[0] > 0 > adv[1]
    assert torch.all(adv[4:] == 0) and std[1] == 0
    raw, _ = group_advantages(torch.tensor([3.0, 1.0]), 2, scale=False)
    assert raw.tolist() == [1.0, -1.0]


VERIFIER = '''
def share_of_e(prompts, completions, **kw):
    return [sum(ch == "e" for ch in c) / max(len(c), 1) for c in completions]
'''


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_grpo_raises_mean_reward_on_a_toy_verifiable_task(tiny_ref, tmp_path, monkeypatch, registry, loss_type):
    (tmp_path / "toyreward.py").write_text(VERIFIER)
    monkeypatch.syspath_prepend(str(tmp_path))
    prompts = write_jsonl(tmp_path / "tasks.jsonl", [{"prompt": f"Write letters {i}."} for i in range(8)])
    res = train_grpo(GRPOConfig(model=tiny_ref, data=[str(prompts)], reward=["verifier:toyreward:share_of_e"],
                           full=True, group_size=8, batch_size=4, max_new_tokens=8, steps=24, lr=3e-3,
                           warmup_steps=0, loss_type=loss_type, mlflow=False, plot=False, workers=1, seq_len=64,
                           run_dir=str(tmp_path / "r"), output_name="tiny-grpo"))
    recs = [r for r in read_metrics(res.run_dir / "metrics.jsonl") if "split" not in r]
    assert len(recs) == 24
    first = sum(r["reward"] for r in recs[:4]) / 4
    last = sum(r["reward"] for r in recs[-4:]) / 4
    assert last > first + 0.05 and last > 1.5 * first, (first, last)
    for k in ("reward_std", "frac_reward_zero_std", "rewards/share_of_e/mean", "completions/mean_length",
              "completions/clipped_ratio", "clip_ratio/region_mean", "rollout_tokens_per_s", "update_tokens_per_s"):
        assert k in recs[-1], k
    mv = registry.get(res.ref)
    assert mv.lineage.stage == "grpo" and mv.lineage.config["reward"] == ["verifier:toyreward:share_of_e"]
