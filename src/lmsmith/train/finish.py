"""The end of a run: save the trained weights (adapter, merged or full model, QAT baked onto its grid) and
register them with lineage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from lmsmith.errors import LmsmithError
from lmsmith.models import ResolvedModel, load_model
from lmsmith.progress import console
from lmsmith.train import distributed as D
from lmsmith.train.config import TrainConfig
from lmsmith.train.data import DataSpec
from lmsmith.train.model import Built
from lmsmith.train.qat import QAT_KEY
from lmsmith.train.qat import bake as bake_qat
from lmsmith.train.run import TrainResult
from lmsmith.train.tracking import Tracker

STAGES = {"rm": "reward"}  # lineage stage names where they differ from the task


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
        if state_dict is not None:
            match_config_dtype(out, state_dict)
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


def match_config_dtype(model_dir: Path, state_dict: dict[str, torch.Tensor]) -> None:
    """transformers records the dtype of the model's own weights; saved from another state dict (fp32 masters of
    bf16 weights) the config must name the dtype actually saved, or loaders with dtype="auto" would cast them."""
    dtypes = {t.dtype for t in state_dict.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        write_config_section(model_dir, "dtype", str(dtypes.pop()).removeprefix("torch."))


def write_config_section(model_dir: Path, key: str, value: Any) -> None:
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
