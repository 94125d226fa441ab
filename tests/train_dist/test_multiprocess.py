"""Data-parallel training on CPU with gloo: 2 simulated nodes, and resume on a different world size.

Runs (tiny llama, 4 optimizer steps, global batch of 4 packed rows):
  nodes  - two torchrun launches (1 process each) sharing a c10d rendezvous on localhost, FSDP2
  one    - `lmsmith train ... --nproc 1 --batch-size 4` (torchrun, world size 1)
  plain  - the same run in this process, no process group at all
  nodes->1, one->2: copies of both runs with their last checkpoint removed, resumed from step 2 on
  the other number of processes (the loop keeps the global batch by changing the accumulation).
All of them must log the same per-step losses (fp32 reduction-order tolerance).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

COMMON = ["--seq-len", "64", "--steps", "4", "--lr", "1e-3", "--save-every", "2", "--eval-every", "2",
          "--no-mlflow", "--no-plot", "--seed", "0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ, LMSMITH_HOME=str(home), OMP_NUM_THREADS="1", NCCL_NVLS_ENABLE="0",
               TORCH_SYMM_MEM_DISABLE_MULTICAST="1")
    env.pop("LMSMITH_TRAIN_FAULT", None)
    return env


def _lmsmith(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmsmith.train.launch", *args], env=env, capture_output=True,
                          text=True, timeout=240)


def _losses(run_dir: Path, split: str | None = None) -> dict[int, float]:
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in recs if r.get("split") == split}


def _resume_from_step2(src: Path, dst: Path, nproc: int, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Simulate a crash after the step-2 checkpoint, then resume on `nproc` processes."""
    shutil.copytree(src, dst)
    for p in (dst / "checkpoints" / "step-00000004", dst / "final", dst / "registered"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return _lmsmith(["train", "resume", str(dst), "--nproc", str(nproc)], env)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_dir):
    root = tmp_path_factory.mktemp("dist")
    home = root / "home"
    rng = random.Random(0)
    words = "ten pes bezi pres velky maly cerveny dum strom reka most les".split()
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words) for _ in range(40)) for _ in range(120)))
    env = _env(home)
    base = ["train", "pretrain", "--model", str(tiny_dir), "--data", str(corpus), *COMMON]
    # tokenize once so the concurrent launches below hit the cache
    port = _free_port()
    nodes = root / "nodes"
    node_cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "lmsmith-test"]
    procs = [subprocess.Popen([*node_cmd, "--node-rank", str(i), "--rdzv-conf", f"is_host={i == 0}",
                               "-m", "lmsmith.train.launch", *base, "--batch-size", "2", "--run-dir", str(nodes)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    node_out = [p.communicate(timeout=300) for p in procs]
    node_rc = [p.returncode for p in procs]
    one = root / "one"
    one_res = _lmsmith([*base, "--batch-size", "4", "--nproc", "1", "--run-dir", str(one)], env)
    res = {"root": root, "env": env, "nodes": nodes, "one": one, "node_rc": node_rc, "node_out": node_out,
           "one_res": one_res}
    if all(rc == 0 for rc in node_rc) and one_res.returncode == 0:
        res["nodes_to_1"] = _resume_from_step2(nodes, root / "nodes_to_1", 1, env)
        res["one_to_2"] = _resume_from_step2(one, root / "one_to_2", 2, env)
    return res


def _check(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 0, res.stderr[-3000:]


def test_two_nodes_finish_and_match_one_process(runs):
    for rc, (_out, err) in zip(runs["node_rc"], runs["node_out"]):
        assert rc == 0, err[-3000:]
    _check(runs["one_res"])
    nodes, one = _losses(runs["nodes"]), _losses(runs["one"])
    assert sorted(nodes) == [1, 2, 3, 4]
    for s in nodes:
        assert nodes[s] == pytest.approx(one[s], rel=1e-5), s
    assert nodes[4] < nodes[1]  # it trains
    evals_nodes, evals_one = _losses(runs["nodes"], "eval"), _losses(runs["one"], "eval")
    assert {2, 4} <= set(evals_nodes)  # held-out loss, evaluated by all ranks of the sharded model
    assert sorted(evals_nodes) == sorted(evals_one)
    for s in evals_nodes:
        assert evals_nodes[s] == pytest.approx(evals_one[s], rel=1e-5)
    # the sharded run registered nothing twice and saved one full model
    assert (runs["nodes"] / "final" / "model.safetensors").is_file()


def test_matches_plain_single_process(runs, tiny_dir, tmp_path):
    """The same global batch in one process without any process group gives the same losses."""
    from lmsmith.train.config import PretrainConfig
    from lmsmith.train.loop import train

    corpus = runs["root"] / "corpus.txt"
    cfg = PretrainConfig(model=str(tiny_dir), data=[str(corpus)], seq_len=64, steps=4, lr=1e-3, save_every=2,
                         eval_every=2, mlflow=False, plot=False, seed=0, batch_size=4, run_dir=str(tmp_path / "p"))
    train(cfg)
    plain, nodes = _losses(tmp_path / "p"), _losses(runs["nodes"])
    for s in plain:
        assert nodes[s] == pytest.approx(plain[s], rel=1e-5), s


def test_resume_two_processes_on_one(runs):
    _check(runs["nodes_to_1"])
    assert "instead of 2" in runs["nodes_to_1"].stderr
    full, resumed = _losses(runs["nodes"]), _losses(runs["root"] / "nodes_to_1")
    assert sorted(resumed) == [1, 2, 3, 4]
    for s in (3, 4):
        assert resumed[s] == pytest.approx(full[s], rel=1e-5), s


def test_resume_one_process_on_two(runs):
    _check(runs["one_to_2"])
    full, resumed = _losses(runs["one"]), _losses(runs["root"] / "one_to_2")
    for s in (3, 4):
        assert resumed[s] == pytest.approx(full[s], rel=1e-5), s
    from safetensors.torch import load_file

    a = load_file(runs["one"] / "final" / "model.safetensors")
    b = load_file(runs["root"] / "one_to_2" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    assert torch.isfinite(next(iter(a.values()))).all()
