"""Single-prompt generation for the CLI (`lmsmith generate`), on our engine, streaming text as it is decoded."""

from __future__ import annotations

import sys
from typing import Callable

from lmsmith.data.chat import chat_ids as safe_chat_ids
from lmsmith.errors import LmsmithError


def build_prompt(tok, prompt: str, chat: bool, system: str | None) -> list[int]:
    if not chat:
        if system:
            raise LmsmithError("--system needs --chat", "add --chat, or put the instruction into --prompt")
        return tok(prompt)["input_ids"]
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return chat_ids(tok, messages)


def chat_ids(tok, messages: list[dict]) -> list[int]:
    """The prompt ids of a conversation, ready for the assistant's next turn."""
    if not tok.chat_template:
        raise LmsmithError("this model's tokenizer has no chat template", "drop --chat for plain completion")
    return safe_chat_ids(tok, messages, add_generation_prompt=True)


def generate_text(ref: str, prompt: str, *, chat: bool = False, system: str | None = None, max_tokens: int = 256,
                  temperature: float = 0.0, seed: int | None = None, dtype: str = "auto",
                  on_text: Callable[[str], None] | None = None, top_p: float = 1.0, top_k: int = 0,
                  stop: list[str] | None = None, json_schema: dict | None = None,
                  tensor_parallel_size: int = 1) -> str:
    """Generate a completion with the engine; `on_text` receives decoded text pieces as tokens arrive."""
    from lmsmith.serve.engine import Engine
    from lmsmith.serve.sampling_params import SamplingParams

    if max_tokens < 1:
        raise LmsmithError(f"--max-tokens must be at least 1, got {max_tokens}")
    if temperature < 0:
        raise LmsmithError(f"--temperature must be >= 0, got {temperature}")
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed, top_p=top_p, top_k=top_k,
                            stop=stop or [], json_schema=json_schema).validate()
    engine = Engine(ref, dtype=dtype, max_num_seqs=1, tensor_parallel_size=tensor_parallel_size)
    try:
        ids = build_prompt(engine.tokenizer, prompt, chat, system)
        engine.add_request("generate", ids, params)
        pieces: list[str] = []
        while engine.has_unfinished():
            for out in engine.step():
                if out.text_delta:
                    pieces.append(out.text_delta)
                    if on_text:
                        on_text(out.text_delta)
    finally:
        engine.close()
    return "".join(pieces)


def stream_to_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
