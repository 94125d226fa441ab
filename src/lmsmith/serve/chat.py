"""`lmsmith chat MODEL`: an interactive conversation on our engine, streamed, with a few slash commands.

The engine is built once; every turn re-renders the whole conversation with the chat template (the
engine's prefix cache makes the shared history cheap), and the oldest turns are dropped when the
conversation outgrows the context.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

from lmsmith.errors import LmsmithError
from lmsmith.serve.generate import chat_ids

HELP = """commands: /reset (forget the conversation)  /system TEXT (set the system prompt and reset)
          /history (show the conversation)  /help  /exit (or Ctrl-D); Ctrl-C stops an answer"""


@dataclass
class ChatSettings:
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None
    system: str | None = None


def trim(tok, messages: list[dict], budget: int) -> tuple[list[int], int]:
    """Prompt ids that fit `budget` tokens, dropping the oldest user/assistant pairs (never the system
    prompt or the newest message); returns the ids and how many messages were dropped."""
    dropped = 0
    head = 1 if messages and messages[0]["role"] == "system" else 0
    while True:
        ids = chat_ids(tok, messages)
        if len(ids) <= budget or len(messages) - head <= 1:
            break
        del messages[head: head + 2]
        dropped += 2
    if len(ids) > budget:
        raise LmsmithError(f"the message has {len(ids)} tokens, more than the {budget} the context leaves",
                           "send a shorter message or lower --max-tokens")
    return ids, dropped


def repl(engine, settings: ChatSettings, read: Callable[[str], str] = input,
         write: Callable[[str], None] = lambda s: (sys.stdout.write(s), sys.stdout.flush())) -> list[dict]:
    """Run the conversation until /exit or end of input; returns the final history."""
    from lmsmith.serve.sampling_params import SamplingParams

    tok = engine.tokenizer
    system = settings.system
    history: list[dict] = [{"role": "system", "content": system}] if system else []
    params = SamplingParams(max_tokens=settings.max_tokens, temperature=settings.temperature, top_p=settings.top_p,
                            seed=settings.seed).validate()
    write(f"chatting with {engine.model_ref}. {HELP}\n")
    turn = 0
    while True:
        try:
            line = read("you> ")
        except EOFError:
            write("\n")
            return history
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return history
        if text == "/help":
            write(HELP + "\n")
            continue
        if text == "/reset":
            history = [{"role": "system", "content": system}] if system else []
            write("(conversation cleared)\n")
            continue
        if text.startswith("/system"):
            system = text[len("/system"):].strip() or None
            history = [{"role": "system", "content": system}] if system else []
            write(f"(system prompt {'set' if system else 'removed'}; conversation cleared)\n")
            continue
        if text == "/history":
            for m in history:
                write(f"{m['role']}: {m['content']}\n")
            continue
        if text.startswith("/"):
            write(f"unknown command {text.split()[0]}. {HELP}\n")
            continue
        history.append({"role": "user", "content": line})
        ids, dropped = trim(tok, history, engine.max_model_len - settings.max_tokens)
        if dropped:
            write(f"(dropped the {dropped} oldest messages to fit the context)\n")
        turn += 1
        rid = f"chat-{turn}"
        engine.add_request(rid, ids, params)
        pieces: list[str] = []
        write("assistant> ")
        try:
            while engine.has_unfinished():
                for out in engine.step():
                    if out.text_delta:
                        pieces.append(out.text_delta)
                        write(out.text_delta)
        except KeyboardInterrupt:
            engine.abort(rid)
            while engine.has_unfinished():
                engine.step()
            write(" [stopped]")
        write("\n")
        history.append({"role": "assistant", "content": "".join(pieces)})
