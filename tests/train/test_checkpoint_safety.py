"""Checkpoints are data, never code (issue 15, item 4), and survive full disks and corruption (item 9)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from lmsmith.errors import LmsmithError
from lmsmith.train.checkpoint import load_checkpoint, resume_checkpoint, save_checkpoint

from .test_loop import FAULT_ENV, losses, pretrain_args, run_cli


class Payload:
    """Unpickling this runs `os.system` — what a tampered file in a shared run directory would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def setup():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def test_every_checkpoint_file_loads_without_unpickling_code(tmp_path):
    import random

    model, opt, sched = setup()
    path = save_checkpoint(tmp_path / "ckpts", 5, model, opt, sched, {"data": {"epoch": 0}})
    expected = (torch.rand(3), random.random())  # what the RNGs give right after the saved state
    for f in path.iterdir():
        if f.suffix == ".pt":
            torch.load(f, weights_only=True)  # would raise for anything but tensors and plain containers
        else:
            assert f.suffix in (".json", ".safetensors"), f.name
    m2, o2, s2 = setup()
    torch.nn.init.zeros_(m2.weight)
    torch.manual_seed(123)
    random.seed(123)
    saved = load_checkpoint(path, m2, o2, s2)
    assert saved["step"] == 5 and torch.equal(m2.weight, model.weight)
    assert s2.state_dict() == sched.state_dict() and s2.get_last_lr() == sched.get_last_lr()
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    assert o2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


@pytest.mark.parametrize("victim", ["state.pt", "optimizer.pt", "trainable.pt"])
def test_a_reduce_payload_never_runs(tmp_path, victim):
    model, opt, sched = setup()
    path = save_checkpoint(tmp_path / "ckpts", 5, model, opt, sched, {"data": {}})
    if victim == "state.pt":  # an older checkpoint layout: state.pt instead of state.json
        (path / "state.json").unlink()
    marker = tmp_path / "pwned"
    with open(path / victim, "wb") as f:
        pickle.dump({"scheduler": Payload(marker), "rng": {}}, f)
    with pytest.raises(LmsmithError, match="unreadable or unsafe"):
        load_checkpoint(path, *setup())
    assert not marker.exists()


def test_older_plain_state_pt_still_loads(tmp_path):
    model, opt, sched = setup()
    path = save_checkpoint(tmp_path / "ckpts", 5, model, opt, sched, {"data": {}})
    (path / "state.json").unlink()
    (path / "rng.safetensors").unlink()
    import random

    torch.save({"scheduler": sched.state_dict(), "rng": {"torch": torch.get_rng_state(), "python": random.getstate()}},
               path / "state.pt")
    m2, o2, s2 = setup()
    assert load_checkpoint(path, m2, o2, s2)["step"] == 5 and s2.state_dict() == sched.state_dict()


def test_dcp_metadata_payload_never_runs(tmp_path):
    import torch.distributed.checkpoint as dcp

    from lmsmith.train.distributed import DistEnv, load_dcp, save_dcp

    model, opt, sched = setup()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = save_dcp(tmp_path / "ckpts", 3, model, opt, sched, {"data": {}}, DistEnv())
        marker = tmp_path / "pwned"
        with open(path / "model" / ".metadata", "wb") as f:
            pickle.dump(Payload(marker), f)
        with pytest.raises(LmsmithError, match="does not load"):
            load_dcp(path, *setup(), DistEnv())
    assert not marker.exists()
    del dcp


# ----------------------------------------------------------------------------- item 9
def test_full_disk_cleans_up_and_names_the_disk(tmp_path):
    model, opt, sched = setup()
    root = tmp_path / "ckpts"
    save_checkpoint(root, 3, model, opt, sched, {"data": {}})
    with pytest.raises(LmsmithError, match="disk holding .* is full"):
        save_checkpoint(root, 6, model, opt, sched, {"data": {}}, fault="disk-full")
    assert sorted(p.name for p in root.iterdir()) == ["step-00000003"]


def test_resume_falls_back_to_the_newest_checkpoint_that_verifies(tmp_path):
    model, opt, sched = setup()
    root = tmp_path / "ckpts"
    for step in (3, 6, 9):
        save_checkpoint(root, step, model, opt, sched, {"data": {}}, keep=3)
    (root / "step-00000009" / "optimizer.pt").write_bytes(b"\x80\x04garbage")  # corrupted
    with open(root / "step-00000006" / "trainable.pt", "r+b") as f:  # truncated
        f.truncate(10)
    said: list[str] = []
    m2, o2, s2 = setup()
    path, saved = resume_checkpoint(root, lambda p: load_checkpoint(p, m2, o2, s2), say=said.append)
    assert path.name == "step-00000003" and saved["step"] == 3
    assert any("step-00000009" in s and "corrupted" in s for s in said)
    assert any("resuming from step-00000003" in s for s in said)
    # without a manifest (older checkpoints) a file that does not load is skipped too
    for p in (root / "step-00000009", root / "step-00000006"):
        (p / "manifest.json").unlink()
    path, _ = resume_checkpoint(root, lambda p: load_checkpoint(p, *setup()), say=said.append)
    assert path.name == "step-00000003"


def test_train_resume_after_full_disk_and_corrupt_checkpoint(tiny_dir, prose, tmp_path):
    run = tmp_path / "run"
    r = run_cli(pretrain_args(tiny_dir, prose, run), {FAULT_ENV: "disk-full:6"})
    assert r.returncode == 1 and "is full" in r.stderr and "Traceback" not in r.stderr
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000003"]
    (ckpts / ".tmp-step-00000006-deadbeef").mkdir()  # and one left by a crash
    r = run_cli(["train", "resume", str(run)], {FAULT_ENV: "kill-after-step:7"})
    assert r.returncode == -9
    (ckpts / "step-00000006" / "optimizer.pt").write_bytes(b"not a checkpoint")
    r = run_cli(["train", "resume", str(run)])
    assert r.returncode == 0, r.stderr
    assert "skipping checkpoint step-00000006" in r.stderr and "resuming from step-00000003" in r.stderr
    assert [s for s, _ in losses(run)][-1] == 9
    assert not any(p.name.startswith(".tmp") for p in ckpts.iterdir())
