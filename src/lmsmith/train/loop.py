"""The training loop, written once for pretraining, continued pretraining, SFT, DPO, reward models,
distillation and (with align's objective) GRPO.

`train(cfg)` is four pieces, one file each: `setup.setup` validates everything cheap first (data, model source,
resume config), then builds data, model, objective and optimizer into a `run.Run`; `hooks.resume` loads the last
good checkpoint; `run_steps` runs optimizer steps of `grad_accum` micro-batches (`step.forward_backward`: clipping,
autocast) while `hooks.Hooks` logs them (NaN detection), evaluates and writes atomic checkpoints; at the end
`finish.finish` saves the result (adapter, merged or full model) and registers it with lineage, and the curves
are plotted.
"""

from __future__ import annotations

from typing import Any

import torch

from lmsmith.progress import console, make_progress
from lmsmith.train import distributed as D
from lmsmith.train.config import TrainConfig
from lmsmith.train.data import Prefetcher
from lmsmith.train.finish import finish, merge_adapter
from lmsmith.train.fused_loss import remove_fused_head
from lmsmith.train.hooks import Hooks, NonFiniteLoss, flops_per_token, resume
from lmsmith.train.objectives import Objective
from lmsmith.train.run import FAULT_ENV, Run, TrainResult
from lmsmith.train.setup import CONFIGS, config_class, precheck, prepare_run_dir, setup
from lmsmith.train.step import apply_update, evaluate, forward_backward
from lmsmith.train.tracking import Tracker, plot_curves

# the loop's public names, wherever they live now (the CLI, align, benchmarks and tests import them from here)
__all__ = ["CONFIGS", "FAULT_ENV", "NonFiniteLoss", "TrainResult", "apply_update", "config_class", "evaluate",
           "finish", "flops_per_token", "forward_backward", "merge_adapter", "precheck", "prepare_run_dir", "train"]


def train(cfg: TrainConfig, command: str | None = None, objective: Objective | None = None) -> TrainResult:
    """Run on this process alone, or as one rank of a torchrun job (the same loop either way).

    `objective`: what to minimize (default: the task's built-in one, `make_objective(cfg)`). A later stage
    passes its own (GRPO, in lmsmith.align) without the loop ever importing it."""
    env = D.init_distributed(cfg.device)
    ok = False
    try:
        result = _train(cfg, command, env, objective)
        ok = True
        return result
    finally:
        D.shutdown(env, wait_for_all=ok)


def _train(cfg: TrainConfig, command: str | None, env: D.DistEnv, objective: Objective | None = None) -> TrainResult:
    run = setup(cfg, command, env, objective)
    resume(run)
    if run.start >= run.steps:
        console.print(f"run already complete at step {run.start}")
    hooks = Hooks(run, open_tracker(run))
    # next batches collated and pinned in a background thread while the GPU computes
    run.batches = Prefetcher(run.loader, depth=run.cfg.prefetch, pin=run.device.type == "cuda")
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    status = "FAILED"
    if run.start == 0 and run.data.eval:
        hooks.eval_record(0)  # the starting point of the eval curve
    try:
        with hooks.intr, make_progress() as progress:
            hooks.progress, hooks.bar = progress, progress.add_task(run.cfg.task, total=run.steps, completed=run.start,
                                                                    info="")
            run_steps(run, hooks)
        if run.interrupted:
            path = hooks.checkpoint(run.step)
            status = "KILLED"
            console.print(f"interrupted at step {run.step}; checkpoint {path}\n"
                          f"continue with: lmsmith train resume {run.run_dir}")
            return TrainResult(run.run_dir, run.run_id, run.step, {"loss": run.last_loss}, interrupted=True)
        result = complete(run, hooks)
        status = "FINISHED"
        return result
    finally:
        close(run, hooks.tracker, status)


