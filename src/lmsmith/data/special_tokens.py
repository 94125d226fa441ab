"""Check that a tokenizer's special tokens (EOS, BOS, PAD, chat headers, tool-call tags) exist and are
single tokens: a chat header that splits into 4 pieces trains fine and then never stops generating."""

from __future__ import annotations

from dataclasses import dataclass, field

CHATML = ("<|im_start|>", "<|im_end|>")
LLAMA3 = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
TOOL_TAGS = ("<tool_call>", "</tool_call>")


@dataclass
class TokenCheck:
    role: str
    token: str | None
    ids: list[int] = field(default_factory=list)
    ok: bool = False
    problem: str = ""


@dataclass
class SpecialTokenReport:
    checks: list[TokenCheck]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def problems(self) -> list[str]:
        return [f"{c.role} {c.token!r}: {c.problem}" for c in self.checks if not c.ok]

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checks": [c.__dict__ for c in self.checks]}


def _check(tok, role: str, token: str | None) -> TokenCheck:
    if not token:
        return TokenCheck(role, token, problem="not set")
    ids = tok.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        return TokenCheck(role, token, ids, problem=f"encodes to {len(ids)} tokens, expected 1")
    if tok.convert_ids_to_tokens(ids[0]) != token and tok.decode(ids) != token:
        return TokenCheck(role, token, ids, problem="round trip changes it")
    return TokenCheck(role, token, ids, ok=True)


def chat_header_tokens(tok) -> tuple[str, ...]:
    """The header tokens the tokenizer's chat template uses (ChatML or Llama 3 style), if any."""
    template = tok.chat_template if isinstance(getattr(tok, "chat_template", None), str) else ""
    for family in (CHATML, LLAMA3):
        if any(t in template for t in family):
            return tuple(t for t in family if t in template)
    return ()


def validate_special_tokens(tok, require_chat: bool = True, require_tools: bool = False,
                            extra: tuple[str, ...] = ()) -> SpecialTokenReport:
    """EOS must exist; chat header tokens used by the template (required when `require_chat`), tool
    tags when `require_tools`, and `extra` tokens must each be exactly one token."""
    checks = [_check(tok, "eos", tok.eos_token)]
    if tok.bos_token:
        checks.append(_check(tok, "bos", tok.bos_token))
    if tok.pad_token:
        checks.append(_check(tok, "pad", tok.pad_token))
    headers = chat_header_tokens(tok)
    if require_chat and not headers:
        checks.append(TokenCheck("chat_template", None, problem="no chat template with ChatML or Llama-3 headers"))
    checks += [_check(tok, "chat_header", t) for t in headers]
    if require_tools:
        checks += [_check(tok, "tool_tag", t) for t in TOOL_TAGS]
    checks += [_check(tok, "extra", t) for t in extra]
    return SpecialTokenReport(checks)
