"""What the loop does around its optimizer steps: resume from the last good checkpoint, log the step metrics
(loss, grad norm, tokens/s, MFU, memory, the objective's own) with the NaN guard, evaluate, save checkpoints,
and stop cleanly on Ctrl-C.

Steps run without waiting for the GPU: loss and grad norm stay on the device and are read at log steps (every
--log-every steps, 10 by default on CUDA, every step on CPU), before any checkpoint, evaluation or exit. The NaN
guard runs there, so a diverged run never writes a checkpoint.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch

from lmsmith import hardware
from lmsmith.errors import LmsmithError
from lmsmith.progress import console
from lmsmith.train import distributed as D
from lmsmith.train.checkpoint import clean_stale, latest_checkpoint, load_checkpoint, resume_checkpoint, save_checkpoint
from lmsmith.train.run import Run, fault
from lmsmith.train.setup import LM_TASKS
from lmsmith.train.step import evaluate, objective_metrics
from lmsmith.train.tracking import Tracker


class NonFiniteLoss(LmsmithError):
    pass


def flops_per_token(model: torch.nn.Module, n_trainable: int, seq_len: int) -> float:
    """Matmul FLOPs per trained token of `model` (`lmsmith.hardware.flops_per_token`; quantized weights count
    their logical size)."""
    cfg = getattr(model, "config", None)
    emb = model.get_input_embeddings().weight
    total = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() * 2 for n, b in model.named_buffers() if n.endswith("qweight"))
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    n = total if tied else total - emb.numel()
    layers = getattr(cfg, "num_hidden_layers", 0) or 0
    hidden = getattr(cfg, "hidden_size", 0) or 0
    return hardware.flops_per_token(n, n_trainable, layers, hidden, seq_len)


def resume(run: Run) -> None:
    """On --resume, load the last good checkpoint (falling back past broken ones) into the model, optimizer,
    scheduler and loader; on another number of processes, rebalance the per-process batch to keep the global one."""
    cfg, env = run.cfg, run.env
    if not cfg.resume:
        return
    if env.is_main:
        clean_stale(run.ckpt_root)  # left by a save that crashed or failed

    def load(path: Path) -> dict:
        if D.is_dcp_checkpoint(path):
            return D.load_dcp(path, run.model, run.optimizer, run.scheduler, env)
        if env.enabled:
            raise LmsmithError(f"{path} was written by a single-process run", "resume it without --nproc/torchrun")
        return load_checkpoint(path, run.model, run.optimizer, run.scheduler)

    last, saved = resume_checkpoint(run.ckpt_root, load, say=lambda m: console.print(f"[yellow]{m}"))
    if last is None:
        console.print("no checkpoint yet in the run directory; starting from step 0")
        return
    if int(saved.get("world", 1)) != env.world:  # same global batch on another number of processes
        bs, accum = D.rebalance(cfg.batch_size, cfg.grad_accum, int(saved.get("world", 1)), env.world)
        run.loader.batch_size, run.cfg = bs, cfg.model_copy(update={"batch_size": bs, "grad_accum": accum})
        console.print(f"resuming on {env.world} process(es) instead of {saved['world']}: "
                      f"--batch-size {bs} x --grad-accum {accum} per process keeps the global batch")
    run.loader.load_state(saved["data"])
    run.start = run.step = int(saved["step"])
    run.tokens = saved.get("tokens", 0)
    console.print(f"resumed from {last} (step {run.start})")


class Interrupt:
    """Ctrl-C sets a flag; the loop finishes the step, checkpoints and exits cleanly. A second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> "Interrupt":
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handle(self, *_: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        console.print("\n[yellow]interrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)")

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class Hooks:
    """The loop's side work for one run: `after_step` records a step (logging at log steps, evaluating and
    checkpointing on schedule), `flush` logs what is pending, `checkpoint` and `eval_record` save and evaluate.
    `progress`/`bar` are set by the loop once its progress bar is open."""

    def __init__(self, run: Run, tracker: Tracker | D.NullTracker) -> None:
        self.run, self.tracker = run, tracker
        self.fault = fault()
        self.intr = Interrupt()
        self.agreed_stop = False  # ranks stop together once a log step agreed on it
        self.fpt = flops_per_token(D.unwrap(run.model), run.built.n_trainable, run.cfg.seq_len)
        peak = hardware.peak_flops(run.device)
        self.peak = peak * run.env.world if peak else peak  # MFU of all GPUs together (= per GPU on even shards)
        self.sync_every = run.cfg.log_every or (10 if run.device.type == "cuda" else 1)
        self.pending: list[dict[str, Any]] = []
        self.window = {"t": time.perf_counter(), "tokens": 0}
        self.progress: Any = None
        self.bar: Any = None

    # ------------------------------------------------------------------------- per step
    def start_clock(self) -> None:
        self.window["t"] = time.perf_counter()

    def after_step(self, loss: torch.Tensor, grad_norm: torch.Tensor, lr: float, n_tokens: int) -> None:
        run, cfg, step, f = self.run, self.run.cfg, self.run.step, self.fault
        self.window["tokens"] += n_tokens
        self.pending.append({"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": run.tokens,
                             "epoch": run.batches.epoch})
        self.progress.update(self.bar, completed=step)
        if step % self.sync_every == 0 or step == run.steps:
            self.flush()
        if cfg.eval_every and step % cfg.eval_every == 0 and step < run.steps:
            self.eval_record(step)
        if f and f[0] in ("kill-after-step", "interrupt-after-step") and f[1] == step:
            self.flush()
            os.kill(os.getpid(), signal.SIGKILL if f[0] == "kill-after-step" else signal.SIGINT)
        if (cfg.save_every and step % cfg.save_every == 0 and step < run.steps) or (f and f == ("kill-during-save", step)):
            self.checkpoint(step)

    def should_stop(self) -> bool:
        """One process stops at once; ranks stop together at a log step (`flush` agrees on the flag)."""
        env = self.run.env
        return self.intr.requested and (not env.enabled or env.world == 1 or self.agreed_stop)

    # ------------------------------------------------------------------------- logging
    def flush(self) -> None:
        """Read the pending steps' loss and grad norm off the device, stop on a non-finite one, log them."""
        run, env, device, pending, window = self.run, self.run.env, self.run.device, self.pending, self.window
        if not pending:
            return
        values = torch.stack([torch.stack([r["loss"].float(), r["grad_norm"].float()]) for r in pending]).tolist()
        if env.enabled and env.world > 1:  # tokens of all ranks; a Ctrl-C on any rank stops all of them
            n_tok, stop = D.all_reduce_sum(env, [window["tokens"], float(self.intr.requested)])
            window["tokens"] = int(n_tok)
            if stop > 0:
                self.intr.requested = self.agreed_stop = True
        dt = max(time.perf_counter() - window["t"], 1e-9)
        tps = window["tokens"] / dt
        mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        records, pending[:] = list(pending), []
        window.update(t=time.perf_counter(), tokens=0)
        extra = objective_metrics(run.objective)  # averaged over the steps since the last log
        for i, (r, (loss, gn)) in enumerate(zip(records, values)):
            if self.fault and self.fault == ("nan-at-step", r["step"]):
                loss = float("nan")
            if not math.isfinite(loss) or not math.isfinite(gn):
                last = latest_checkpoint(run.ckpt_root)
                where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
                raise NonFiniteLoss(f"training diverged: loss is {loss} (grad norm {gn:.3g}) "
                                    f"at step {r['step']}; stopped, {where}",
                                    "lower --lr, raise --warmup-steps or check the data")
            rec: dict[str, Any] = {**r, "loss": loss, "grad_norm": gn, "tokens_per_s": tps}
            if self.peak:
                rec["mfu"] = self.fpt * tps / self.peak
            if mem is not None:
                rec["peak_mem_gb"] = mem
            if i == len(records) - 1:
                rec.update(extra)
            self.tracker.log(rec)
            run.last_loss = loss
        last = rec
        self.progress.update(self.bar, info=f"loss {last['loss']:.4f}  {tps:,.0f} tok/s")
        if run.cfg.log_every:
            self.progress.console.print(f"step {last['step']}/{run.steps}  loss {last['loss']:.4f}  lr {last['lr']:.3g}  "
                                        f"grad norm {last['grad_norm']:.3g}  {tps:,.0f} tok/s"
                                        + (f"  mfu {last['mfu']:.1%}" if "mfu" in last else ""))

    # ------------------------------------------------------------------------- checkpoints and evaluation
    def checkpoint(self, step: int) -> Path:
        """An atomic checkpoint of model, optimizer, scheduler and data position (sharded on several processes:
        torch.distributed.checkpoint, loadable on any number of them)."""
        self.flush()
        run, f = self.run, self.fault
        f = f[0] if f and f[1] == step and f[0] in ("kill-during-save", "disk-full") else None
        state = {"data": run.batches.state(), "tokens": run.tokens, "run_id": run.run_id,
                 "master_weights": hasattr(run.optimizer, "master_state_dict")}  # the weights' layout, for resume
        if run.env.enabled:
            return D.save_dcp(run.ckpt_root, step, run.model, run.optimizer, run.scheduler, state, run.env,
                              keep=run.cfg.keep_checkpoints)
        return save_checkpoint(run.ckpt_root, step, run.model, run.optimizer, run.scheduler, state,
                               keep=run.cfg.keep_checkpoints, fault=f)

    def eval_record(self, step: int) -> float | None:
        """Held-out loss (and perplexity for language modelling) at `step`, logged with the objective's statistics."""
        self.flush()  # a diverged run stops before it is evaluated
        run, extra = self.run, {}
        loss = evaluate(run.model, run.objective, run.data, run.cfg, run.device, run.amp, run.doc_masks, extra)
        if loss is not None:
            rec = {"step": step, "split": "eval", "loss": loss, **extra}
            if run.cfg.task in LM_TASKS:
                rec["ppl"] = math.exp(min(loss, 50))
            self.tracker.log(rec)
            run.eval_metrics.update(extra)
            if run.env.is_main:
                console.print(f"step {step}: eval loss {loss:.4f}" + (f" (perplexity {rec['ppl']:.2f})" if "ppl" in rec else ""))
        return loss
