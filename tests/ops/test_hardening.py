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
from lmsmith.registry.registry import Registry, tensor_file_name


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
    from lmsmith.registry.importers import import_model

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


# ----------------------------------------------------------------------------- item 11: names, gc, export, .bin
def test_names_with_a_trailing_newline_or_unicode_digits_are_refused(registry: Registry, tiny_dir: Path):
    with pytest.raises(LmsmithError, match="invalid model name"):
        registry.register(tiny_dir, "tiny\n")
    mv = registry.register(tiny_dir, "tiny")
    with pytest.raises(LmsmithError, match="invalid alias|alias"):
        registry.set_alias(mv.ref, "prod\n")
    assert registry.get("tiny").aliases == {} or "prod\n" not in registry.get("tiny").aliases
    with pytest.raises(LmsmithError, match="no alias '²'"):
        registry.get("tiny@²")
    with pytest.raises(LmsmithError, match="not a model reference"):
        registry.get("tiny\n@1")


def test_a_folder_here_does_not_shadow_a_registered_name(registry: Registry, tiny_dir: Path, tmp_path, monkeypatch,
                                                         capsys):
    mv = registry.register(tiny_dir, "tiny")
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_dir, tmp_path / "tiny")
    got = registry.resolve("tiny")
    assert Path(got.path) == mv.dir
    assert "using the registered model" in capsys.readouterr().err
    assert Path(registry.resolve("./tiny").path) == Path("./tiny")  # explicitly a path
    shutil.copytree(tiny_dir, tmp_path / "other")
    assert Path(registry.resolve("other").path) == Path("other")  # not registered: the folder


def test_gc_reports_what_it_really_freed(registry: Registry, tiny_dir: Path):
    registry.register(tiny_dir, "tiny")
    crashed = registry.tmp / "v-deadbeef"  # a registration that crashed mid-staging
    crashed.mkdir()
    (crashed / "w").write_bytes(b"x" * 5000)
    tmpblob = registry.blobs.tmp / "blob-abc"
    tmpblob.write_bytes(b"y" * 3000)
    converting = registry.tmp / "import-123"  # a conversion that may still run
    converting.mkdir()
    (converting / "w").write_bytes(b"z" * 7000)
    d = registry.gc_details()
    assert d["freed"] == 8000 and d["staging"] == 2 and not crashed.exists() and not tmpblob.exists()
    assert converting.exists() and len(d["kept"]) == 1 and "import-123" in d["kept"][0]
    assert registry.verify("tiny") == []


def test_export_onto_a_file_is_a_clear_error(registry: Registry, tiny_dir: Path, tmp_path):
    registry.register(tiny_dir, "tiny")
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    with pytest.raises(LmsmithError, match="it is a file"):
        registry.export("tiny", f)
    assert f.read_text() == "keep me"


def test_legacy_non_zip_bin_weights_import(registry: Registry, tiny_dir: Path, tmp_path):
    from lmsmith.registry.importers import import_model

    d = tmp_path / "legacy"
    d.mkdir()
    for f in tiny_dir.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, d / f.name)
    torch.save(load_file(tiny_dir / "model.safetensors"), d / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    mv = import_model(d, "legacy", registry=registry)
    a = load_file(tiny_dir / "model.safetensors")
    assert registry.verify(mv.ref) == [] and len([f for f in mv.files if f.startswith("model-")]) == len(a)


# ----------------------------------------------------------------------------- item 12: malformed safetensors
def _raw_safetensors(path: Path, header: bytes, body: bytes = b"", declared: int | None = None) -> None:
    import struct

    path.write_bytes(struct.pack("<Q", len(header) if declared is None else declared) + header + body)


@pytest.mark.parametrize("case", ["huge_length", "deep_json", "negative_offset", "huge_offset", "shape_mismatch",
                                  "not_object", "bad_dtype"])
@pytest.mark.parametrize("how", ["register", "import"])
def test_malformed_safetensors_give_one_clear_error(registry: Registry, tiny_dir: Path, tmp_path, case, how):
    from lmsmith.registry.importers import import_model

    d = tmp_path / "m"
    d.mkdir()
    shutil.copy(tiny_dir / "config.json", d / "config.json")
    f = d / "model.safetensors"
    body = b"\0" * 16
    headers = {
        "negative_offset": b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [-8, 8]}}',
        "huge_offset": b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 18446744073709551616]}}',
        "shape_mismatch": b'{"w": {"dtype": "F32", "shape": [1000000], "data_offsets": [0, 16]}}',
        "not_object": b'[1, 2, 3]',
        "bad_dtype": b'{"w": {"dtype": "EVIL", "shape": [4], "data_offsets": [0, 16]}}',
        "deep_json": b"[" * 200_000 + b"]" * 200_000,
    }
    if case == "huge_length":
        _raw_safetensors(f, b"{}", body, declared=2**63)
    else:
        _raw_safetensors(f, headers[case], body)
    with pytest.raises(LmsmithError, match="not a valid safetensors file|truncated"):
        import_model(d, "m", registry=registry) if how == "import" else registry.register(d, "m")
    assert registry.names() == []


# ----------------------------------------------------------------------------- item 15: models list in a pipe
def test_models_list_never_truncates_names_in_a_pipe(registry: Registry, tiny_dir: Path, monkeypatch):
    import subprocess
    import sys

    long = "smollm2-135m-instruct-czech-legal-domain-adapted-v2"
    registry.register(tiny_dir, long)
    registry.set_alias(f"{long}@1", "production-candidate-2026-12")
    for cols in ("40", "80"):
        r = subprocess.run([sys.executable, "-m", "lmsmith.cli", "models", "list"], capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": cols}, timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"{long}@1" in r.stdout and "production-candidate-2026-12" in r.stdout and "…" not in r.stdout
