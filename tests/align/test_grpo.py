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


def test_grpo_raises_mean_reward_on_a_toy_verifiable_task(tiny_ref, tmp_path, monkeypatch, registry):
    (tmp_path / "toyreward.py").write_text(VERIFIER)
    monkeypatch.syspath_prepend(str(tmp_path))
    prompts = write_jsonl(tmp_path / "tasks.jsonl", [{"prompt": f"Write letters {i}."} for i in range(8)])
    res = train_grpo(GRPOConfig(model=tiny_ref, data=[str(prompts)], reward=["verifier:toyreward:share_of_e"],
                           full=True, group_size=8, batch_size=4, max_new_tokens=8, steps=24, lr=3e-3,
                           warmup_steps=0, loss_type="dapo", mlflow=False, plot=False, workers=1, seq_len=64,
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


class _Cfg:
    epsilon, epsilon_high, kl_beta, max_new_tokens = 0.2, None, 0.0, 10
    reward, reward_weights, use_lora = ["verifier:exact_number"], None, False

    def __init__(self, loss_type):
        self.loss_type = loss_type


def test_loss_types_average_as_documented():
    """grpo: mean over each sequence's tokens, summed over sequences (the loop divides by #sequences);
    dapo: summed over all tokens (divided by #tokens); dr_grpo: divided by #sequences x max_new_tokens."""
    from lmsmith.align.grpo import GRPOObjective

    class Const(torch.nn.Module):  # uniform logits: every token log-prob = -log(vocab), gradient-free check
        def forward(self, input_ids, **kw):
            return type("O", (), {"logits": torch.zeros(*input_ids.shape, 8, requires_grad=True)})()

    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 5, 6, 7, 1]])  # 2 and 4 completion tokens
    batch = {"input_ids": torch.ones(2, 5, dtype=torch.long), "labels": labels,
             "advantages": torch.tensor([1.0, -0.5])}
    counts, losses = {}, {}
    for lt in ("grpo", "dapo", "dr_grpo"):
        obj = GRPOObjective(_Cfg(lt))
        counts[lt], losses[lt] = obj.count(batch), float(obj(Const(), batch))
    assert counts == {"grpo": 2, "dapo": 6, "dr_grpo": 20}
    # ratio = 1: per-token loss = -advantage
    assert losses["grpo"] == pytest.approx(-1.0 + 0.5)
    assert losses["dapo"] == pytest.approx(-1.0 * 2 + 0.5 * 4)
    assert losses["dr_grpo"] == losses["dapo"]


def test_cli_grpo_one_step(tiny_ref, tmp_path, monkeypatch, registry):
    from lmsmith.cli import main

    prompts = write_jsonl(tmp_path / "tasks.jsonl", [{"prompt": "What is 2 + 2?", "answer": "4"}] * 2)
    rc = main(["train", "grpo", "--model", tiny_ref, "--prompts", str(prompts), "--reward", "verifier:exact_number",
               "--group-size", "2", "--batch-size", "2", "--max-new-tokens", "3", "--steps", "1", "--full",
               "--no-mlflow", "--no-plot", "--run-dir", str(tmp_path / "r"), "--output-name", "cli-grpo"])
    assert rc == 0 and registry.get("cli-grpo").lineage.config["group_size"] == 2
    rc = main(["train", "grpo", "--model", tiny_ref, "--prompts", str(prompts), "--reward", "bogus",
               "--run-dir", str(tmp_path / "r2")])
    assert rc == 1
