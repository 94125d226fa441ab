"""One optimizer step (`forward_backward` + `apply_update`) and one held-out evaluation: the loop's compute.

The benchmarks time exactly these two calls, so what they measure is what `lmsmith train` runs."""

from __future__ import annotations

from typing import Any, Callable

import torch

from lmsmith.train import distributed as D
from lmsmith.train.config import TrainConfig
from lmsmith.train.data import DataSpec, iterate_eval
from lmsmith.train.objectives import Objective


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def objective_metrics(objective: Objective, split: str = "train") -> dict[str, float]:
    """Statistics the objective gathered since it was last asked (DPO rewards, reward-model accuracy, ...)."""
    fn = getattr(objective, "metrics", None)
    return fn(split) if fn is not None else {}


def forward_backward(model, objective: Objective, micro: list[dict[str, torch.Tensor]], device: torch.device, amp,
                     max_grad_norm: float, env: D.DistEnv | None = None,
                     prepare: Callable[[dict[str, torch.Tensor]], dict[str, Any]] | None = None,
                     optimizer: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Accumulate the gradient of one optimizer step over micro-batches and clip it.

    Each micro-batch's summed loss is divided by the step's total target count, so accumulation equals one
    big batch. Returns (loss, grad norm before clipping) as device tensors: nothing here waits for the GPU
    (target counts come from the CPU copy of the batch); the loop reads them at its log steps.
    `prepare` turns a device batch into model inputs (document masks). Given the `optimizer`, a fused AdamW
    applies the clip inside its step (see clip_grad_norm)."""
    env = env or D.DistEnv()
    # Data parallel: targets are counted over all ranks and each rank's loss is scaled by the world size;
    # DDP/FSDP average gradients over ranks, which gives exactly the gradient of the global batch.
    count = sum(objective.count(b) for b in micro)
    n_target: float | torch.Tensor = max(count, 1)
    if env.enabled and env.world > 1:
        n_target = D.all_reduce_tensor(env, torch.tensor(float(count), device=device)).clamp(min=1)
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    for i, b in enumerate(micro):
        b = to_device(b, device)
        if prepare is not None:
            b = prepare(b)
        with D.maybe_no_sync(model, last=i == len(micro) - 1):
            with amp():
                loss = objective(model, b) * env.world / n_target
            loss.backward()
        loss_sum += loss.detach().float()
    if env.enabled and env.world > 1:
        loss_sum = D.all_reduce_tensor(env, loss_sum) / env.world
    grad_norm = D.clip_grad_norm([p for p in model.parameters() if p.requires_grad], max_grad_norm, optimizer)
    return loss_sum, grad_norm


def apply_update(optimizer, scheduler) -> None:
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def evaluate(model, objective: Objective, data: DataSpec, cfg: TrainConfig, device, amp, prepare=None,
             extra: dict[str, float] | None = None) -> float | None:
    """Mean held-out loss; the objective's own held-out statistics go into `extra`."""
    if not data.eval:
        return None
    objective_metrics(objective)  # train statistics not yet logged stay out of the held-out numbers
    model.eval()
    total, count = 0.0, 0
    for batch in iterate_eval(data.eval, cfg.batch_size, data.collate, cfg.eval_batches):
        batch = to_device(batch, device)
        if prepare is not None:
            batch = prepare(batch)
        with amp():
            total += float(objective(model, batch))
        count += objective.count(batch)
    model.train()
    if extra is not None:
        extra.update(objective_metrics(objective, "eval"))
    return total / max(count, 1)
