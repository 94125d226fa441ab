"""Importing models: HF dirs, pickle weights (safely), bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmsmith.errors import LmsmithError
from lmsmith.registry.importers import import_model


class _Evil:
    """Unpickling this calls os.system-like code: it writes a marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def _pickle_dir(tiny_dir: Path, dest: Path, payload) -> Path:
    shutil.copytree(tiny_dir, dest, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(payload, dest / "pytorch_model.bin")
    return dest


def test_malicious_pickle_is_refused_and_never_runs(registry, tiny_dir: Path, tmp_path: Path):
    marker = tmp_path / "marker.txt"
    evil = _pickle_dir(tiny_dir, tmp_path / "evil", {"weight": _Evil(str(marker))})
    with pytest.raises(LmsmithError, match="refused pytorch_model.bin"):
        import_model(evil, "evil", registry=registry)
    assert not marker.exists()
    assert registry.list() == []
    # a bare pickle file too
    with pytest.raises(LmsmithError, match="refused"):
        import_model(evil / "pytorch_model.bin", "evil", registry=registry)
    assert not marker.exists()


def test_pickle_weights_are_converted_to_safetensors(registry, tiny_dir: Path, tmp_path: Path):
    state = load_file(tiny_dir / "model.safetensors")
    src = _pickle_dir(tiny_dir, tmp_path / "pkl", state)
    mv = import_model(src, "converted", registry=registry)
    assert not any(f.endswith(".bin") for f in mv.files)
    from transformers import AutoModelForCausalLM

    x = torch.tensor([[5, 6, 7]])
    assert torch.equal(AutoModelForCausalLM.from_pretrained(tiny_dir)(x).logits,
                       AutoModelForCausalLM.from_pretrained(mv.path)(x).logits)


def test_dtype_conversion_and_bare_model_without_tokenizer(registry, tiny_dir: Path, tmp_path: Path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny_dir / f, bare / f)
    mv = import_model(bare, "bare", dtype="bfloat16", registry=registry)
    from safetensors import safe_open

    f = next(p for p in mv.files if p.startswith("model-model.embed"))
    with safe_open(mv.dir / f, "pt") as fh:
        assert fh.get_tensor(fh.keys()[0]).dtype == torch.bfloat16
    from lmsmith.models import load_tokenizer

    with pytest.raises(LmsmithError, match="has no tokenizer"):
        load_tokenizer("bare")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "config.json").write_text(json.dumps({"hidden_size": 3})), "no 'model_type'"),
    (lambda d: (d / "config.json").unlink(), "has no config.json"),
    (lambda d: (d / "model.safetensors").unlink(), "has no weights"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x01\x02"), "not a valid safetensors file"),
])
def test_bad_model_dirs(registry, tiny_dir: Path, tmp_path: Path, mutate, message):
    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    mutate(d)
    with pytest.raises(LmsmithError, match=message):
        import_model(d, "m", registry=registry)
    assert registry.list() == []


def test_missing_path_and_bad_name(registry, tiny_dir: Path, tmp_path: Path):
    with pytest.raises(LmsmithError, match="does not exist"):
        import_model(tmp_path / "nowhere", "m", registry=registry)
    with pytest.raises(LmsmithError, match="invalid model name"):
        import_model(tiny_dir, "no/slashes", registry=registry)
    with pytest.raises(LmsmithError, match="unknown dtype"):
        import_model(tiny_dir, "m", dtype="int3", registry=registry)
