"""GRPO with verifiable rewards as an objective of the one training loop, rolled out on lmsmith's engine.

One design choice keeps the layering one-way: the loop (`lmsmith.train`) knows nothing of engines or
rewards; it calls an objective's hooks. This objective lives in `align` (after `serve`), owns an in-process
`LLM` engine (paged KV, continuous batching, CUDA graphs on GPU) and:

- `prepare(micro)`: samples `group_size` completions for each prompt of the step in one continuous batch,
  scores them with every `--reward` function, normalizes advantages within each group, and returns the
  training batches (prompt + completion tokens, completion mask, advantages);
- `__call__`: the clipped-ratio policy loss (+ optional k3 KL to the reference: the LoRA adapter switched
  off), averaged as `loss_type` says: grpo (per sequence, then over sequences), dr_grpo (sum / (sequences x
  max_new_tokens)), dapo (over all completion tokens of the step);
- `after_update(model)`: copies the updated weights (LoRA merged on the fly) into the engine in place
  (`Engine.update_weights`): no reload from disk, no second engine.

With one update per rollout (TRL's default num_iterations=1) the old policy is the current one, so the
ratio is 1 at the update and the clip only matters for its gradient bound; `clip_ratio/*` is still logged.
Logged names follow TRL's GRPOTrainer: `reward`, `reward_std`, `frac_reward_zero_std`, `rewards/NAME/mean`,
`completions/mean_length`, `completions/clipped_ratio`, `clip_ratio/region_mean`, `kl`, plus
`rollout_tokens_per_s` and `update_tokens_per_s`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from lmsmith.align.scorers import ScorerOptions, check_spec, make_scorer
from lmsmith.data.chat import IGNORE_INDEX
from lmsmith.errors import LmsmithError
from lmsmith.train.objectives import MODEL_INPUTS, SetupContext, Stats, token_logps


def group_advantages(rewards: torch.Tensor, group: int, scale: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, per-group std): reward minus its group's mean, divided by the group's std when `scale`."""
    r = rewards.view(-1, group)
    mean, std = r.mean(1, keepdim=True), r.std(1, keepdim=True)
    adv = r - mean
    if scale:
        adv = adv / (std + 1e-4)
    return adv.reshape(-1), std.reshape(-1)


def policy_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The policy's weights under HF names; LoRA layers merged on the fly (base + delta), nothing mutated."""
    from lmsmith.train.distributed import unwrap

    inner = unwrap(model)
    if not hasattr(inner, "peft_config"):
        return {n: p.detach() for n, p in inner.named_parameters()}
    base = inner.get_base_model()
    out: dict[str, torch.Tensor] = {}
    for name, mod in base.named_modules():
        if hasattr(mod, "base_layer") and hasattr(mod, "get_delta_weight"):
            w = mod.base_layer.weight.detach()
            for a in mod.active_adapters:
                if a in getattr(mod, "lora_A", {}):
                    w = w + mod.get_delta_weight(a).to(w.dtype)
            out[f"{name}.weight"] = w
    return out  # only the adapted layers change under LoRA


