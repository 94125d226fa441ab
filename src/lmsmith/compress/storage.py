"""Quantized model directories: write them, register them, load them back.

A quantized version is a normal HF model directory (config, tokenizer, safetensors) in which each
quantized linear `X` is stored as `X.qweight` (int8 / packed-int4 uint8 / fp8 bytes), `X.scales` and, for
asymmetric int4, `X.zeros`, and config.json carries

    "quantization": {"quant_method": "lmsmith", "method": "int4", "group_size": 64, "symmetric": false, ...}

`lmsmith.models.load_model` sees that section and calls `load_quantized`, which builds the model from its
config, swaps in empty quantized linears and loads the state.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmsmith.compress.quantize import QUANT_METHOD, QuantSpec, fp8_cpu_error, fp8_supported, prepare_for_inference, quantize_model_
from lmsmith.errors import LmsmithError

QUANT_KEY = "quantization"
WEIGHTS_FILE = "model.safetensors"
WEIGHT_SUFFIXES = (".safetensors",)
SKIP_FILES = {"model.safetensors.index.json", "lmsmith.json"}


def quant_section(config: dict[str, Any]) -> dict[str, Any] | None:
    q = config.get(QUANT_KEY)
    return q if isinstance(q, dict) and q.get("quant_method") == QUANT_METHOD else None


def is_quantized_dir(path: Path) -> bool:
    cfg = path / "config.json"
    return cfg.exists() and quant_section(json.loads(cfg.read_text())) is not None


def state_to_save(model: nn.Module, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """The state dict with tied duplicates dropped and full-precision floats cast to `dtype`.

    Quantization scales and zero points stay float32 (they are tiny and their precision matters)."""
    seen: set[tuple[int, int]] = set()
    state: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key in seen:
            continue  # a tied weight (lm_head = embed_tokens): saved once, re-tied at load
        seen.add(key)
        if name.endswith((".scales", ".zeros")):
            t = t.float()
        elif dtype is not None and t.is_floating_point() and not name.endswith(".qweight"):
            t = t.to(dtype)
        state[name] = t.detach().contiguous().cpu()
    return state


def save_quantized(model: nn.Module, source_dir: Path, out_dir: Path, spec: QuantSpec,
                   dtype: torch.dtype | None = None) -> Path:
    """Write `model` (already quantized) as a model directory, copying the source's non-weight files."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    for p in sorted(source_dir.iterdir()):
        if p.is_file() and p.suffix not in WEIGHT_SUFFIXES and p.name not in SKIP_FILES and p.name != "config.json":
            shutil.copy2(p, out_dir / p.name)
    config = json.loads((source_dir / "config.json").read_text())
    config.pop("quantization_config", None)  # a GGUF or other origin's quantization no longer applies
    config[QUANT_KEY] = spec.to_dict()
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(state_to_save(model, dtype), out_dir / WEIGHTS_FILE, metadata={"format": "pt", "quantization": spec.method})
    return out_dir


