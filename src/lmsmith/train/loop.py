"""The training loop, written once for pretraining, continued pretraining and SFT (and later DPO/reward).

`train(cfg)` validates everything cheap first (data, model source, resume config), then builds data,
model and optimizer, and runs optimizer steps of `grad_accum` micro-batches with clipping, autocast,
NaN detection, periodic eval and atomic checkpoints. At the end it saves the result (adapter, merged or
full model), plots the curves and registers the model with lineage.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shutil
import signal
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from lmsmith import hardware
from lmsmith.data.corpus import resolve_files
from lmsmith.errors import LmsmithError
from lmsmith.home import lmsmith_home
from lmsmith.models import ResolvedModel, load_model
from lmsmith.progress import console, make_progress
from lmsmith.train import distributed as D
from lmsmith.train.attention import (
    DocumentMasks,
    collate_docs,
    doc_mask_mode,
    resolve_sdpa_backend,
    sdpa_context,
    use_flex_attention,
)
from lmsmith.train.checkpoint import clean_stale, latest_checkpoint, load_checkpoint, resume_checkpoint, save_checkpoint
from lmsmith.train.config import DistillConfig, DPOConfig, GRPOConfig, PretrainConfig, RMConfig, SFTConfig, TrainConfig
from lmsmith.train.data import DataSpec, Loader, Prefetcher, build_data, iterate_eval
from lmsmith.train.fused_loss import FusedCausalLMLoss
from lmsmith.train.model import (
    Built,
    autocast_dtype,
    build_model,
    build_optimizer,
    check_lora_targets,
    check_model_source,
    load_tokenizer_for,
    resolve_source,
)
from lmsmith.train.objectives import Objective, SetupContext
from lmsmith.train.qat import QAT_KEY
from lmsmith.train.qat import bake as bake_qat
from lmsmith.train.tasks import make_objective
from lmsmith.train.tracking import Tracker, plot_curves

# Test hook (fault injection): "kill-after-step:N", "kill-during-save:N", "disk-full:N", "nan-at-step:N", "interrupt-after-step:N"
FAULT_ENV = "LMSMITH_TRAIN_FAULT"


@dataclass
class TrainResult:
    run_dir: Path
    run_id: str
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    output_dir: Path | None = None
    ref: str | None = None
    interrupted: bool = False


class NonFiniteLoss(LmsmithError):
    pass


def _fault() -> tuple[str, int] | None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    kind, _, n = spec.partition(":")
    return kind, int(n)


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


def new_run_id(task: str) -> str:
    return f"{task}-{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


CONFIGS: dict[str, type[TrainConfig]] = {"pretrain": PretrainConfig, "sft": SFTConfig, "dpo": DPOConfig,
                                          "rm": RMConfig, "grpo": GRPOConfig, "distill": DistillConfig}
STAGES = {"rm": "reward"}  # lineage stage names where they differ from the task
LM_TASKS = ("pretrain", "sft")  # next-token objectives: the fused lm_head + loss applies to these only


def config_class(task: str) -> type[TrainConfig]:
    return CONFIGS.get(task, PretrainConfig)


def check_resume(cfg: TrainConfig) -> str | None:
    """On resume, the run directory must exist and hold the same config; return its run id."""
    if not cfg.resume:
        return None
    if not cfg.run_dir:
        raise LmsmithError("--resume needs --run-dir DIR (or use `lmsmith train resume RUN_DIR`)")
    run_dir = Path(cfg.run_dir)
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        raise LmsmithError(f"{run_dir} is not a training run directory (no config.yaml)")
    saved = yaml.safe_load(saved_path.read_text())
    run_id = saved.pop("_run_id", run_dir.name)
    saved_cfg = config_class(saved.get("task", "pretrain")).model_validate(saved)
    a, b = saved_cfg.comparable(), cfg.comparable()
    diffs = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if diffs:
        raise LmsmithError(f"cannot resume {run_dir}: the config differs from the original run ({'; '.join(diffs)})",
                           "resume with the same options, or start a new run")
    return run_id


def check_data_unchanged(run_dir: Path, refs: list) -> None:
    """A resumed run must read the same bytes it started on: compare the data files' hashes."""
    saved_path = run_dir / "data.json"
    if not saved_path.is_file():  # runs from before data.json was recorded
        return
    saved = {d["path"]: d["sha256"] for d in json.loads(saved_path.read_text())}
    now = {r.path: r.sha256 for r in refs}
    changed = sorted(p for p in saved.keys() | now.keys() if saved.get(p) != now.get(p))
    if changed:
        raise LmsmithError(f"cannot resume {run_dir}: the training data changed since the run started "
                           f"({len(changed)} file(s), e.g. {changed[0]})",
                           "restore the original files, or start a new run")


