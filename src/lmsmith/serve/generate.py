"""Single-prompt generation for the CLI. Uses transformers' `generate` until the engine replaces it."""

from __future__ import annotations

import sys
from typing import Callable

import torch

from lmsmith.errors import LmsmithError
from lmsmith.models import default_device, load_model, load_tokenizer


def build_prompt(tok, prompt: str, chat: bool, system: str | None) -> list[int]:
    if not chat:
        if system:
            raise LmsmithError("--system needs --chat", "add --chat, or put the instruction into --prompt")
        return tok(prompt)["input_ids"]
    if not tok.chat_template:
        raise LmsmithError("this model's tokenizer has no chat template", "drop --chat for plain completion")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(ids["input_ids"])


def generate_text(ref: str, prompt: str, *, chat: bool = False, system: str | None = None, max_tokens: int = 256,
                  temperature: float = 0.0, seed: int | None = None, dtype: str = "auto",
                  on_text: Callable[[str], None] | None = None) -> str:
    """Generate a completion; `on_text` receives decoded text pieces as tokens arrive."""
    from transformers import TextStreamer

    if max_tokens < 1:
        raise LmsmithError(f"--max-tokens must be at least 1, got {max_tokens}")
    if temperature < 0:
        raise LmsmithError(f"--temperature must be >= 0, got {temperature}")
    device = default_device()
    tok = load_tokenizer(ref)
    model = load_model(ref, dtype=dtype, device=device)
    ids = build_prompt(tok, prompt, chat, system)
    if seed is not None:
        torch.manual_seed(seed)
    pieces: list[str] = []

    class _Stream(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            pieces.append(text)
            if on_text:
                on_text(text)

    streamer = _Stream(tok, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(max_new_tokens=max_tokens, streamer=streamer, pad_token_id=tok.pad_token_id)
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    with torch.inference_mode():
        model.generate(torch.tensor([ids], device=device), attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device), **kwargs)
    return "".join(pieces)


def stream_to_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
