"""Setting a run up: cheap checks first (`precheck`: nothing is computed before they pass), then the run
directory with its config and data hashes, the data, the model (LoRA/QLoRA, FSDP2/DDP wrapping, compile,
fused loss), the objective, the optimizer and the autocast context. `setup` returns a `Run` at step 0."""

from __future__ import annotations

import datetime as _dt
import json
import math
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from lmsmith.data.corpus import resolve_files
from lmsmith.errors import LmsmithError
from lmsmith.home import lmsmith_home
from lmsmith.models import ResolvedModel
from lmsmith.train import distributed as D
from lmsmith.train import master_weights
from lmsmith.train.attention import (
    DocumentMasks,
    collate_docs,
    doc_mask_mode,
    resolve_sdpa_backend,
    sdpa_context,
    use_flex_attention,
)
from lmsmith.train.checkpoint import list_checkpoints
from lmsmith.train.config import DistillConfig, DPOConfig, GRPOConfig, PretrainConfig, RMConfig, SFTConfig, TrainConfig
from lmsmith.train.data import DataSpec, Loader, build_data
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
from lmsmith.train.run import Run
from lmsmith.train.tasks import make_objective

CONFIGS: dict[str, type[TrainConfig]] = {"pretrain": PretrainConfig, "sft": SFTConfig, "dpo": DPOConfig,
                                          "rm": RMConfig, "grpo": GRPOConfig, "distill": DistillConfig}
LM_TASKS = ("pretrain", "sft")  # next-token objectives: the fused lm_head + loss applies to these only


def config_class(task: str) -> type[TrainConfig]:
    return CONFIGS.get(task, PretrainConfig)


def new_run_id(task: str) -> str:
    return f"{task}-{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


# ----------------------------------------------------------------------------- checks before any compute
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
    if cfg.master_weights:
        check_master_weights(cfg)
    if cfg.output_name:
        from lmsmith.registry.registry import NAME_RE

        if not NAME_RE.match(cfg.output_name):
            raise LmsmithError(f"invalid --output-name '{cfg.output_name}'", "use letters, digits, '.', '_' or '-'")
    return source


def check_master_weights(cfg: TrainConfig, world: int = 1) -> None:
    """--master-weights keeps bf16 weights and gradients: it needs bf16 compute, one micro-batch a step (bf16
    gradients would be summed in bf16) and full fine-tuning on one process (`world`: processes already running,
    e.g. under an outside torchrun without --nproc)."""
    if cfg.precision == "fp32" or (cfg.precision == "auto" and cfg.device == "cpu"):
        raise LmsmithError("--master-weights keeps the weights in bf16, but this run computes in fp32",
                           "add --precision bf16, or drop --master-weights")
    if cfg.grad_accum > 1:
        raise LmsmithError("--master-weights needs --grad-accum 1: bf16 gradients would be summed in bf16",
                           "raise --batch-size instead of --grad-accum, or drop --master-weights")
    if cfg.use_lora:
        raise LmsmithError("--master-weights applies to full fine-tuning (LoRA already keeps its base in bf16)",
                           "drop --master-weights")
    if (cfg.nproc or 1) > 1 or world > 1 or cfg.fsdp or cfg.ddp:
        raise LmsmithError("--master-weights runs on one process (FSDP keeps its own bf16 copies)",
                           "drop --master-weights")
    if cfg.qat:
        raise LmsmithError("--master-weights and --qat do not combine yet (QAT fake-quantizes fp32 weights)",
                           "drop --master-weights")


def resumes_with_master_weights(run_dir: Path) -> bool:
    """A resumed run keeps the weight layout it started with: checkpoints written before master weights became the
    default (no `master_weights` in their train state) hold fp32 weights and a plain AdamW state."""
    for ckpt in reversed(list_checkpoints(run_dir / "checkpoints")):
        try:
            return bool(json.loads((ckpt / "train_state.json").read_text()).get("master_weights", False))
        except (OSError, ValueError):
            continue
    return True  # no checkpoint yet: the run starts over, with the default


# ----------------------------------------------------------------------------- the run directory
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


# ----------------------------------------------------------------------------- model, objective, optimizer
def total_steps(cfg: TrainConfig, loader: Loader) -> int:
    if cfg.steps:
        return cfg.steps
    return max(1, math.ceil(cfg.epochs * loader.batches_per_epoch() / cfg.grad_accum))


