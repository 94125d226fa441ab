"""Bradley-Terry reward model as a loop objective: -log sigmoid(r_chosen - r_rejected).

The model is `AutoModelForSequenceClassification` with `num_labels=1` (a scalar `score` head on the backbone,
pooled at the last non-pad token), so the saved checkpoint loads in transformers, TRL or vLLM as it is.
Optional reward centering (Eisenstein et al. 2023, TRL's `center_rewards_coefficient`) adds
C x mean((r_chosen + r_rejected)^2), keeping rewards near zero mean. Logs TRL's RewardTrainer names:
`accuracy`, `margin`, `mean_reward`, `min_reward`, `max_reward`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmsmith.train.objectives import MODEL_INPUTS, Stats


def rewards(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    return model(**inputs, use_cache=False).logits[:, 0].float()


class BradleyTerryLoss:
    name = "reward"

    def __init__(self, cfg: Any):
        self.center = cfg.center_rewards
        self.stats = Stats()

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["input_ids"].shape[0]) // 2

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        r = rewards(model, batch)
        rc, rr = r.chunk(2)
        loss = -F.logsigmoid(rc - rr)
        if self.center:
            loss = loss + self.center * (rc + rr) ** 2
        self.stats.add("accuracy", (rc > rr).float())
        self.stats.add("margin", rc - rr)
        self.stats.add("reward", r)
        self.stats.extrema("reward", r)
        return loss.sum()

    def metrics(self, split: str = "train") -> dict[str, float]:
        out = self.stats.drain()
        if "reward" in out:
            out["mean_reward"] = out.pop("reward")
        return out
