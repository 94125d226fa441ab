"""The CLI contract: --help, --json, exit codes, one-line errors for user mistakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmsmith import __version__
from lmsmith.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse: --help / usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version_and_help():
    proc = subprocess.run([sys.executable, "-m", "lmsmith.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"lmsmith {__version__}"
    for cmd in (["--help"], ["models", "--help"], ["models", "import", "--help"], ["generate", "--help"]):
        proc = subprocess.run([sys.executable, "-m", "lmsmith.cli", *cmd], capture_output=True, text=True)
        assert proc.returncode == 0 and "usage:" in proc.stdout


def test_models_workflow(capsys, tiny_dir: Path, tmp_path: Path):
    code, out, _ = run(capsys, "models", "import", str(tiny_dir), "--name", "tiny")
    assert code == 0 and out.strip() == "tiny@1"
    run(capsys, "models", "import", str(tiny_dir), "--name", "tiny")
    code, out, _ = run(capsys, "models", "list", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["ref"] for r in rows] == ["tiny@1", "tiny@2"]
    assert rows[0]["lineage"]["stage"] == "import" and rows[0]["lineage"]["command"].startswith("lmsmith models import")
    code, out, _ = run(capsys, "models", "alias", "tiny@1", "production")
    assert code == 0
    code, out, _ = run(capsys, "models", "show", "tiny@production", "--json")
    assert json.loads(out)["version"] == 1 and json.loads(out)["aliases"] == ["production"]
    code, out, _ = run(capsys, "models", "show", "tiny")
    assert code == 0 and "tiny@2" in out
    code, out, _ = run(capsys, "models", "verify", "tiny@1")
    assert code == 0 and "ok" in out
    code, out, _ = run(capsys, "models", "export", "tiny", str(tmp_path / "exp"))
    assert code == 0 and (tmp_path / "exp" / "model.safetensors").exists()
    code, out, _ = run(capsys, "models", "rm", "tiny@2")
    assert code == 0
    code, out, _ = run(capsys, "models", "list", "--json")
    assert [r["ref"] for r in json.loads(out)] == ["tiny@1"]


def test_verify_reports_damaged_file_by_name(capsys, tiny_dir: Path, registry):
    mv = registry.register(tiny_dir, "m")
    f = mv.dir / "model-model.norm.weight.safetensors"
    os.chmod(f, 0o644)
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    code, out, err = run(capsys, "models", "verify", "m")
    assert code == 1 and "model-model.norm.weight.safetensors" in err and "sha256" in err


@pytest.mark.parametrize("argv, message", [
    (["models", "show", "ghost"], "unknown model 'ghost'"),
    (["models", "show", "tiny@9"], "has no version 9"),
    (["models", "show", "tiny@staging"], "has no alias 'staging'"),
    (["models", "alias", "tiny@1", "9lives"], "invalid alias '9lives'"),
    (["models", "import", "/nonexistent/model", "--name", "x"], "path does not exist"),
    (["models", "pull", "gpt5"], "unknown model to pull"),
    (["generate", "ghost", "--prompt", "hi"], "unknown model 'ghost'"),
    (["generate", "tiny", "--prompt", "hi", "--max-tokens", "0"], "argument --max-tokens: must be >= 1"),
    (["generate", "tiny", "--prompt", "hi", "--system", "be brief"], "--system needs --chat"),
    (["models", "frobnicate"], "invalid choice"),
])
def test_user_errors_are_one_line(capsys, tiny_ref, argv, message):
    code, out, err = run(capsys, *argv)
    assert code not in (0, None)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err


def test_malformed_config_is_one_line(capsys, tiny_dir: Path, tmp_path: Path):
    import shutil

    d = tmp_path / "broken"
    shutil.copytree(tiny_dir, d)
    (d / "config.json").write_text("{")
    code, _, err = run(capsys, "models", "import", str(d), "--name", "broken")
    assert code == 1 and "config.json is not valid JSON" in err and len(err.strip().splitlines()) == 1


def test_debug_shows_traceback(tiny_ref):
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "lmsmith.cli", "models", "show", "ghost", "--debug"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_generate_streams_completion(capsys, tiny_ref):
    code, out, _ = run(capsys, "generate", tiny_ref, "--prompt", "Praha je", "--max-tokens", "8", "--seed", "1")
    assert code == 0 and len(out.strip()) > 0
    code2, out2, _ = run(capsys, "generate", tiny_ref, "--prompt", "Praha je", "--max-tokens", "8", "--chat")
    assert code2 == 0


def test_demo_steps_are_unique_and_in_lifecycle_order():
    from lmsmith.demo import STEPS

    keys = [s.key for s in STEPS]
    assert len(keys) == len(set(keys)), keys
    assert keys.index("pull") < keys.index("finetune") < keys.index("eval") < keys.index("serve")
