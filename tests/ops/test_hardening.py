"""Registry hardening (issue 15): crafted imports must not corrupt other versions, follow links out of
the imported directory, or slip through loose name checks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmsmith.errors import LmsmithError
from lmsmith.ops.registry import Registry, tensor_file_name


def _crafted(tmp_path: Path, tiny_dir: Path, tensors: dict) -> Path:
    d = tmp_path / "crafted"
    d.mkdir()
    shutil.copy(tiny_dir / "config.json", d / "config.json")
    save_file(tensors, d / "model.safetensors")
    return d


def test_colliding_tensor_names_do_not_corrupt_another_version(registry: Registry, tiny_dir: Path, tmp_path):
    tiny = registry.register(tiny_dir, "tiny")
    head = load_file(tiny_dir / "model.safetensors")["lm_head.weight"]
    # the same tensor as tiny's (so the same blob), then one whose name differed only by '~' vs '_'
    d = _crafted(tmp_path, tiny_dir, {"lm_head.weight": head.clone(), "lm~head.weight": torch.zeros_like(head)})
    evil = registry.register(d, "evil")
    assert registry.verify("tiny") == [] and registry.verify("evil") == []
    assert len({f for f in evil.files if f.endswith(".safetensors")}) == 2
    got = {**load_file(evil.dir / tensor_file_name("lm_head.weight")), **load_file(evil.dir / tensor_file_name("lm~head.weight"))}
    assert torch.equal(got["lm_head.weight"], head) and not got["lm~head.weight"].any()
    assert tiny.files == registry.get("tiny").files


def test_blob_file_names_are_injective():
    names = ["a/b", "a_b", "a~b", "a.b", "a b", "a_b~" + "0" * 32]
    assert len({tensor_file_name(n) for n in names}) == len(names)
    assert tensor_file_name("model.norm.weight") == "model-model.norm.weight.safetensors"  # readable as before


def test_duplicate_tensor_across_shards_is_an_error(registry: Registry, tiny_dir: Path, tmp_path):
    d = _crafted(tmp_path, tiny_dir, {"w": torch.ones(2)})
    save_file({"w": torch.zeros(2)}, d / "model-00002-of-00002.safetensors")
    with pytest.raises(LmsmithError, match="appears twice"):
        registry.register(d, "dup")


def test_materialize_never_writes_into_an_existing_file(registry: Registry, tmp_path):
    store = registry.blobs
    a, b = store.put_bytes(b"blob a"), store.put_bytes(b"blob b")
    dest = tmp_path / "f"
    store.materialize(a, dest)
    store.materialize(a, dest)  # the same blob again: fine
    with pytest.raises(FileExistsError):
        store.materialize(b, dest)
    assert store.verify(a) and store.verify(b) and dest.read_bytes() == b"blob a"


def test_materialize_copy_fallback_creates_new_files_only(registry: Registry, tmp_path, monkeypatch):
    store = registry.blobs
    a, b = store.put_bytes(b"blob a"), store.put_bytes(b"blob b")
    dest = tmp_path / "g"
    os.link(store.path(a), dest)  # dest is a hard link to blob a, as in a half-built version

    real_link = os.link

    def no_cross_device(src, dst, *args, **kw):  # another filesystem: os.link fails with EXDEV
        if Path(src) == store.path(b):
            raise OSError(18, "Invalid cross-device link")
        return real_link(src, dst, *args, **kw)

    monkeypatch.setattr(os, "link", no_cross_device)
    with pytest.raises(FileExistsError):
        store.materialize(b, dest)
    assert store.verify(a)
    fresh = tmp_path / "h"
    store.materialize(b, fresh)
    assert fresh.read_bytes() == b"blob b" and not list(tmp_path.glob(".blob-*"))


# ----------------------------------------------------------------------------- item 8: links
def _model_copy(tmp_path: Path, tiny_dir: Path) -> Path:
    d = tmp_path / "model"
    shutil.copytree(tiny_dir, d)
    return d


@pytest.mark.parametrize("how", ["import", "register"])
def test_links_out_of_the_folder_are_refused(registry: Registry, tiny_dir: Path, tmp_path, how):
    from lmsmith.ops.importers import import_model

    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "notes.txt").write_text("private")
    for name, target in (("passwd", secret), ("stuff", outside)):
        d = _model_copy(tmp_path / name, tiny_dir)
        os.symlink(target, d / name)
        with pytest.raises(LmsmithError, match="symbolic links that lead outside"):
            import_model(d, "m", registry=registry) if how == "import" else registry.register(d, "m")
    assert registry.names() == []
    assert not [p for p in (registry.home / "store").rglob("*") if p.is_file() and p.read_bytes() in (b"root:x:0:0", b"private")]


def test_links_inside_the_folder_and_hf_cache_layout_are_fine(registry: Registry, tiny_dir: Path, tmp_path):
    d = _model_copy(tmp_path, tiny_dir)
    os.rename(d / "generation_config.json", d / "gen.json")
    os.symlink(d / "gen.json", d / "generation_config.json")
    assert "generation_config.json" in registry.register(d, "inside").files
    snap = tmp_path / "hub" / "models--x--tiny" / "snapshots" / "abc"
    blobs = tmp_path / "hub" / "models--x--tiny" / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    for f in tiny_dir.iterdir():
        shutil.copy(f, blobs / f.name)
        os.symlink(Path("../../blobs") / f.name, snap / f.name)
    mv = registry.register(snap, "cached")
    assert registry.verify(mv.ref) == [] and (mv.dir / "config.json").is_file()