def document_masks(cfg: TrainConfig, built: Built, data: DataSpec) -> DocumentMasks | None:
    """Pretraining on packed rows without cross-document attention: rows keep their document ids and the mask
    is built on the device (a flex BlockMask on CUDA)."""
    if cfg.cross_doc_attention or cfg.task != "pretrain":
        return None
    masks = DocumentMasks(doc_mask_mode(built.device))
    if masks.mode == "flex":
        use_flex_attention(built.model)
    data.collate = collate_docs
    return masks


@contextmanager
def _both(a, b):
    with a, b:
        yield


def amp_context(cfg: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, Callable[[], Any]]:
    """(autocast dtype or None, a factory of the context every forward runs in: autocast + the SDPA backend)."""
    amp_dtype = autocast_dtype(cfg, device)
    sdpa = sdpa_context(resolve_sdpa_backend(cfg.sdpa_backend, device))
    amp = (lambda: _both(torch.autocast(device.type, dtype=amp_dtype), sdpa())) if amp_dtype else sdpa
    return amp_dtype, amp


def setup(cfg: TrainConfig, command: str | None, env: D.DistEnv, objective: Objective | None = None) -> Run:
    """Everything a run needs before its first step, in the order that fails cheapest first: checks, tokenizer,
    data (all data errors surface before the model is loaded), run directory, model, objective, optimizer.
    The objective's `setup` hook runs last, on the starting model (before any checkpoint is loaded)."""
    source = precheck(cfg)
    strategy = D.parallel_strategy(cfg.fsdp, cfg.ddp, env)
    D.check_options(cfg.ac, cfg.gradient_checkpointing)
    tokenizer = load_tokenizer_for(cfg, source)
    # rank 0 fills the token cache first
    data = D.main_first(env, lambda: build_data(cfg, tokenizer))
    run_dir, run_id = D.on_main(env, lambda: prepare_run_dir(cfg, data.refs))
    if env.enabled:
        cfg = cfg.model_copy(update={"device": str(env.device)})
    built = build_model(cfg, tokenizer, source)
    use_compile, use_fused = cfg.speed_defaults(built.device.type)
    use_fused = use_fused and cfg.task in LM_TASKS  # preference and RL objectives need the logits themselves
    if cfg.task == "grpo" and cfg.compile is None:
        use_compile = False  # rollouts change the shapes every step: compiling would only recompile
    doc_masks = document_masks(cfg, built, data)
    built.model, head = D.prepare_model(built.model, env, strategy=strategy, ac=cfg.ac, compile=use_compile,
                                        fused_loss=use_fused, reshard_after_forward=cfg.reshard_after_forward,
                                        hf_gradient_checkpointing=cfg.gradient_checkpointing)
    model, device = built.model, built.device
    if objective is None:
        objective = FusedCausalLMLoss(head) if head is not None else make_objective(cfg, device, tokenizer)
    loader = D.make_loader(data.train, cfg.batch_size, data.collate, cfg.seed, env)
    steps = total_steps(cfg, loader)
    amp_dtype, amp = amp_context(cfg, device)
    if cfg.master_weights and env.enabled:
        check_master_weights(cfg, env.world)
    master = master_weights.applies(cfg.master_weights, device=device, compute_dtype=amp_dtype,
                                    full=not cfg.use_lora, world=env.world if env.enabled else 1,
                                    grad_accum=cfg.grad_accum, qat=bool(cfg.qat), lm_task=cfg.task in LM_TASKS)
    if cfg.resume and cfg.master_weights is None:
        master = master and resumes_with_master_weights(run_dir)
    optimizer, scheduler = build_optimizer(model, cfg, steps, device, master=master)
    hook = getattr(objective, "setup", None)
    if hook is not None:  # before any checkpoint is loaded: the model is still the starting point here
        hook(SetupContext(model, data, cfg, device, amp, built.tokenizer, built.base_ref))
    return Run(cfg=cfg, env=env, command=command, run_dir=run_dir, run_id=run_id, strategy=strategy, built=built,
               data=data, objective=objective, loader=loader, steps=steps, optimizer=optimizer, scheduler=scheduler,
               amp=amp, amp_dtype=amp_dtype, doc_masks=doc_masks)
