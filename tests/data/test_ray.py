"""The Ray executor: same bytes as the local executor, retried workers, resumed runs, clear errors.

Starts a local Ray cluster on loopback (`num_cpus=2`); skipped when Ray is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from lmsmith.data.clean import FAULT_ENV, CleanConfig, clean  # noqa: E402

from .samples import paragraphs  # noqa: E402


@pytest.fixture(scope="module")
def ray_cluster():
    from lmsmith.data.ray_executor import connect

    connect(None, num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture
def dup_corpus(tmp_path: Path) -> Path:
    """Czech/Polish/Slovene/English paragraphs with exact and near duplicates far from their originals,
    so with 6-document chunks they sit in other chunks (and other output shards)."""
    docs = [p for lang in ("cs", "pl", "sl", "en") for p in paragraphs(lang)]
    cs = paragraphs("cs")
    long1 = cs[1] + "\n\n" + cs[2]
    docs = [long1] + docs
    docs += [cs[0].upper(), "  " + cs[3] + "\n"]  # exact duplicates (after normalization)
    docs += [long1.replace("přáteli", "kamarády"), long1 + " Recept mám dodnes schovaný."]  # near duplicates
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(docs)))
    return path


def _cfg(inp: Path, out: Path, **kw) -> CleanConfig:
    opts = {"lang": ["cs", "pl", "sl", "en"], "min_words": 20, "workers": 1, "chunk_docs": 6, "progress": False}
    return CleanConfig(inputs=[str(inp)], output=str(out), **{**opts, **kw})


def _outputs(out: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted(out.glob("shard-*"))}
    manifest = json.loads((out / "manifest.json").read_text())
    files["manifest.shards"] = json.dumps(manifest["shards"]).encode()
    report = json.loads((out / "report.json").read_text())
    files["report.steps"] = json.dumps([report["steps"], report["reasons"], report["near_dedup"]]).encode()
    return files


def test_ray_output_equals_local_byte_for_byte(ray_cluster, dup_corpus, tmp_path):
    """Same shards and report; on Ray the near-dup step groups LSH bands over the whole corpus (a task per band)."""
    local = clean(_cfg(dup_corpus, tmp_path / "local"))
    on_ray = clean(_cfg(dup_corpus, tmp_path / "ray", executor="ray"))
    assert local["chunks"] >= 4
    removed = {k: v for k, v in local["reasons"].items() if k in ("exact_dedup", "near_dedup")}
    assert removed["exact_dedup"]["duplicate"] == 2 and removed["near_dedup"]["near_duplicate"] == 2
    assert _outputs(tmp_path / "local") == _outputs(tmp_path / "ray")
    assert on_ray["documents_out"] == local["documents_out"]


def test_a_killed_worker_is_retried_and_nothing_is_written_twice(dup_corpus, tmp_path, monkeypatch):
    from lmsmith.data.ray_executor import connect

    clean(_cfg(dup_corpus, tmp_path / "local"))
    ray.shutdown()  # a cluster whose workers see the fault switch
    monkeypatch.setenv(FAULT_ENV, "worker-exit:2")
    connect(None, num_cpus=2)
    try:
        report = clean(_cfg(dup_corpus, tmp_path / "ray", executor="ray", keep_work=True))
    finally:
        ray.shutdown()
    work = tmp_path / "ray" / "_work"
    assert (work / "fault-2").exists()  # chunk 2's first worker died
    assert sorted(p.name for p in work.glob("chunk-00002*")) == ["chunk-00002.done.json", "chunk-00002.jsonl.gz",
                                                                  "chunk-00002.keys.npy", "chunk-00002.npz"]
    assert not list(work.glob("*.tmp*"))
    assert report["chunks_processed"] == report["chunks"]
    assert _outputs(tmp_path / "local") == _outputs(tmp_path / "ray")


def test_a_killed_run_resumes_with_the_same_command(dup_corpus, tmp_path):
    local = tmp_path / "local"
    clean(_cfg(dup_corpus, local))
    out = tmp_path / "ray"
    cmd = [sys.executable, "-c", "import sys; from lmsmith.cli import main; sys.exit(main())", "data", "clean",
           str(dup_corpus), "--output", str(out), "--lang", "cs,pl,sl,en", "--min-words", "20", "--chunk-docs", "6",
           "--executor", "ray", "--num-cpus", "2", "--json"]
    env = {**os.environ, FAULT_ENV: "driver-kill:2", "LMSMITH_HOME": str(tmp_path / "home")}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == -9 and not (out / "manifest.json").exists()
    env.pop(FAULT_ENV)
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["chunks_resumed"] >= 2 and report["chunks_processed"] == report["chunks"] - report["chunks_resumed"]
    assert _outputs(local) == _outputs(out)


def test_missing_cluster_is_one_clear_error(dup_corpus, tmp_path):
    cmd = [sys.executable, "-c", "import sys; from lmsmith.cli import main; sys.exit(main())", "data", "clean",
           str(dup_corpus), "--output", str(tmp_path / "o"), "--executor", "ray", "--ray-address", "127.0.0.1:1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "LMSMITH_HOME": str(tmp_path / "home")})
    assert res.returncode == 1
    err = res.stderr.strip().splitlines()
    assert err[-1].startswith("error: no Ray cluster answers at 127.0.0.1:1") and "ray start --head" in err[-1]


def test_ray_tokenize_builds_the_same_cache_train_reads(ray_cluster, dup_corpus, tmp_path, tiny_ref, capsys):
    from lmsmith.cli import main
    from lmsmith.data.corpus import tokenize_corpus
    from lmsmith.models import load_tokenizer

    clean(_cfg(dup_corpus, tmp_path / "clean"))
    tok = load_tokenizer(tiny_ref)
    local = tokenize_corpus([str(tmp_path / "clean")], tok, workers=1, cache_root=tmp_path / "local", quiet=True)
    assert main(["data", "tokenize", str(tmp_path / "clean"), "--tokenizer", tiny_ref, "--executor", "ray",
                 "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    on_ray = Path(built["dir"])
    assert on_ray.name == local.dir.name  # the same key: files' and tokenizer's hashes
    assert (on_ray / "tokens.bin").read_bytes() == (local.dir / "tokens.bin").read_bytes()
    assert (on_ray / "doc_starts.npy").read_bytes() == (local.dir / "doc_starts.npy").read_bytes()
    # train finds it in its cache: no tokenizing again
    again = tokenize_corpus([str(tmp_path / "clean")], tok, quiet=True)
    assert again.dir == on_ray
