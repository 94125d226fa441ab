"""Registry: versions, refs, aliases, per-tensor dedup, integrity, concurrency, export."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmsmith.errors import IntegrityError, LmsmithError
from lmsmith.registry.registry import Lineage, Registry


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_register_versions_and_refs(registry: Registry, tiny_dir: Path):
    v1 = registry.register(tiny_dir, "m", lineage=Lineage(stage="import", command="test"))
    v2 = registry.register(tiny_dir, "m", tags={"lang": "cs"}, metrics={"acc": 0.5})
    assert (v1.version, v2.version) == (1, 2)
    assert registry.get("m").version == 2
    assert registry.get("m@1").version == 1
    assert registry.get("m@latest").version == 2
    assert registry.get("m@2").tags == {"lang": "cs"} and registry.get("m@2").metrics == {"acc": 0.5}
    assert registry.resolve(str(v1.path)).dir == v1.dir  # a path is a ref too
    # every recorded hash is the file's real sha256
    import hashlib

    for rel, entry in v1.files.items():
        assert hashlib.sha256((v1.dir / rel).read_bytes()).hexdigest() == entry.sha256
    with pytest.raises(LmsmithError, match="no version 7"):
        registry.get("m@7")
    with pytest.raises(LmsmithError, match="unknown model 'nope'"):
        registry.get("nope")
    with pytest.raises(LmsmithError, match="not a model reference"):
        registry.get("bad name!")


def test_version_dir_loads_with_plain_transformers(registry: Registry, tiny_dir: Path):
    from transformers import AutoModelForCausalLM

    mv = registry.register(tiny_dir, "m")
    assert len([f for f in mv.files if f.startswith("model-")]) > 10  # one safetensors file per tensor
    orig = AutoModelForCausalLM.from_pretrained(tiny_dir)
    loaded = AutoModelForCausalLM.from_pretrained(mv.path)
    x = torch.tensor([[1, 5, 9, 42]])
    assert torch.equal(orig(x).logits, loaded(x).logits)


def test_aliases_move_atomically(registry: Registry, tiny_dir: Path):
    registry.register(tiny_dir, "m")
    registry.register(tiny_dir, "m")
    registry.set_alias("m@1", "production")
    assert registry.get("m@production").version == 1
    registry.set_alias("m@2", "production")
    assert registry.get("m@production").version == 2
    assert registry.get("m@2").aliases == ["production"]
    for bad in ("latest", "1abc", "has space"):
        with pytest.raises(LmsmithError, match="invalid alias"):
            registry.set_alias("m@1", bad)
    with pytest.raises(LmsmithError, match="no alias 'staging'"):
        registry.get("m@staging")


def test_dedup_one_changed_tensor_and_reimport(registry: Registry, tiny_dir: Path, tmp_path: Path):
    first = registry.register(tiny_dir, "base")
    size1 = registry.store_bytes()
    # re-import of the same model: ~0 growth (only the metadata file is new)
    registry.register(tiny_dir, "base-again")
    assert registry.store_bytes() - size1 < 0.001 * first.size
    # a copy that differs in one tensor
    variant = tmp_path / "variant"
    shutil.copytree(tiny_dir, variant)
    sd = load_file(variant / "model.safetensors")
    sd["model.layers.0.mlp.down_proj.weight"] = sd["model.layers.0.mlp.down_proj.weight"] + 1
    save_file(sd, variant / "model.safetensors", metadata={"format": "pt"})
    before = registry.store_bytes()
    second = registry.register(variant, "variant")
    grew = registry.store_bytes() - before
    assert 0 < grew < 0.10 * first.size
    assert second.stored_bytes == grew
    # hard links: the version directory itself costs no extra disk
    f = next(iter(second.dir.glob("model-model.layers.0.mlp.up_proj*")))
    assert os.stat(f).st_nlink >= 3


def test_verify_detects_bitflip_and_truncation(registry: Registry, tiny_dir: Path, tmp_path: Path):
    mv = registry.register(tiny_dir, "m")
    assert registry.verify("m") == []
    target = mv.dir / "model-model.layers.1.self_attn.q_proj.weight.safetensors"
    os.chmod(target, 0o644)
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))  # writes through the hard link into the blob: store-level damage
    problems = registry.verify("m")
    assert len(problems) == 1 and target.name in problems[0] and "sha256" in problems[0]
    with pytest.raises(IntegrityError, match=target.name):
        registry.resolve("m")  # loading checks hashes too
    with open(target, "r+b") as fh:
        fh.truncate(100)
    assert "truncated" in registry.verify("m")[0]


def test_remove_frees_only_unshared_blobs(registry: Registry, tiny_dir: Path, tmp_path: Path):
    registry.register(tiny_dir, "a")
    variant = tmp_path / "v"
    shutil.copytree(tiny_dir, variant)
    sd = load_file(variant / "model.safetensors")
    sd["lm_head.weight"] = sd["lm_head.weight"] * 2
    save_file(sd, variant / "model.safetensors", metadata={"format": "pt"})
    registry.register(variant, "b")
    registry.set_alias("b@1", "prod")
    registry.remove("b@1")
    assert registry.verify("a") == []
    assert "b" not in registry.names()
    with pytest.raises(LmsmithError):
        registry.get("b@prod")


def test_adapter_base_protected_from_removal(registry: Registry, tiny_dir: Path, tmp_path: Path):
    base = registry.register(tiny_dir, "base")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    registry.register(adapter, "tuned", kind="adapter", base=base.ref)
    with pytest.raises(LmsmithError, match="base of tuned@1"):
        registry.remove("base")


def test_export_consolidates_weights(registry: Registry, tiny_dir: Path, tmp_path: Path):
    from transformers import AutoModelForCausalLM

    registry.register(tiny_dir, "m")
    out = registry.export("m", tmp_path / "exported")
    names = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in names and "config.json" in names and "tokenizer.json" in names
    assert not any(n.startswith("model-model.") for n in names)
    x = torch.tensor([[3, 4, 5]])
    a = AutoModelForCausalLM.from_pretrained(tiny_dir)(x).logits
    b = AutoModelForCausalLM.from_pretrained(out)(x).logits
    assert torch.equal(a, b)
    with pytest.raises(LmsmithError, match="not empty"):
        registry.export("m", out)


def test_concurrent_registration(lmsmith_home: Path, tiny_dir: Path):
    """Four processes register at once (two into the same name): all succeed, nothing is corrupted."""
    code = "import sys; from lmsmith.registry.registry import Registry; print(Registry(sys.argv[1]).register(sys.argv[2], sys.argv[3]).ref)"
    names = ["one", "two", "one", "three"]
    procs = [subprocess.Popen([sys.executable, "-c", code, str(lmsmith_home), str(tiny_dir), n],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in names]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    reg = Registry(lmsmith_home)
    assert sorted(v.ref for v in reg.list()) == ["one@1", "one@2", "three@1", "two@1"]
    assert sorted(o[0].strip() for o in outs) == ["one@1", "one@2", "three@1", "two@1"]
    for v in reg.list():
        assert reg.verify(v.ref) == []


def test_crashed_import_leaves_no_version(registry: Registry, tiny_dir: Path, monkeypatch):
    calls = {"n": 0}
    real = registry.blobs.materialize

    def boom(digest, dest):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full")
        real(digest, dest)

    monkeypatch.setattr(registry.blobs, "materialize", boom)
    with pytest.raises(OSError):
        registry.register(tiny_dir, "m")
    assert registry.list() == []
    assert not any(registry.tmp.iterdir())
    monkeypatch.undo()
    assert registry.register(tiny_dir, "m").version == 1
