"""The training loop on tiny models: learning, exact resume after SIGKILL, atomic checkpoints, NaN stop,
Ctrl-C, LoRA/QLoRA adapters registered with their base, and clear errors before any compute."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmsmith.cli import main
from lmsmith.errors import LmsmithError
from lmsmith.train.config import PretrainConfig, SFTConfig
from lmsmith.train.loop import FAULT_ENV, train
from lmsmith.train.tracking import read_metrics

from .conftest import chat, fast, write_jsonl


def losses(run_dir: Path, split: str = "train") -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl") if r.get("split", "train") == split]


def test_continued_pretraining_lowers_heldout_loss(tiny_ref, prose, tmp_path, registry):
    cfg = PretrainConfig(model=tiny_ref, data=[str(prose)], steps=60, eval_fraction=0.1, eval_every=20,
                         run_dir=str(tmp_path / "run"), output_name="tiny-prose",
                         **fast(seq_len=64, batch_size=8, lr=5e-3, plot=True))
    res = train(cfg)
    evals = losses(res.run_dir, "eval")
    assert evals[0][0] == 0 and evals[-1][0] == 60
    start, end = evals[0][1], evals[-1][1]
    assert end < 0.7 * start, (start, end)  # random init: ~ln(vocab); after 60 steps: far lower
    assert (res.run_dir / "curves.png").stat().st_size > 1000
    mv = registry.get(res.ref)
    assert mv.kind == "model" and mv.lineage.parent == "tiny@1" and mv.lineage.stage == "pretrain"
    assert mv.lineage.data[0].sha256 and mv.lineage.run_id == res.run_id and "eval_loss" in mv.metrics
    recs = read_metrics(res.run_dir / "metrics.jsonl")
    assert [r["step"] for r in recs if "split" not in r] == list(range(1, 61))
    assert all({"loss", "lr", "grad_norm", "tokens_per_s"} <= set(r) for r in recs if "split" not in r)


def test_from_scratch_with_model_config(tiny_dir, prose, tmp_path):
    cfg_file = tmp_path / "config.json"
    cfg_file.write_text(json.dumps({"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
                                    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}))
    res = train(PretrainConfig(model_config_file=str(cfg_file), tokenizer=str(tiny_dir), data=[str(prose)], steps=3,
                               run_dir=str(tmp_path / "run"), **fast()))
    assert (res.output_dir / "config.json").exists() and (res.output_dir / "tokenizer.json").exists()
    assert json.loads((res.output_dir / "config.json").read_text())["hidden_size"] == 32


def run_cli(args: list[str], env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "lmsmith.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def pretrain_args(tiny_dir: Path, prose: Path, run_dir: Path) -> list[str]:
    return ["train", "pretrain", "--model", str(tiny_dir), "--data", str(prose), "--seq-len", "32",
            "--batch-size", "2", "--steps", "9", "--save-every", "3", "--lr", "3e-3", "--no-mlflow", "--no-plot",
            "--workers", "1", "--run-dir", str(run_dir), "--eval-fraction", "0"]


@pytest.mark.parametrize("extra", [[], ["--precision", "bf16", "--master-weights"]], ids=["fp32", "master"])
def test_sigkill_and_resume_gives_identical_losses(tiny_dir, prose, tmp_path, extra):
    """Master weights: the fp32 masters travel in the optimizer state, so the resumed run is bitwise the same."""
    full = run_cli(pretrain_args(tiny_dir, prose, tmp_path / "full") + extra)
    assert full.returncode == 0, full.stderr
    killed = run_cli(pretrain_args(tiny_dir, prose, tmp_path / "killed") + extra, {FAULT_ENV: "kill-after-step:7"})
    assert killed.returncode == -9
    assert [s for s, _ in losses(tmp_path / "killed")] == list(range(1, 8))  # steps 4..7 will be redone
    resumed = run_cli(["train", "resume", str(tmp_path / "killed")])
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr and "step-00000006" in resumed.stderr
    assert losses(tmp_path / "killed") == losses(tmp_path / "full")  # bitwise: floats round-trip through JSON
    assert len(losses(tmp_path / "full")) == 9


def test_kill_during_save_keeps_previous_checkpoint(tiny_dir, prose, tmp_path):
    run = tmp_path / "run"
    killed = run_cli(pretrain_args(tiny_dir, prose, run), {FAULT_ENV: "kill-during-save:6"})
    assert killed.returncode == -9
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir() if not p.name.startswith(".")) == ["step-00000003"]
    assert any(p.name.startswith(".tmp-step-00000006") for p in ckpts.iterdir())  # the half-written one
    resumed = run_cli(["train", "resume", str(run)])
    assert resumed.returncode == 0, resumed.stderr
    assert "step-00000003" in resumed.stderr
    assert [s for s, _ in losses(run)] == list(range(1, 10))
    assert not any(p.name.startswith(".tmp") for p in ckpts.iterdir())


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tiny_dir, prose, tmp_path):
    run = tmp_path / "run"
    r = run_cli(pretrain_args(tiny_dir, prose, run), {FAULT_ENV: "interrupt-after-step:4"})
    assert r.returncode == 130, r.stderr
    assert (run / "checkpoints" / "step-00000004").is_dir() and "lmsmith train resume" in r.stderr


def test_nan_stops_with_message_and_keeps_last_good_checkpoint(tiny_dir, prose, tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "nan-at-step:5")
    cfg = PretrainConfig(model=str(tiny_dir), data=[str(prose)], steps=9, save_every=2, run_dir=str(tmp_path / "r"), **fast())
    with pytest.raises(LmsmithError, match=r"diverged: loss is nan .*at step 5.*step-00000004"):
        train(cfg)
    assert (tmp_path / "r" / "checkpoints" / "step-00000004" / "trainable.pt").exists()
    assert not (tmp_path / "r" / "checkpoints" / "step-00000005").exists()


def test_lora_sft_adapter_registered_with_base(tiny_ref, chat_file, tmp_path, registry):
    from lmsmith.models import load_model

    cfg = SFTConfig(model=tiny_ref, data=[str(chat_file)], lora_r=4, epochs=2, output_name="tiny-sft",
                    run_dir=str(tmp_path / "run"), **fast(seq_len=128))
    res = train(cfg, command="lmsmith train sft ...")
    mv = registry.get(res.ref)
    base = registry.get("tiny")
    assert mv.kind == "adapter" and mv.base == "tiny@1"
    assert set(mv.files) >= {"adapter_config.json", "adapter_model.safetensors"}
    assert mv.size < base.size / 2  # only the adapter's bytes
    assert mv.lineage.stage == "sft" and mv.lineage.parent == "tiny@1" and mv.lineage.config["lora_r"] == 4
    model = load_model(res.ref, device="cpu")
    assert model.__class__.__name__ == "PeftModelForCausalLM"
    trained = [r for r in read_metrics(res.run_dir / "metrics.jsonl") if "split" not in r]
    assert len(trained) == res.step and trained[-1]["loss"] < trained[0]["loss"]


def test_qlora_trains_on_nf4_base_and_merges(tiny_ref, chat_file, tmp_path, registry):
    cfg = SFTConfig(model=tiny_ref, data=[str(chat_file)], qlora=True, lora_r=4, steps=6, merge=True,
                    output_name="tiny-qlora", run_dir=str(tmp_path / "run"), **fast(seq_len=128, lr=1e-2))
    res = train(cfg)
    mv = registry.get(res.ref)
    assert mv.kind == "model" and "adapter_config.json" not in mv.files  # merged into a full-precision model
    assert (mv.dir / "config.json").exists()
    trained = [r["loss"] for r in read_metrics(res.run_dir / "metrics.jsonl") if "split" not in r]
    assert trained[-1] < trained[0]


def cli_error(capsys, args: list[str]) -> str:
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # progress lines may come before the error
    assert err.startswith("error: "), err
    return err


def test_bad_inputs_fail_before_compute(tiny_dir, chat_file, prose, tmp_path, capsys, lmsmith_home):
    m = ["--model", str(tiny_dir), "--no-mlflow", "--run-dir", str(tmp_path / "never")]
    assert "data file not found" in cli_error(capsys, ["train", "pretrain", *m, "--data", str(tmp_path / "nope.txt")])
    (tmp_path / "empty.jsonl").write_text("")
    assert "corpus is empty" in cli_error(capsys, ["train", "pretrain", *m, "--data", str(tmp_path / "empty.jsonl")])
    bad = write_jsonl(tmp_path / "bad.jsonl", [chat("a", "b"), "{broken"])
    assert "bad.jsonl:2: not valid JSON" in cli_error(capsys, ["train", "sft", *m, "--data", str(bad)])
    noasst = write_jsonl(tmp_path / "na.jsonl", [chat("a", "b"), {"messages": [{"role": "user", "content": "x"}]}])
    assert "na.jsonl:2: conversation has no assistant turn" in cli_error(capsys, ["train", "sft", *m, "--data", str(noasst)])
    role = write_jsonl(tmp_path / "role.jsonl", [{"messages": [{"role": "critic", "content": "x"}, {"role": "assistant", "content": "y"}]}])
    assert "role 'critic'" in cli_error(capsys, ["train", "sft", *m, "--data", str(role)])
    assert "--qlora and --full" in cli_error(capsys, ["train", "sft", *m, "--data", str(chat_file), "--qlora", "--full"])
    assert "no model given" in cli_error(capsys, ["train", "pretrain", "--data", str(prose)])
    assert "--lora-targets nope" in cli_error(capsys, ["train", "sft", *m, "--data", str(chat_file), "--lora-targets", "nope"])
    assert not (tmp_path / "never").exists()  # nothing was started


def test_sft_needs_a_chat_template(tiny_dir, chat_file, tmp_path, capsys):
    import shutil

    no_tpl = tmp_path / "no-template"
    shutil.copytree(tiny_dir, no_tpl)
    for f in no_tpl.glob("chat_template.*"):
        f.unlink()
    tc = no_tpl / "tokenizer_config.json"
    cfg = json.loads(tc.read_text())
    cfg.pop("chat_template", None)
    tc.write_text(json.dumps(cfg))
    err = cli_error(capsys, ["train", "sft", "--model", str(no_tpl), "--data", str(chat_file), "--no-mlflow"])
    assert "has no chat template" in err


def test_resume_with_a_different_config_lists_differences(tiny_dir, prose, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(pretrain_args(tiny_dir, prose, run)[:-4] + ["--steps", "2", "--run-dir", str(run), "--eval-fraction", "0"]) == 0
    capsys.readouterr()
    args = pretrain_args(tiny_dir, prose, run)
    args[args.index("--lr") + 1] = "1e-3"
    err = cli_error(capsys, args + ["--resume"])
    assert "config differs" in err and "lr: 0.003 -> 0.001" in err
    err = cli_error(capsys, pretrain_args(tiny_dir, prose, run))
    assert "already holds a run" in err


def test_yaml_config(tiny_dir, prose, tmp_path, capsys):
    y = tmp_path / "train.yaml"
    y.write_text(f"model: {tiny_dir}\ndata: [{prose}]\nsteps: 2\nseq_len: 32\nbatch_size: 2\nmlflow: false\n"
                 f"plot: false\nrun_dir: {tmp_path / 'run'}\n")
    assert main(["train", "pretrain", "--config", str(y), "--steps", "3"]) == 0
    assert len(losses(tmp_path / "run")) == 3


def test_mlflow_local_store(tiny_dir, prose, tmp_path, lmsmith_home):
    pytest.importorskip("mlflow")
    res = train(PretrainConfig(model=str(tiny_dir), data=[str(prose)], steps=3, run_dir=str(tmp_path / "run"),
                               **{**fast(), "mlflow": True}))
    from mlflow.tracking import MlflowClient

    run_id = (res.run_dir / "mlflow_run_id").read_text().strip()
    hist = MlflowClient().get_metric_history(run_id, "loss")
    assert [m.step for m in hist] == [1, 2, 3]
    assert (lmsmith_home / "mlruns").is_dir()


def test_demo_step_finetunes_the_current_model(tiny_ref, registry, monkeypatch):
    from lmsmith import demo

    monkeypatch.setitem(demo.DEMO_OPTIONS, "epochs", 1)
    monkeypatch.setenv("LMSMITH_NO_MLFLOW", "1")
    ctx = {"model": tiny_ref}
    demo.step_finetune(ctx)
    mv = registry.get(ctx["model"])
    assert mv.name == "demo-veloria" and mv.kind == "adapter" and mv.base == "tiny@1"
    assert isinstance(ctx["fact_answer"], str)


def test_parquet_corpus(tiny_dir, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from lmsmith.data.corpus import tokenize_corpus
    from lmsmith.models import load_tokenizer

    pq.write_table(pa.table({"text": ["Praha je hlavní město.", "Paris is the capital."]}), tmp_path / "d.parquet")
    assert tokenize_corpus([str(tmp_path / "d.parquet")], load_tokenizer(str(tiny_dir)), quiet=True).n_docs == 2


def test_clean_output_dir_trains_and_resumes_from_anywhere(tiny_dir, tmp_path, capsys, monkeypatch):
    """`--data CLEAN_DIR` reads only the manifest's shards (not report.json); resume works from another
    working directory (paths stored absolute) and refuses data that changed since the run started."""
    from lmsmith.data.clean import CleanConfig, clean

    work = tmp_path / "work"
    work.mkdir()
    raw = work / "raw.jsonl"
    words = "the quick brown fox jumps over the lazy dog and then it runs home to sleep in the warm sun".split()
    raw.write_text("".join(json.dumps({"text": " ".join(words[i:] + words[:i]) * 3}) + "\n" for i in range(16)))
    clean(CleanConfig(inputs=[str(raw)], output=str(work / "clean"), lang=["en"], min_words=5, workers=1,
                      near_dedup=False, exact_dedup=False, quality=False, progress=False))
    assert (work / "clean" / "report.json").is_file()
    monkeypatch.chdir(work)
    run = tmp_path / "run"
    args = ["train", "pretrain", "--model", str(tiny_dir), "--data", "clean/", "--steps", "2", "--seq-len", "32",
            "--batch-size", "2", "--eval-fraction", "0", "--no-mlflow", "--no-plot", "--workers", "1",
            "--run-dir", str(run), "--save-every", "1"]
    assert main(args) == 0, capsys.readouterr().err
    saved = (run / "config.yaml").read_text()
    assert str(work / "clean") in saved
    monkeypatch.chdir("/")
    capsys.readouterr()
    assert main(["train", "resume", str(run)]) == 0, capsys.readouterr().err
    shard = sorted((work / "clean").glob("shard-*"))[0]
    import gzip

    with gzip.open(shard, "at") as f:
        f.write(json.dumps({"text": "an extra document"}) + "\n")
    assert main(["train", "resume", str(run)]) == 1
    assert "training data changed" in capsys.readouterr().err