def open_tracker(run: Run) -> Tracker | D.NullTracker:
    """metrics.jsonl (+ MLflow) on the main process, continued at the step the run resumes from; the run's
    parameters logged and announced."""
    cfg, env, built = run.cfg, run.env, run.built
    tracker = (Tracker(run.run_dir, run.run_id, cfg.mlflow, cfg.tracking_uri, cfg.experiment, resume_step=run.start)
               if env.is_main else D.NullTracker())
    tracker.log_params({**cfg.model_dump(mode="json"), "run_id": run.run_id, "base": built.base_ref,
                        "params": built.n_params, "trainable_params": built.n_trainable})
    console.print(f"run {run.run_id}: {cfg.task}, {built.n_trainable:,} of {built.n_params:,} parameters trainable "
                  f"({'QLoRA' if cfg.qlora else 'LoRA' if cfg.use_lora else 'full'}), {run.steps} steps on {run.device}"
                  f"{' with bf16 autocast' if run.amp_dtype else ''}"
                  f"{f' x {env.world} processes ({run.strategy})' if env.enabled else ''}; run dir {run.run_dir}")
    return tracker


def run_steps(run: Run, hooks: Hooks) -> None:
    """Optimizer steps from `run.step` to `run.steps`, or until a Ctrl-C (`run.interrupted`)."""
    cfg = run.cfg
    prepare_step = getattr(run.objective, "prepare", None)  # e.g. GRPO: rollouts and rewards become the batches
    after_update = getattr(run.objective, "after_update", None)  # e.g. GRPO: new weights into the rollout engine
    hooks.start_clock()
    while run.step < run.steps:
        micro = [run.batches.next() for _ in range(cfg.grad_accum)]
        if prepare_step is not None:
            micro = prepare_step(micro)
        n_tokens = sum(int(b["input_ids"].numel()) for b in micro)
        loss_sum, grad_norm = forward_backward(run.model, run.objective, micro, run.device, run.amp, cfg.max_grad_norm,
                                               run.env, run.doc_masks, run.optimizer)
        lr = run.scheduler.get_last_lr()[0]
        apply_update(run.optimizer, run.scheduler)
        if after_update is not None:
            after_update(run.model)
        run.step += 1
        run.tokens += n_tokens * run.env.world
        hooks.after_step(loss_sum, grad_norm, lr, n_tokens)
        if hooks.should_stop():
            run.interrupted = True
            break
    hooks.flush()


def complete(run: Run, hooks: Hooks) -> TrainResult:
    """The final evaluation and checkpoint, then the weights saved and registered (gathered from all ranks
    when sharded; saved and registered on rank 0)."""
    cfg, env = run.cfg, run.env
    last_eval = hooks.eval_record(run.step)
    if run.start < run.steps:
        hooks.checkpoint(run.step)
    metrics: dict[str, Any] = {"train_loss": run.last_loss, "steps": run.step, "tokens": run.tokens}
    if last_eval is not None:
        metrics["eval_loss"] = last_eval
        metrics.update({f"eval_{k}": v for k, v in run.eval_metrics.items()})
    if env.enabled:
        sd = D.full_state_dict(run.model, env, trainable_only=cfg.use_lora)
        return D.on_main(env, lambda: finish(cfg, run.built, run.data, run.run_dir, run.run_id, metrics, run.command,
                                             hooks.tracker, sd))
    sd, masters = None, getattr(run.optimizer, "master_state_dict", None)
    if masters is not None:  # bf16 weights: save their fp32 masters
        remove_fused_head(D.unwrap(run.model))
        sd = masters(D.unwrap(run.model))
    return finish(cfg, run.built, run.data, run.run_dir, run.run_id, metrics, run.command, hooks.tracker, sd)


def close(run: Run, tracker: Tracker | D.NullTracker, status: str) -> None:
    """Whatever happened: the objective's resources released (GRPO's rollout engine), the curves plotted, the
    tracker closed with the run's status."""
    close_objective = getattr(run.objective, "close", None)
    if close_objective is not None:
        close_objective()
    if run.cfg.plot and run.env.is_main:
        try:
            png = plot_curves(run.run_dir / "metrics.jsonl", run.run_dir / "curves.png")
            if png:
                tracker.log_artifact(png)
        except Exception as e:  # a plot must never lose a run
            console.print(f"[yellow]warning:[/] could not plot curves: {e}")
    tracker.close(status)
