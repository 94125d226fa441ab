"""Issue 19's slow check: instruction backtranslation of the 20 shipped Czech texts on the default model through
the in-process engine gives 20 chat records, and `train sft` trains on them."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest

from lmsmith.cli import main


@pytest.mark.slow
def test_backtranslate_czech_on_default_model_then_sft(default_model_dir: Path, tmp_path: Path):
    src = files("lmsmith") / "assets/synth/cs_texts.jsonl"
    texts = [json.loads(line) for line in src.read_text("utf-8").splitlines()]
    assert len(texts) == 20
    inp = tmp_path / "cs.jsonl"
    inp.write_text(src.read_text("utf-8"), encoding="utf-8")
    out = tmp_path / "cs_sft.jsonl"
    assert main(["synth", "backtranslate", "--model", str(default_model_dir), "--device", "cpu", "--input", str(inp),
                 "--output", str(out), "--language", "cs", "--max-tokens", "48", "--seed", "0"]) == 0
    recs = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert len(recs) == 20
    by_id = {t["id"]: t["text"] for t in texts}
    for r in recs:
        user, assistant = r["messages"]
        assert user["role"] == "user" and len(user["content"]) >= 5
        assert assistant == {"role": "assistant", "content": by_id[r["metadata"]["source_id"]]}
        assert r["metadata"]["generator"] == "backtranslate" and r["metadata"]["language"] == "cs"
    assert main(["train", "sft", "--model", str(default_model_dir), "--data", str(out), "--steps", "2", "--seq-len", "384",
                 "--batch-size", "2", "--lora-r", "4", "--warmup-steps", "0", "--no-mlflow", "--no-plot", "--workers", "1",
                 "--run-dir", str(tmp_path / "run"), "--output-name", "cs-bt"]) == 0
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in m for m in metrics)
