"""Issue 15 item 7: an eval against an endpoint survives a single 500 or 429, honours Retry-After, and a
hanging or trickling server fails as "timed out" (not "cannot reach") instead of running for minutes."""

from __future__ import annotations

import time

import pytest

from fake_openai import FakeOpenAI
from lmsmith.errors import LmsmithError
from lmsmith.evaluate.backends import GenParams, OpenAIBackend


def test_single_500_and_429_do_not_end_the_run():
    with FakeOpenAI(responder=lambda body: "Praha") as srv:
        srv.script = ["500", "429:0"]
        be = OpenAIBackend(srv.url, "stub", concurrency=1)
        assert be.generate(["q1", "q2", "q3"], GenParams(max_tokens=4)) == ["Praha"] * 3
        assert srv.count == 5


def test_retry_after_honoured_by_eval_backend():
    with FakeOpenAI(responder=lambda body: "ok") as srv:
        srv.script = ["429:1"]
        be = OpenAIBackend(srv.url, "stub", concurrency=1)
        t = time.monotonic()
        assert be.generate(["q"], GenParams(max_tokens=1)) == ["ok"]
        assert time.monotonic() - t >= 1.0


@pytest.mark.parametrize("action", ["hang", "trickle"])
def test_stuck_server_times_out_with_clear_message(action):
    with FakeOpenAI() as srv:
        srv.script = [action] * 2
        be = OpenAIBackend(srv.url, "stub", timeout=1.0, max_retries=1)
        t = time.monotonic()
        with pytest.raises(LmsmithError, match="timed out") as e:
            be.generate(["q"], GenParams(max_tokens=1))
        assert "cannot reach" not in str(e.value)
        assert time.monotonic() - t < 8


def test_eval_cli_timeout_flags(capsys):
    from lmsmith.cli import main

    with FakeOpenAI() as srv:
        srv.script = ["hang"]
        t = time.monotonic()
        rc = main(["eval", "--endpoint", srv.url, "--api-model", "stub", "--tasks", "cs_answers", "--limit", "1",
                   "--timeout", "1", "--max-retries", "0", "--no-registry"])
        assert rc == 1 and time.monotonic() - t < 60  # imports and task loading included; was 243 s before
        err = capsys.readouterr().err
        assert "timed out" in err and "cannot reach" not in err
