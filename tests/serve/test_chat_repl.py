"""`lmsmith chat` (the REPL on the engine) and `lmsmith generate` reading its prompt from stdin."""

from __future__ import annotations

import subprocess
import sys

from lmsmith.serve.chat import ChatSettings, repl, trim
from lmsmith.serve.engine import Engine


def test_repl_keeps_history_and_handles_commands(tiny_ref):
    engine = Engine(tiny_ref, max_num_seqs=1)
    lines = iter(["hello", "/system Be brief.", "second", "third", "/history", "/nope", "/reset", "/exit"])
    written: list[str] = []
    prompts: list[list[int]] = []
    real_add = engine.add_request
    engine.add_request = lambda rid, ids, params: (prompts.append(list(ids)), real_add(rid, ids, params))[1]
    try:
        history = repl(engine, ChatSettings(max_tokens=4, temperature=0.0), read=lambda _: next(lines),
                       write=written.append)
    finally:
        engine.close()
    text = "".join(written)
    assert "system prompt set; conversation cleared" in text and "conversation cleared" in text
    assert "unknown command /nope" in text and "user: second" in text and "user: third" in text
    assert history == [{"role": "system", "content": "Be brief."}]  # /reset keeps the system prompt
    assert len(prompts) == 3
    # the third turn's prompt holds the second turn (history), and the first turn was cleared by /system
    tok = engine.tokenizer
    third = tok.decode(prompts[2])
    assert "second" in third and "third" in third and "hello" not in third and "Be brief." in third


def test_trim_drops_oldest_turns_but_keeps_system(tiny_ref):
    engine = Engine(tiny_ref, max_num_seqs=1)
    try:
        tok = engine.tokenizer
        msgs = [{"role": "system", "content": "S"}]
        for i in range(6):
            msgs += [{"role": "user", "content": f"question {i} " * 5}, {"role": "assistant", "content": f"answer {i}"}]
        msgs.append({"role": "user", "content": "last"})
        full = len(trim(tok, list(msgs), 10_000)[0])
        ids, dropped = trim(tok, msgs, full - 20)
        assert dropped >= 2 and len(ids) <= full - 20
        assert msgs[0]["role"] == "system" and msgs[-1]["content"] == "last" and "question 0" not in msgs[1]["content"]
    finally:
        engine.close()


def test_generate_reads_stdin(tiny_ref, lmsmith_home):
    import os

    env = {**os.environ, "LMSMITH_HOME": str(lmsmith_home)}
    cmd = [sys.executable, "-c", "import sys; from lmsmith.cli import main; sys.exit(main())", "generate", tiny_ref,
           "--max-tokens", "3"]
    res = subprocess.run(cmd, input="Hello from stdin", capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    ref = subprocess.run(cmd + ["--prompt", "Hello from stdin"], capture_output=True, text=True, env=env, timeout=120)
    assert res.stdout == ref.stdout and res.stdout.strip()
    empty = subprocess.run(cmd, input="  \n", capture_output=True, text=True, env=env, timeout=120)
    assert empty.returncode == 1 and "the prompt on stdin is empty" in empty.stderr