def prepare_run_dir(cfg: TrainConfig, refs: list | None = None) -> tuple[Path, str]:
    """Create the run directory (or reuse it on resume) and record the config and data hashes in it."""
    if cfg.resume:
        run_id = check_resume(cfg)
        check_data_unchanged(Path(cfg.run_dir), refs or [])  # type: ignore[arg-type]
        return Path(cfg.run_dir), run_id  # type: ignore[arg-type,return-value]
    run_id = new_run_id(cfg.task)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else lmsmith_home() / "runs" / run_id
    if (run_dir / "config.yaml").exists():
        raise LmsmithError(f"{run_dir} already holds a run", "pass --resume to continue it, or choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    data = cfg.model_dump(mode="json")
    data["_run_id"] = run_id
    (run_dir / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (run_dir / "data.json").write_text(json.dumps([r.model_dump() for r in refs or []], indent=1))
    return run_dir, run_id


def precheck(cfg: TrainConfig) -> ResolvedModel | None:
    """Cheap checks that must fail before any compute. Returns the resolved --model, for the whole run."""
    check_model_source(cfg)
    check_resume(cfg)
    source = resolve_source(cfg)
    check_lora_targets(cfg, source)
    if cfg.run_dir and not cfg.resume and (Path(cfg.run_dir) / "config.yaml").exists():
        raise LmsmithError(f"{cfg.run_dir} already holds a run", "pass --resume to continue it, or choose another --run-dir")
    if not cfg.data:
        raise LmsmithError("no training data given", "pass --data FILE|GLOB|DIR")
    resolve_files(cfg.data)
    if cfg.eval_data:
        resolve_files(cfg.eval_data)
    if cfg.merge and not cfg.use_lora:
        raise LmsmithError("--merge applies to LoRA training", "drop --merge (full fine-tuning already yields a model)")
    if cfg.qlora:
        from lmsmith.train.nf4 import NF4Linear  # noqa: F401  (pure torch: runs wherever torch runs)
    if cfg.task == "distill":
        teacher = getattr(cfg, "teacher", None)
        if not teacher:
            raise LmsmithError("distillation needs a teacher", "pass --teacher REF")
        from lmsmith.train.distill import check_tokenizers

        check_tokenizers(teacher, cfg.tokenizer or cfg.model or "")
    if cfg.qat and cfg.use_lora:
        raise LmsmithError("--qat trains the quantized weights themselves, not a LoRA adapter", "add --full")
    if cfg.qat and (cfg.nproc or 1) > 1:
        raise LmsmithError("--qat runs on one process for now", "drop --nproc")
    if cfg.output_name:
        from lmsmith.registry.registry import NAME_RE

        if not NAME_RE.match(cfg.output_name):
            raise LmsmithError(f"invalid --output-name '{cfg.output_name}'", "use letters, digits, '.', '_' or '-'")
    return source


def total_steps(cfg: TrainConfig, loader: Loader) -> int:
    if cfg.steps:
        return cfg.steps
    return max(1, math.ceil(cfg.epochs * loader.batches_per_epoch() / cfg.grad_accum))


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def objective_metrics(objective: Objective, split: str = "train") -> dict[str, float]:
    """Statistics the objective gathered since it was last asked (DPO rewards, reward-model accuracy, ...)."""
    fn = getattr(objective, "metrics", None)
    return fn(split) if fn is not None else {}


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


@contextmanager
def _both(a, b):
    with a, b:
        yield


def apply_update(optimizer, scheduler) -> None:
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


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
    source = precheck(cfg)

    strategy = D.parallel_strategy(cfg.fsdp, cfg.ddp, env)
    D.check_options(cfg.ac, cfg.gradient_checkpointing)
    tokenizer = load_tokenizer_for(cfg, source)
    # all data errors surface here, before the model is even loaded (rank 0 fills the token cache first)
    data = D.main_first(env, lambda: build_data(cfg, tokenizer))
    run_dir, run_id = D.on_main(env, lambda: prepare_run_dir(cfg, data.refs))
    if env.enabled:
        cfg = cfg.model_copy(update={"device": str(env.device)})
    built = build_model(cfg, tokenizer, source)
    use_compile, use_fused = cfg.speed_defaults(built.device.type)
    use_fused = use_fused and cfg.task in LM_TASKS  # preference and RL objectives need the logits themselves
    if cfg.task == "grpo" and cfg.compile is None:
        use_compile = False  # rollouts change the shapes every step: compiling would only recompile
    doc_masks = None
    if not cfg.cross_doc_attention and cfg.task == "pretrain":
        # packed rows keep their document ids; the mask is built on the device (flex BlockMask on CUDA)
        doc_masks = DocumentMasks(doc_mask_mode(built.device))
        if doc_masks.mode == "flex":
            use_flex_attention(built.model)
        data.collate = collate_docs
    built.model, head = D.prepare_model(built.model, env, strategy=strategy, ac=cfg.ac, compile=use_compile,
                                        fused_loss=use_fused, reshard_after_forward=cfg.reshard_after_forward,
                                        hf_gradient_checkpointing=cfg.gradient_checkpointing)
    model, device = built.model, built.device
    if objective is None:
        objective = FusedCausalLMLoss(head) if head is not None else make_objective(cfg, device, tokenizer)
    loader = D.make_loader(data.train, cfg.batch_size, data.collate, cfg.seed, env)
    steps = total_steps(cfg, loader)
    optimizer, scheduler = build_optimizer(model, cfg, steps, device)
    amp_dtype = autocast_dtype(cfg, device)
    sdpa = sdpa_context(resolve_sdpa_backend(cfg.sdpa_backend, device))
    amp = (lambda: _both(torch.autocast(device.type, dtype=amp_dtype), sdpa())) if amp_dtype else sdpa
    setup = getattr(objective, "setup", None)
    if setup is not None:  # before any checkpoint is loaded: the model is still the starting point here
        setup(SetupContext(model, data, cfg, device, amp, built.tokenizer, built.base_ref))
    prepare_step = getattr(objective, "prepare", None)
    after_update = getattr(objective, "after_update", None)
    ckpt_root = run_dir / "checkpoints"
    start, state = 0, {"tokens": 0, "best_eval": None}
    if cfg.resume:
        if env.is_main:
            clean_stale(ckpt_root)  # left by a save that crashed or failed

        def load(path: Path) -> dict:
            if D.is_dcp_checkpoint(path):
                return D.load_dcp(path, model, optimizer, scheduler, env)
            if env.enabled:
                raise LmsmithError(f"{path} was written by a single-process run", "resume it without --nproc/torchrun")
            return load_checkpoint(path, model, optimizer, scheduler)

        last, saved = resume_checkpoint(ckpt_root, load, say=lambda m: console.print(f"[yellow]{m}"))
        if last is not None:
            if int(saved.get("world", 1)) != env.world:  # same global batch on another number of processes
                bs, accum = D.rebalance(cfg.batch_size, cfg.grad_accum, int(saved.get("world", 1)), env.world)
                loader.batch_size, cfg = bs, cfg.model_copy(update={"batch_size": bs, "grad_accum": accum})
                console.print(f"resuming on {env.world} process(es) instead of {saved['world']}: "
                              f"--batch-size {bs} x --grad-accum {accum} per process keeps the global batch")
            loader.load_state(saved["data"])
            start = int(saved["step"])
            state.update(tokens=saved.get("tokens", 0))
            console.print(f"resumed from {last} (step {start})")
        else:
            console.print("no checkpoint yet in the run directory; starting from step 0")
    if start >= steps:
        console.print(f"run already complete at step {start}")
    tracker = (Tracker(run_dir, run_id, cfg.mlflow, cfg.tracking_uri, cfg.experiment, resume_step=start)
               if env.is_main else D.NullTracker())
    tracker.log_params({**cfg.model_dump(mode="json"), "run_id": run_id, "base": built.base_ref,
                        "params": built.n_params, "trainable_params": built.n_trainable})
    console.print(f"run {run_id}: {cfg.task}, {built.n_trainable:,} of {built.n_params:,} parameters trainable "
                  f"({'QLoRA' if cfg.qlora else 'LoRA' if cfg.use_lora else 'full'}), {steps} steps on {device}"
                  f"{' with bf16 autocast' if amp_dtype else ''}"
                  f"{f' x {env.world} processes ({strategy})' if env.enabled else ''}; run dir {run_dir}")
    fault = _fault()
    fpt = flops_per_token(D.unwrap(model), built.n_trainable, cfg.seq_len)
    peak = hardware.peak_flops(device)
    peak = peak * env.world if peak else peak  # MFU of all GPUs together (= per GPU on even shards)
    last_loss = float("nan")
    last_eval: float | None = None
    interrupted = False
    # next batches collated and pinned in a background thread while the GPU computes
    batches = Prefetcher(loader, depth=cfg.prefetch, pin=device.type == "cuda")
    # Steps run without waiting for the GPU; loss and grad norm stay on the device and are read at
    # log steps (every --log-every steps, 10 by default on CUDA, every step on CPU), before any checkpoint,
    # evaluation or exit. The NaN guard runs there, so a diverged run never writes a checkpoint.
    sync_every = cfg.log_every or (10 if device.type == "cuda" else 1)
    pending: list[dict[str, Any]] = []
    window = {"t": time.perf_counter(), "tokens": 0}

    agreed_stop = False
    last_eval_metrics: dict[str, float] = {}

    def flush() -> None:
        nonlocal last_loss, agreed_stop
        if not pending:
            return
        values = torch.stack([torch.stack([r["loss"].float(), r["grad_norm"].float()]) for r in pending]).tolist()
        if env.enabled and env.world > 1:  # tokens of all ranks; a Ctrl-C on any rank stops all of them
            n_tok, stop = D.all_reduce_sum(env, [window["tokens"], float(intr.requested)])
            window["tokens"] = int(n_tok)
            if stop > 0:
                intr.requested = agreed_stop = True
        dt = max(time.perf_counter() - window["t"], 1e-9)
        tps = window["tokens"] / dt
        mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        records, pending[:] = list(pending), []
        window.update(t=time.perf_counter(), tokens=0)
        extra = objective_metrics(objective)  # averaged over the steps since the last log
        for i, (r, (loss, gn)) in enumerate(zip(records, values)):
            if fault and fault == ("nan-at-step", r["step"]):
                loss = float("nan")
            if not math.isfinite(loss) or not math.isfinite(gn):
                last = latest_checkpoint(ckpt_root)
                where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
                raise NonFiniteLoss(f"training diverged: loss is {loss} (grad norm {gn:.3g}) "
                                    f"at step {r['step']}; stopped, {where}",
                                    "lower --lr, raise --warmup-steps or check the data")
            rec: dict[str, Any] = {**r, "loss": loss, "grad_norm": gn, "tokens_per_s": tps}
            if peak:
                rec["mfu"] = fpt * tps / peak
            if mem is not None:
                rec["peak_mem_gb"] = mem
            if i == len(records) - 1:
                rec.update(extra)
            tracker.log(rec)
            last_loss = loss
        last = rec
        progress.update(bar, info=f"loss {last['loss']:.4f}  {tps:,.0f} tok/s")
        if cfg.log_every:
            progress.console.print(f"step {last['step']}/{steps}  loss {last['loss']:.4f}  lr {last['lr']:.3g}  "
                                   f"grad norm {last['grad_norm']:.3g}  {tps:,.0f} tok/s"
                                   + (f"  mfu {last['mfu']:.1%}" if "mfu" in last else ""))

    def checkpoint(step: int) -> Path:
        flush()
        f = fault[0] if fault and fault[1] == step and fault[0] in ("kill-during-save", "disk-full") else None
        if env.enabled:  # sharded: torch.distributed.checkpoint, loadable on any number of processes
            return D.save_dcp(ckpt_root, step, model, optimizer, scheduler,
                              {"data": batches.state(), "tokens": state["tokens"], "run_id": run_id},
                              env, keep=cfg.keep_checkpoints)
        return save_checkpoint(ckpt_root, step, model, optimizer, scheduler,
                               {"data": batches.state(), "tokens": state["tokens"], "run_id": run_id},
                               keep=cfg.keep_checkpoints, fault=f)

    def eval_record(step: int) -> float | None:
        flush()  # a diverged run stops before it is evaluated
        extra: dict[str, float] = {}
        loss = evaluate(model, objective, data, cfg, device, amp, doc_masks, extra)
        if loss is not None:
            rec = {"step": step, "split": "eval", "loss": loss, **extra}
            if cfg.task in LM_TASKS:
                rec["ppl"] = math.exp(min(loss, 50))
            tracker.log(rec)
            last_eval_metrics.update(extra)
            if env.is_main:
                console.print(f"step {step}: eval loss {loss:.4f}" + (f" (perplexity {rec['ppl']:.2f})" if "ppl" in rec else ""))
        return loss

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    status = "FAILED"
    intr = Interrupt()
    progress: Any = None
    bar: Any = None
    if start == 0 and data.eval:
        eval_record(0)  # the starting point of the eval curve
    try:
        with intr, make_progress() as progress:
            bar = progress.add_task(cfg.task, total=steps, completed=start, info="")
            step = start
            window["t"] = time.perf_counter()
            while step < steps:
                micro = [batches.next() for _ in range(cfg.grad_accum)]
                if prepare_step is not None:  # e.g. GRPO: rollouts and rewards become the training batches
                    micro = prepare_step(micro)
                n_tokens = sum(int(b["input_ids"].numel()) for b in micro)
                loss_sum, grad_norm = forward_backward(model, objective, micro, device, amp, cfg.max_grad_norm, env,
                                                       doc_masks, optimizer)
                lr = scheduler.get_last_lr()[0]
                apply_update(optimizer, scheduler)
                if after_update is not None:  # e.g. GRPO: the new weights go into the rollout engine
                    after_update(model)
                step += 1
                state["tokens"] += n_tokens * env.world
                window["tokens"] += n_tokens
                pending.append({"step": step, "loss": loss_sum, "lr": lr, "grad_norm": grad_norm,
                                "tokens": state["tokens"], "epoch": batches.epoch})
                progress.update(bar, completed=step)
                if step % sync_every == 0 or step == steps:
                    flush()
                if cfg.eval_every and step % cfg.eval_every == 0 and step < steps:
                    last_eval = eval_record(step)
                if fault and fault[0] in ("kill-after-step", "interrupt-after-step") and fault[1] == step:
                    flush()
                    os.kill(os.getpid(), signal.SIGKILL if fault[0] == "kill-after-step" else signal.SIGINT)
                if (cfg.save_every and step % cfg.save_every == 0 and step < steps) or (
                        fault and fault == ("kill-during-save", step)):
                    checkpoint(step)
                # one process stops at once; ranks stop together at a log step (flush agrees on the flag)
                if intr.requested and (not env.enabled or env.world == 1 or agreed_stop):
                    interrupted = True
                    break
            flush()
        final_step = step
        if interrupted:
            path = checkpoint(final_step)
            status = "KILLED"
            console.print(f"interrupted at step {final_step}; checkpoint {path}\n"
                          f"continue with: lmsmith train resume {run_dir}")
            return TrainResult(run_dir, run_id, final_step, {"loss": last_loss}, interrupted=True)
        last_eval = eval_record(final_step)
        if start < steps:
            checkpoint(final_step)
        metrics = {"train_loss": last_loss, "steps": final_step, "tokens": state["tokens"]}
        if last_eval is not None:
            metrics["eval_loss"] = last_eval
            metrics.update({f"eval_{k}": v for k, v in last_eval_metrics.items()})
        if env.enabled:  # gather the sharded weights (every rank), save and register on rank 0
            sd = D.full_state_dict(model, env, trainable_only=cfg.use_lora)
            result = D.on_main(env, lambda: finish(cfg, built, data, run_dir, run_id, metrics, command, tracker, sd))
        else:
            result = finish(cfg, built, data, run_dir, run_id, metrics, command, tracker)
        status = "FINISHED"
        return result
    finally:
        close = getattr(objective, "close", None)
        if close is not None:  # e.g. GRPO's rollout engine
            close()
        if cfg.plot and env.is_main:
            try:
                png = plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
                if png:
                    tracker.log_artifact(png)
            except Exception as e:  # a plot must never lose a run
                console.print(f"[yellow]warning:[/] could not plot curves: {e}")
        tracker.close(status)


def finish(cfg: TrainConfig, built: Built, data: DataSpec, run_dir: Path, run_id: str, metrics: dict[str, Any],
           command: str | None, tracker: Tracker, state_dict: dict[str, torch.Tensor] | None = None) -> TrainResult:
    """Save the trained weights (adapter, merged or full model) and register them with lineage.

    `state_dict`: the weights gathered from a sharded (FSDP) model, saved instead of the model's own."""
    from lmsmith.registry.registry import Lineage, Registry
    from lmsmith.train.fused_loss import remove_fused_head

    out = run_dir / "final"
    if out.exists():
        shutil.rmtree(out)
    model = D.unwrap(built.model)
    remove_fused_head(model)
    kind = "model"
    extra = {"state_dict": state_dict} if state_dict is not None else {}
    if cfg.use_lora and cfg.task == "rm":  # a reward model is only useful to other tools as a whole classifier
        if state_dict is not None:
            raise LmsmithError("a LoRA reward model trained on several processes cannot be merged yet",
                               "train the reward model on one process, or fully (without --lora-r)")
        model.merge_and_unload().save_pretrained(out)
    elif cfg.use_lora:
        model.save_pretrained(out, **extra)  # PEFT: adapter_config.json + adapter_model.safetensors only
        kind = "adapter"
        if cfg.merge:
            out = merge_adapter(built.source or built.base_ref, out, run_dir / "merged")
            kind = "model"
    else:
        qat = bake_qat(model) if cfg.qat else None  # weights snapped onto the grid they trained on
        model.save_pretrained(out, **extra)
        if qat is not None:
            write_config_section(out, QAT_KEY, qat)
    if cfg.task == "rm":
        kind = "model"
    if kind == "model":
        built.tokenizer.save_pretrained(out)
    console.print(f"saved {'adapter' if kind == 'adapter' else 'model'} to {out}")
    result = TrainResult(run_dir, run_id, int(metrics["steps"]), metrics, out)
    if cfg.output_name:
        lineage = Lineage(parent=built.base_ref, stage=STAGES.get(cfg.task, cfg.task), command=command, data=data.refs,
                          run_id=run_id,
                          config=cfg.model_dump(mode="json"))
        mv = Registry().register(out, cfg.output_name, lineage=lineage, kind=kind,
                                 base=built.base_ref if kind == "adapter" else None,
                                 metrics={k: float(v) for k, v in metrics.items()},
                                 tags={"run_dir": str(run_dir)})
        result.ref = mv.ref
        (run_dir / "registered").write_text(mv.ref + "\n")
        console.print(f"registered {mv.ref} ({kind}{', base ' + built.base_ref if kind == 'adapter' else ''})")
    return result


def write_config_section(model_dir: Path, key: str, value: dict[str, Any]) -> None:
    cfg_path = model_dir / "config.json"
    config = json.loads(cfg_path.read_text())
    config[key] = value
    cfg_path.write_text(json.dumps(config, indent=2) + "\n")


def merge_adapter(base: str | ResolvedModel | None, adapter_dir: Path, out: Path) -> Path:
    """Fold the adapter into a full-precision copy of the base (also for QLoRA: the base is reloaded unquantized)."""
    from peft import PeftModel

    assert base is not None
    model = load_model(base, dtype=torch.float32, device="cpu")
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    if out.exists():
        shutil.rmtree(out)
    merged.save_pretrained(out)
    return out
