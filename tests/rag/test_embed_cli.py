"""`lmsmith models pull default-embedder` and `lmsmith embed`."""

from __future__ import annotations

import json

import numpy as np

from lmsmith.cli import main


def test_pull_default_embedder_and_embed(minilm, registry, tmp_path, capsys):
    assert main(["models", "pull", "default-embedder"]) == 0
    mv = registry.get("all-minilm-l6-v2")
    assert mv.ref == "all-minilm-l6-v2@1" and mv.tags["role"] == "embedder" and "1_Pooling/config.json" in mv.files
    assert main(["models", "pull", "default-embedder"]) == 0  # already there: no second version
    assert [v.ref for v in registry.list("all-minilm-l6-v2")] == ["all-minilm-l6-v2@1"]
    capsys.readouterr()
    assert main(["embed", "A cat sits on the mat.", "A kitten is resting on a rug.", "GPUs need HBM memory."]) == 0
    rows = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]  # the default embedder
    assert [r["id"] for r in rows] == [0, 1, 2] and rows[0]["model"] == "all-minilm-l6-v2@1"
    a, b, c = (np.array(r["embedding"]) for r in rows)
    assert a.shape == (384,) and abs(np.linalg.norm(a) - 1) < 1e-4
    assert a @ b > 0.5 > a @ c  # paraphrases close, unrelated text far
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "x", "text": "hello"}\n{"id": "y", "text": "world"}\n')
    assert main(["embed", "--input", str(src), "--output", str(tmp_path / "v.npy")]) == 0
    assert np.load(tmp_path / "v.npy").shape == (2, 384)
    meta = json.loads((tmp_path / "v.json").read_text())
    assert meta["ids"] == ["x", "y"] and meta["embedder"]["ref"] == "all-minilm-l6-v2@1"
    assert main(["embed"]) == 1
    assert "nothing to embed" in capsys.readouterr().err
