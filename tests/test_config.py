"""Typed config: defaults < YAML < CLI flags; unknown keys and bad values are one clear error."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from lmsmith.config import Config, add_config_args, config_from_args
from lmsmith.errors import LmsmithError


class TrainLike(Config):
    model: str = Field(description="model ref")
    lr: float = 3e-4
    steps: int = 100
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    bf16: bool = False
    output_name: str | None = None


def parse(argv: list[str]) -> TrainLike:
    p = argparse.ArgumentParser()
    add_config_args(p, TrainLike)
    return config_from_args(TrainLike, p.parse_args(argv))


def test_precedence(tmp_path: Path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model: smol\nlr: 0.001\nsteps: 5\nlora-targets: [q_proj]\n")
    c = parse(["--config", str(cfg_file), "--steps", "7", "--bf16", "--lora-targets", "a,b"])
    assert (c.model, c.lr, c.steps, c.bf16, c.lora_targets) == ("smol", 0.001, 7, True, ["a", "b"])
    assert parse(["--model", "x"]).schedule == "cosine"
    round_trip = TrainLike.from_yaml(_write(tmp_path / "r.yaml", c.to_yaml()))
    assert round_trip == c


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_errors(tmp_path: Path):
    with pytest.raises(LmsmithError, match="unknown option 'lerning_rate'"):
        parse(["--config", str(_write(tmp_path / "a.yaml", "model: m\nlerning_rate: 1\n"))])
    with pytest.raises(LmsmithError, match="missing required option '--model'"):
        parse([])
    with pytest.raises(LmsmithError, match="option 'steps'"):
        parse(["--config", str(_write(tmp_path / "b.yaml", "model: m\nsteps: many\n"))])
    with pytest.raises(LmsmithError, match="not valid YAML"):
        parse(["--config", str(_write(tmp_path / "c.yaml", "model: [unclosed\n"))])
    with pytest.raises(LmsmithError, match="config file not found"):
        parse(["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(SystemExit):
        parse(["--model", "m", "--schedule", "exponential"])
