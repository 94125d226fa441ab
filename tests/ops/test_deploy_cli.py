"""`lmsmith deploy canary|status|promote|rollback` and the alias history kept by `lmsmith models alias`."""

from __future__ import annotations

import json

from lmsmith.cli import main


def test_deploy_cli(registry, tiny_dir, capsys):
    for _ in range(3):
        registry.register(tiny_dir, "tiny")
    assert main(["deploy", "canary", "tiny@2", "--weight", "10"]) == 1
    assert "no alias 'production'" in capsys.readouterr().err
    assert main(["models", "alias", "tiny@1", "production"]) == 0
    assert main(["deploy", "canary", "tiny@2", "--weight", "10", "--seed", "7"]) == 0
    assert "10% of traffic to version 2" in capsys.readouterr().out
    assert main(["deploy", "status", "tiny", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["target"], s["canary"], s["weight"], s["seed"]) == (1, 2, 10.0, 7)
    assert main(["deploy", "rollback", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "canary off"
    assert main(["deploy", "canary", "tiny@3", "--weight", "50"]) == 0
    assert main(["deploy", "promote", "tiny"]) == 0
    assert "tiny@production -> version 3" in capsys.readouterr().out
    assert registry.get("tiny@production").version == 3
    assert main(["deploy", "rollback", "tiny"]) == 0
    assert "version 1 (was 3)" in capsys.readouterr().out
    assert registry.get("tiny@production").version == 1
    assert main(["deploy", "rollback"]) == 1  # the alias was created by its first move: nothing before it
    assert "no earlier target" in capsys.readouterr().err
