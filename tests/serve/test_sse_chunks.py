"""Streaming text chunks written by concatenation (handlers.TextChunks) are byte for byte what the pydantic models
write for the same chunk: every escape, every key, the finish reason, for completions and chat."""

from __future__ import annotations

import json

import pytest

from lmsmith.serve import protocol as P
from lmsmith.serve.handlers import TextChunks, sse

TEXTS = ["", " hello", 'a "quoted" \\ back\\slash / slash', "line\nbreak\ttab\r\b\f", "\x00\x01\x1f\x7f\x80\x9f",
         "Příliš žluťoučký kůň úpěl ďábelské ódy", "Zażółć gęślą jaźń", "čšž ČŠŽ", "🙂 emoji 𝔘", "\u2028\u2029\ufeff",
         "<|im_end|></s>", "日本語のテキスト"]
IDS = [("cmpl-abc123", "bench"), ('odd "id"', "models/smol \u2013 v2")]


@pytest.mark.parametrize("reason", [None, "stop", "length"])
@pytest.mark.parametrize("ident,model", IDS)
def test_completion_chunks_match_the_pydantic_model(ident, model, reason):
    fast = TextChunks("text_completion", ident, model, '"text":')
    for i, text in enumerate(TEXTS):
        want = sse(P.Completion(id=ident, model=model, created=fast.created,
                                choices=[P.CompletionChoice(index=i, text=text, finish_reason=reason)]))
        assert fast(i, text, reason) == want
        assert json.loads(want[len("data: "):])["choices"][0]["text"] == text


@pytest.mark.parametrize("reason", [None, "stop"])
@pytest.mark.parametrize("ident,model", IDS)
def test_chat_chunks_match_the_pydantic_model(ident, model, reason):
    fast = TextChunks("chat.completion.chunk", ident, model, '"delta":{"content":', "}")
    for i, text in enumerate(TEXTS):
        want = sse(P.ChatCompletionChunk(id=ident, model=model, created=fast.created, choices=[
            P.ChunkChoice(index=i, delta=P.Delta(content=text), finish_reason=reason)]))
        assert fast(i, text, reason) == want
