"""Our DPO loss on one fixed batch equals TRL's DPOTrainer loss (TRL is a test-only dependency)."""

from __future__ import annotations

import math

import pytest
import torch

from lmsmith.data.chat import IGNORE_INDEX
from lmsmith.train.dpo import preference_loss
from lmsmith.train.objectives import sequence_logps

from .conftest import synthetic_pairs

trl = pytest.importorskip("trl")


@pytest.mark.parametrize("loss", ["sigmoid", "hinge", "ipo"])
def test_dpo_loss_matches_trl(tiny_dir, tmp_path, loss):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    ref = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    policy = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    torch.manual_seed(1)
    with torch.no_grad():  # move the policy away from the reference so the loss is not just ln 2
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    args = trl.DPOConfig(output_dir=str(tmp_path), beta=0.3, loss_type=[loss], per_device_train_batch_size=4,
                         report_to=[], max_length=128, use_cpu=True, logging_steps=1, bf16=False,
                         dataloader_drop_last=False)
    trainer = trl.DPOTrainer(model=policy, ref_model=ref, args=args,
                             train_dataset=Dataset.from_list(synthetic_pairs(4)), processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    policy.eval()
    with torch.no_grad():
        trl_loss = float(trainer.compute_loss(trainer.model, batch))
        # ours on the very same tokens: labels = the completion tokens
        ours_batch = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                      "labels": batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)}
        logps, n = sequence_logps(trainer.model, ours_batch)
        ref_logps, _ = sequence_logps(ref, ours_batch)
    pc, pr = logps.double().chunk(2)
    rc, rr = ref_logps.double().chunk(2)
    nc, nr = n.chunk(2)
    per, _, _ = preference_loss(loss, 0.3, pc, pr, nc, nr, rc, rr)
    if loss == "sigmoid":
        assert abs(trl_loss - math.log(2)) > 1e-3  # policy != reference: a real comparison
    assert float(per.mean()) == pytest.approx(trl_loss, abs=1e-5)

