"""Model, tokenizer and optimizer construction: the one place a later FSDP wrapper plugs into.

`build_model` returns the trainable module (plain, LoRA, or QLoRA with an NF4 base); `build_optimizer`
builds AdamW over its trainable parameters and the learning-rate schedule.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmsmith.errors import LmsmithError
from lmsmith.models import ResolvedModel, load_model, load_tokenizer, resolve_model
from lmsmith.runtime import quiet_transformers
from lmsmith.train.attention import use_causal_attention
from lmsmith.train.config import TrainConfig

NO_DECAY = ("bias", "norm", "embed_tokens", "wte", "wpe")


@dataclass
class Built:
    model: nn.Module
    tokenizer: Any
    base_ref: str | None  # what the run started from (None when trained from scratch)
    device: torch.device
    n_params: int
    n_trainable: int
    source: ResolvedModel | None = None  # the resolved --model (None when trained from scratch)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LmsmithError(f"--device {name} asked for, but no CUDA GPU is available", "use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise LmsmithError(f"unknown device '{name}'", "use auto, cpu or cuda[:N]") from None


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"):
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise LmsmithError("this GPU does not support bf16", "use --precision fp32")
        return torch.bfloat16
    return None


def check_model_source(cfg: TrainConfig) -> None:
    """Fail before any compute when the model source is missing or contradictory."""
    if cfg.model and cfg.model_config_file:
        raise LmsmithError("give either --model (start from a model) or --model-config (from scratch), not both")
    if not cfg.model and not cfg.model_config_file:
        raise LmsmithError("no model given", "pass --model REF, or --model-config CONFIG.json --tokenizer REF to train from scratch")
    if cfg.model_config_file:
        if not Path(cfg.model_config_file).is_file():
            raise LmsmithError(f"model config not found: {cfg.model_config_file}")
        if not cfg.tokenizer:
            raise LmsmithError("training from scratch needs --tokenizer REF")
        if cfg.use_lora:
            raise LmsmithError("LoRA needs a pretrained base; a model from scratch trains all weights", "drop --lora-r/--qlora")
    if cfg.qlora and cfg.full:
        raise LmsmithError("--qlora and --full contradict each other", "choose one")
    if cfg.qlora and cfg.merge is False and cfg.lora_r is None:
        pass


def resolve_source(cfg: TrainConfig) -> ResolvedModel | None:
    """Resolve --model once for the whole run (hash-checked when its weights are first loaded)."""
    return resolve_model(cfg.model, verify=False) if cfg.model else None


def check_lora_targets(cfg: TrainConfig, source: ResolvedModel | None = None) -> None:
    """Check --lora-targets against the model's layer names on a weightless (meta) copy: no loading."""
    if not (cfg.use_lora and cfg.lora_targets and cfg.model):
        return
    from transformers import AutoModelForCausalLM

    source = source or resolve_source(cfg)
    assert source is not None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(source.hf_config)
    present = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in cfg.lora_targets if t not in present]
    if missing:
        raise LmsmithError(f"--lora-targets {','.join(missing)} not found in the model",
                           f"its linear layers: {', '.join(sorted(present))}")


def load_tokenizer_for(cfg: TrainConfig, source: ResolvedModel | None = None):
    """--tokenizer when given, else the model's own (from the already resolved `source`)."""
    if cfg.tokenizer:
        return load_tokenizer(cfg.tokenizer)
    source = source or resolve_source(cfg)
    assert source is not None
    return load_tokenizer(source)


def default_lora_targets(model: nn.Module) -> list[str]:
    """All linear layers inside the transformer blocks (attention and MLP), by their short names."""
    names: list[str] = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and name.split(".")[-1] not in ("lm_head", "score") and ".layers." in f".{name}":
            short = name.split(".")[-1]
            if short not in names:
                names.append(short)
    if not names:  # unusual layout: every linear layer but the head
        names = sorted({n.split(".")[-1] for n, m in model.named_modules()
                        if isinstance(m, nn.Linear) and n.split(".")[-1] not in ("lm_head", "score")})
    return names