class GRPOObjective:
    name = "grpo"

    def __init__(self, cfg: Any):
        if not cfg.reward:
            raise LmsmithError("GRPO needs at least one --reward", "e.g. --reward verifier:exact_number")
        for spec in cfg.reward:
            check_spec(spec)
        if cfg.reward_weights is not None and len(cfg.reward_weights) != len(cfg.reward):
            raise LmsmithError(f"{len(cfg.reward_weights)} --reward-weights for {len(cfg.reward)} --reward")
        if cfg.kl_beta > 0 and not cfg.use_lora:
            raise LmsmithError("--kl-beta > 0 needs a reference model; with LoRA it is the adapter switched off",
                               "add --lora-r R, or keep --kl-beta 0 (the current default practice)")
        self.cfg = cfg
        self.stats = Stats()
        self.llm: Any = None
        self.rows: Any = None
        self.step = 0
        self.stale = True
        self.timing = {"rollout_s": 0.0, "rollout_tokens": 0, "update_s": 0.0, "update_tokens": 0, "sync_s": 0.0}
        self._t_update = 0.0
        self._update_tokens = 0

    # -- setup: scorers and the rollout engine --------------------------------------------------------------
    def setup(self, ctx: SetupContext) -> None:
        from lmsmith.serve.llm import LLM

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            raise LmsmithError("GRPO runs on one process for now", "drop --nproc")
        c = self.cfg
        self.ctx = ctx
        self.rows = ctx.data.train
        self.scorers = [make_scorer(spec, ScorerOptions(device=str(ctx.device))) for spec in c.reward]
        self.weights = c.reward_weights or [1.0] * len(self.scorers)
        seqs = c.batch_size * c.grad_accum * c.group_size
        longest = max(len(r.ids) for r in self.rows) + c.max_new_tokens
        block = 16
        blocks = seqs * -(-longest // block) + 8  # every sequence of a step at full length: no preemption
        # the engine gets only what the rollouts need; the rest of the GPU stays with training
        self.llm = LLM(ctx.base_ref or c.model, dtype=c.engine_dtype, device=str(ctx.device), max_num_seqs=seqs,
                       num_kv_blocks=blocks, max_model_len=longest + 1, block_size=block,
                       max_num_batched_tokens=max(2048, seqs * 64))
        self.stale = True  # pushed before the first rollout: on resume the checkpoint is loaded after setup

    def push(self, model: nn.Module) -> None:
        t = time.perf_counter()
        self.llm.engine.update_weights(policy_weights(model))
        self.timing["sync_s"] += time.perf_counter() - t

    # -- rollouts -> training batches -------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, micro: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        from lmsmith.serve.sampling_params import SamplingParams

        c, g = self.cfg, self.cfg.group_size
        if self.stale:
            self.push(self.ctx.model)
            self.stale = False
        rows_per_micro = [[self.rows[int(i)] for i in m["prompt_index"]] for m in micro]
        rows = [r for rs in rows_per_micro for r in rs]
        params = [SamplingParams(n=g, temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_new_tokens,
                                 seed=(c.seed * 1_000_003 + self.step * 7919 + i * g) % 2**31)
                  for i in range(len(rows))]
        t0 = time.perf_counter()
        outs = self.llm.generate([r.ids for r in rows], params, use_tqdm=False)
        dt = time.perf_counter() - t0
        self.step += 1
        comps = [o for out in outs for o in out.outputs]
        flat_rows = [r for r in rows for _ in range(g)]
        texts = [o.text for o in comps]
        total = torch.zeros(len(comps), dtype=torch.float64)
        for scorer, w in zip(self.scorers, self.weights):
            vals = scorer.score(flat_rows, texts)
            v = torch.tensor([math.nan if x is None else x for x in vals], dtype=torch.float64)
            if not torch.isnan(v).all():
                self.stats.add(f"rewards/{scorer.name}/mean", v[~torch.isnan(v)])
            total += w * torch.nan_to_num(v, nan=0.0)
        adv, std = group_advantages(total, g, c.scale_rewards)
        lengths = torch.tensor([len(o.token_ids) for o in comps], dtype=torch.float64)
        n_gen = int(lengths.sum())
        self.timing["rollout_s"] += dt
        self.timing["rollout_tokens"] += n_gen
        self.stats.add("reward", total)
        self.stats.add("reward_std", std)
        self.stats.add("frac_reward_zero_std", (std < 1e-6).double())
        self.stats.add("completions/mean_length", lengths)
        self.stats.add("completions/clipped_ratio",
                       torch.tensor([o.finish_reason == "length" for o in comps], dtype=torch.float64))
        self.stats.add("rollout_tokens_per_s", torch.tensor([n_gen / max(dt, 1e-9)]))
        batches, k = [], 0
        pad = self.ctx.tokenizer.pad_token_id if self.ctx.tokenizer.pad_token_id is not None else 0
        for rs in rows_per_micro:
            n = len(rs) * g
            seqs = [(r.ids, list(o.token_ids)) for r, o in zip([r for r in rs for _ in range(g)], comps[k:k + n])]
            t = max(len(p) + len(q) for p, q in seqs)
            ids = torch.full((n, t), pad, dtype=torch.long)
            labels = torch.full((n, t), IGNORE_INDEX, dtype=torch.long)
            mask = torch.zeros((n, t), dtype=torch.long)
            for j, (p, q) in enumerate(seqs):
                ids[j, :len(p) + len(q)] = torch.tensor(p + q)
                labels[j, len(p):len(p) + len(q)] = torch.tensor(q, dtype=torch.long)
                mask[j, :len(p) + len(q)] = 1
            batch = {"input_ids": ids, "attention_mask": mask, "labels": labels,
                     "advantages": adv[k:k + n].float()}
            if c.kl_beta > 0:
                batch["ref_logps"] = self._ref_logps(batch)
            batches.append(batch)
            k += n
        self._update_tokens = sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in batches)
        self._t_update = time.perf_counter()
        return batches

    def _ref_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from lmsmith.train.dpo import adapter_off

        model, dev = self.ctx.model, self.ctx.device
        inputs = {k: v.to(dev) for k, v in batch.items() if k in MODEL_INPUTS}
        with adapter_off(model), self.ctx.amp():
            logits = model(**inputs, use_cache=False).logits[:, :-1]
        return token_logps(logits, batch["labels"][:, 1:].to(dev)).cpu()

    # -- the loss ---------------------------------------------------------------------------------------------
    def count(self, batch: dict[str, torch.Tensor]) -> int:
        n = int(batch["input_ids"].shape[0])
        if self.cfg.loss_type == "grpo":
            return n
        if self.cfg.loss_type == "dr_grpo":
            return n * self.cfg.max_new_tokens
        return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.cfg
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        logits = model(**inputs, use_cache=False).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        mask = (labels != IGNORE_INDEX).float()
        lp = token_logps(logits, labels)
        old = lp.detach()  # one update per rollout: the sampling policy is the current one
        ratio = torch.exp(lp - old)
        a = batch["advantages"].to(lp.dtype).unsqueeze(1)
        lo, hi = 1 - c.epsilon, 1 + (c.epsilon_high if c.epsilon_high is not None else c.epsilon)
        per_token = -torch.min(ratio * a, ratio.clamp(lo, hi) * a)
        if c.kl_beta > 0:
            d = batch["ref_logps"].to(lp) - lp
            kl = torch.exp(d) - d - 1  # k3 estimator, as TRL
            per_token = per_token + c.kl_beta * kl
            self.stats.add("kl", (kl * mask).sum() / mask.sum().clamp(min=1))
        clipped = ((ratio < lo) & (a < 0)) | ((ratio > hi) & (a > 0))
        self.stats.add("clip_ratio/region_mean", (clipped.float() * mask).sum() / mask.sum().clamp(min=1))
        per_token = per_token * mask
        if c.loss_type == "grpo":
            return (per_token.sum(-1) / mask.sum(-1).clamp(min=1)).sum()
        return per_token.sum()

    def after_update(self, model: nn.Module) -> None:
        dt = time.perf_counter() - self._t_update
        self.timing["update_s"] += dt
        self.timing["update_tokens"] += self._update_tokens
        self.stats.add("update_tokens_per_s", torch.tensor([self._update_tokens / max(dt, 1e-9)]))
        self.push(model)

    def metrics(self, split: str = "train") -> dict[str, float]:
        return self.stats.drain()

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()


def train_grpo(cfg: Any, command: str | None = None):
    """`lmsmith train grpo` as a function: the one loop with this objective."""
    from lmsmith.train.loop import train

    return train(cfg, command, GRPOObjective(cfg))