def build_empty(config_dir: Path, dtype: torch.dtype) -> nn.Module:
    """The model skeleton from config.json (random init skipped where transformers lets us)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(config_dir)
    if hasattr(config, QUANT_KEY):
        delattr(config, QUANT_KEY)
    try:
        from transformers.initialization import no_init_weights  # transformers >= 5
    except ImportError:  # pragma: no cover
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model


def read_state(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(p for p in model_dir.glob("*.safetensors"))
    if not files:
        raise LmsmithError(f"{model_dir} holds no safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f))
    return state


def load_quantized(model_dir: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
                   ) -> nn.Module:
    """Load a directory written by `save_quantized` onto `device`, activations in `dtype`."""
    model_dir = Path(model_dir)
    section = quant_section(json.loads((model_dir / "config.json").read_text()))
    if section is None:
        raise LmsmithError(f"{model_dir} is not an lmsmith-quantized model (no quantization section in config.json)")
    spec = QuantSpec.from_dict(section)
    device = torch.device(device)
    if spec.method == "fp8" and not fp8_supported(device):
        raise fp8_cpu_error()
    model = build_empty(model_dir, dtype)
    quantize_model_(model, spec.method, spec.group_size, spec.symmetric, spec.include_lm_head, spec.skip,
                    allow_cpu_fp8=True, empty=True, lm_head_method=spec.lm_head_method)
    if set(spec.modules) != {n for n, m in model.named_modules() if hasattr(m, "qweight")}:
        raise LmsmithError(f"{model_dir}: the quantized layers in config.json do not match the model's layers",
                           "re-run `lmsmith compress quantize` on the source model")
    state = read_state(model_dir)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = getattr(model.config, "tie_word_embeddings", False)
    missing = [k for k in missing if not (tied and k.endswith("lm_head.weight"))]
    if missing or unexpected:
        raise LmsmithError(f"{model_dir}: weights do not match the model "
                           f"(missing {missing[:3]}, unexpected {list(unexpected)[:3]})")
    if tied and not spec.include_lm_head and hasattr(model, "tie_weights"):
        model.tie_weights()
    model = model.to(device).eval()
    prepare_for_inference(model, dtype)
    return model


def quantize_to_dir(source_dir: Path, out_dir: Path, method: str, group_size: int | None = None,
                    symmetric: bool = False, include_lm_head: bool = False, skip: tuple[str, ...] = (),
                    lm_head_method: str | None = None) -> tuple[QuantSpec, nn.Module]:
    """Quantize the HF model in `source_dir` (weights read in float32) into `out_dir`."""
    from lmsmith.models import load_model, parse_dtype

    config = json.loads((source_dir / "config.json").read_text())
    if quant_section(config):
        raise LmsmithError(f"{source_dir} is already quantized ({quant_section(config)['method']})",
                           "quantize the unquantized parent model instead")
    stored = config.get("dtype") or config.get("torch_dtype") or "float32"
    save_dtype = parse_dtype(stored) if isinstance(stored, str) and stored != "auto" else torch.float32
    qat = config.get("lmsmith_qat") if isinstance(config.get("lmsmith_qat"), dict) else {}
    if qat.get("method") == method == "int4" and group_size is None:
        group_size = qat.get("group_size")  # a QAT model converts on the grid it trained on
    model = load_model(str(source_dir), dtype=torch.float32, device="cpu")
    spec = quantize_model_(model, method, group_size, symmetric, include_lm_head, skip, allow_cpu_fp8=True,
                           progress=True, lm_head_method=lm_head_method)
    if qat.get("method") == method and (method == "int8" or qat.get("group_size") == spec.group_size) and not symmetric:
        spec.algorithm = "qat"  # the weights already lie on this grid: rounding them changes nothing
    save_quantized(model, source_dir, out_dir, spec, dtype=save_dtype)
    return spec, model


def register_quantized(ref: str, name: str, method: str, group_size: int | None = None, symmetric: bool = False,
                       include_lm_head: bool = False, command: str | None = None, metrics: dict[str, Any] | None = None,
                       lm_head_method: str | None = None):
    """Quantize a registered (or path) model and register the result with lineage (stage "compress")."""
    from lmsmith.ops.registry import Lineage, Registry

    registry = Registry()
    handle = registry.resolve(ref)
    if handle.kind == "adapter":
        raise LmsmithError(f"{handle.ref} is an adapter", "merge it first (`lmsmith train merge`) and quantize the merged model")
    with tempfile.TemporaryDirectory(dir=registry.tmp) as tmp:
        out = Path(tmp) / name
        spec, _ = quantize_to_dir(handle.dir, out, method, group_size, symmetric, include_lm_head,
                                  lm_head_method=lm_head_method)
        config = {k: v for k, v in spec.to_dict().items() if k != "modules"}
        config["num_quantized_modules"] = len(spec.modules)
        mv = registry.register(out, name, lineage=Lineage(parent=handle.ref, stage="compress", command=command,
                                                          config=config),
                               tags={"quantization": method}, metrics=metrics or {})
    return mv, spec


def read_spec(model_dir: str | Path) -> QuantSpec | None:
    """The quantization spec of a model directory, or None when it is not lmsmith-quantized."""
    cfg = Path(model_dir) / "config.json"
    if not cfg.exists():
        return None
    section = quant_section(json.loads(cfg.read_text()))
    return QuantSpec.from_dict(section) if section is not None else None


def swap_in_quantized(model: nn.Module, spec: QuantSpec, device: torch.device) -> None:
    """Give an engine's own model (HF parameter names) the empty quantized linears of a saved checkpoint,
    ready for `load_state_dict(..., assign=True)`."""
    if "fp8" in (spec.method, spec.lm_head_method) and not fp8_supported(device):
        raise LmsmithError(f"fp8 weights need a CUDA GPU with compute capability >= 8.9 (this checkpoint is fp8, "
                           f"the engine runs on {device.type})", "serve an int8 or int4 version on this device")
    applied = quantize_model_(model, spec.method, spec.group_size, spec.symmetric, spec.include_lm_head, spec.skip,
                              allow_cpu_fp8=True, empty=True, lm_head_method=spec.lm_head_method)
    if set(applied.modules) != set(spec.modules):
        extra = sorted(set(spec.modules) ^ set(applied.modules))
        raise LmsmithError(f"the quantized layers in config.json do not match the model's layers (e.g. {extra[0]})",
                           "re-run `lmsmith compress quantize` on the source model")