def build_model(cfg: TrainConfig, tokenizer: Any | None = None, source: ResolvedModel | None = None) -> Built:
    quiet_transformers()
    from transformers import AutoConfig, AutoModelForCausalLM

    check_model_source(cfg)
    device = pick_device(cfg.device)
    source = source or resolve_source(cfg)
    tokenizer = tokenizer or load_tokenizer_for(cfg, source)
    torch.manual_seed(cfg.seed)
    base_ref = None
    if cfg.model_config_file:
        raw = json.loads(Path(cfg.model_config_file).read_text())
        model_type = raw.pop("model_type", None)
        if not model_type:
            raise LmsmithError(f"{cfg.model_config_file} has no 'model_type'", "use a HF config.json (e.g. \"model_type\": \"llama\")")
        raw.setdefault("vocab_size", len(tokenizer))
        if raw["vocab_size"] < len(tokenizer):
            raise LmsmithError(f"model vocab_size {raw['vocab_size']} is smaller than the tokenizer's {len(tokenizer)} tokens")
        raw.setdefault("eos_token_id", tokenizer.eos_token_id)
        raw.setdefault("pad_token_id", tokenizer.pad_token_id)
        try:
            mcfg = AutoConfig.for_model(model_type, **raw)
        except ValueError as e:
            raise LmsmithError(f"bad model config {cfg.model_config_file}: {str(e).splitlines()[0]}") from None
        model = AutoModelForCausalLM.from_config(mcfg, dtype=torch.float32)
    else:
        assert source is not None
        base_ref = source.name
        if source.is_adapter:
            raise LmsmithError(f"{source.name} is an adapter", f"train from its base ({source.handle.base}) or merge it first")
        if source.quantized:
            raise LmsmithError(f"{source.name} is quantized ({source.quant.method})",
                               "train from the full-precision model it was quantized from")
        if cfg.task == "rm":  # scalar head on the backbone, loadable by any tool as a 1-label classifier
            from transformers import AutoModelForSequenceClassification

            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            try:
                model = AutoModelForSequenceClassification.from_pretrained(source.dir, dtype=torch.float32,
                                                                           num_labels=1, pad_token_id=pad).train()
            except (OSError, ValueError) as e:
                raise LmsmithError(f"cannot load model {source.name}: {str(e).splitlines()[0]}") from None
        else:
            model = load_model(source, dtype=torch.float32, device="cpu").train()
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        raise LmsmithError(f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only "
                           f"{model.get_input_embeddings().weight.shape[0]}", "use the model's own tokenizer")
    model.config.use_cache = False
    # plain causal SDPA without a mask: transformers then skips its per-forward host syncs (train/attention.py)
    use_causal_attention(model)
    if cfg.qat:  # forward on the storage grid, gradients straight through (train/qat.py)
        from lmsmith.train.qat import attach

        attach(model, cfg.qat, cfg.qat_group_size)
    if cfg.use_lora:
        model = apply_lora(model, cfg, device)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.use_lora:
            model.enable_input_require_grads()
    model.to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() * 2 for n, b in model.named_buffers() if n.endswith("qweight"))
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Built(model, tokenizer, base_ref, device, n_params, n_trainable, source)


def apply_lora(model: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = cfg.lora_targets or default_lora_targets(model)
    present = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in targets if t not in present]
    if missing:
        raise LmsmithError(f"--lora-targets {','.join(missing)} not found in the model",
                           f"its linear layers: {', '.join(sorted(present))}")
    if cfg.qlora:
        from lmsmith.train.nf4 import quantize_model_nf4

        quantize_model_nf4(model, targets, torch.float32)
    r = cfg.lora_r or 16
    lcfg = LoraConfig(r=r, lora_alpha=cfg.lora_alpha or 2 * r, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="SEQ_CLS" if cfg.task == "rm" else "CAUSAL_LM", bias="none")
    model = get_peft_model(model, lcfg)
    compute = autocast_dtype(cfg, device)
    if compute is not None:
        # The frozen base needs no fp32 master copy: keep it in the compute dtype (half the memory, and
        # autocast need not cast it every step). Adapter weights stay fp32 for the optimizer.
        for p in model.parameters():
            if not p.requires_grad and p.is_floating_point():
                p.data = p.data.to(compute)
    return model


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or any(k in name.lower() for k in NO_DECAY) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def lr_lambda(kind: str, warmup: int, total: int, min_ratio: float):
    def f(step: int) -> float:  # step = optimizer steps taken so far (0-based)
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if kind == "linear":
            return 1.0 - (1.0 - min_ratio) * progress
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return f


def build_optimizer(model: nn.Module, cfg: TrainConfig, total_steps: int, device: torch.device,
                    master: bool = False):
    """AdamW (fused on CUDA) and the schedule. `master`: bf16 weights with fp32 masters in the optimizer
    (master_weights.py; this moves the model's trainable weights to bf16)."""
    params = param_groups(model, cfg.weight_decay)
    if master:
        from lmsmith.train.master_weights import MasterAdamW

        opt: torch.optim.Optimizer = MasterAdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8,
                                fused=device.type == "cuda")
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(0.05 * total_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.schedule, warmup, total_steps, cfg.min_lr_ratio))
    return opt, sched
