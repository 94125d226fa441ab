"""Preference pairs in TRL's dataset formats -> token ids with response-only labels.

Accepted records (one JSON object per line), exactly as TRL defines them:

- standard:            {"prompt": "...", "chosen": "...", "rejected": "..."}
- conversational:      {"prompt": [messages], "chosen": [assistant turn(s)], "rejected": [assistant turn(s)]}
- implicit prompt:     {"chosen": [full conversation], "rejected": [full conversation]} (standard strings too)

The chat template is applied as for SFT (`lmsmith.data.chat.render_chat`): a string prompt becomes one user
turn and a string answer one assistant turn. A tokenizer without a chat template (a base model) gets plain
concatenation prompt + answer + EOS, as TRL does. Loss (labels) covers only the answer, never the prompt,
even when the prompt holds earlier assistant turns. A bad record is named by file:line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmsmith.data.chat import IGNORE_INDEX, ChatExample, iter_jsonl, render_chat, validate_messages
from lmsmith.errors import LmsmithError

FORMAT_HINT = ('use TRL\'s preference format: {"prompt": ..., "chosen": ..., "rejected": ...} (strings or message '
               'lists) or {"chosen": [messages], "rejected": [messages]} with an implicit prompt')


@dataclass
class Pair:
    """One preference record, normalized: the prompt and both answers as message lists (or plain text)."""

    prompt: list[dict[str, Any]] | str
    chosen: list[dict[str, Any]] | str
    rejected: list[dict[str, Any]] | str
    where: str
    record: dict[str, Any]

    @property
    def conversational(self) -> bool:
        return not isinstance(self.prompt, str)


@dataclass
class PairExample:
    chosen: ChatExample
    rejected: ChatExample
    ref: tuple[float, float] | None = None  # reference log-probs (chosen, rejected), filled once before training

    def __len__(self) -> int:
        return max(len(self.chosen), len(self.rejected))


def _as_messages(value: Any, role: str) -> list[dict[str, Any]]:
    return [{"role": role, "content": value}] if isinstance(value, str) else value


def _common_prefix(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def parse_pair(obj: Any, where: str) -> Pair:
    """Normalize one record of any of TRL's three preference formats; raise naming `where` on anything else."""
    if not isinstance(obj, dict) or "chosen" not in obj or "rejected" not in obj:
        raise LmsmithError(f"{where}: a preference record needs 'chosen' and 'rejected'", FORMAT_HINT)
    chosen, rejected, prompt = obj["chosen"], obj["rejected"], obj.get("prompt")
    kinds = {type(x) for x in (chosen, rejected)}
    if kinds - {str, list}:
        raise LmsmithError(f"{where}: 'chosen' and 'rejected' must be strings or lists of messages", FORMAT_HINT)
    if len(kinds) > 1:
        raise LmsmithError(f"{where}: 'chosen' and 'rejected' must have the same form (both strings or both "
                           "message lists)", FORMAT_HINT)
    if prompt is None:  # implicit prompt: the shared beginning of both conversations
        if isinstance(chosen, str):
            n = 0
            while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
                n += 1
            prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
        else:
            for name, conv in (("chosen", chosen), ("rejected", rejected)):
                validate_messages(conv, None, f"{where} ({name})")
            n = _common_prefix(chosen, rejected)
            prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
            if not prompt:
                raise LmsmithError(f"{where}: 'chosen' and 'rejected' share no prompt turns",
                                   "add a 'prompt' field, or start both conversations with the same user turn")
    if not isinstance(prompt, (str, list)):
        raise LmsmithError(f"{where}: 'prompt' must be a string or a list of messages", FORMAT_HINT)
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value):
            raise LmsmithError(f"{where}: the {name} answer is empty", "both answers need text after the prompt")
    if chosen == rejected:
        raise LmsmithError(f"{where}: 'chosen' and 'rejected' are identical", "a pair must differ to teach anything")
    if isinstance(prompt, list) or isinstance(chosen, list):  # conversational (a string side becomes one turn)
        p = _as_messages(prompt, "user") if prompt else []
        c, r = _as_messages(chosen, "assistant"), _as_messages(rejected, "assistant")
        for name, turns in (("chosen", c), ("rejected", r)):
            if any(not isinstance(m, dict) or m.get("role") != "assistant" for m in turns):
                raise LmsmithError(f"{where}: every '{name}' turn after the prompt must be an assistant message",
                                   FORMAT_HINT)
            validate_messages(p + turns, obj.get("tools"), where)
        return Pair(p, c, r, where, obj)
    return Pair(prompt, chosen, rejected, where, obj)


def read_pairs(path: str | Path, skip_bad_lines: bool = False) -> tuple[list[Pair], int]:
    """All pairs of a JSONL file (bad JSON or a bad record: an error naming file:line, or skipped and counted)."""
    path = Path(path)
    if not path.is_file():
        raise LmsmithError(f"preference data file not found: {path}")
    pairs: list[Pair] = []
    stats: dict[str, int] = {}
    for n, obj in iter_jsonl(path, skip_bad_lines, stats):
        try:
            pairs.append(parse_pair(obj, f"{path}:{n}"))
        except LmsmithError:
            if not skip_bad_lines:
                raise
            stats["bad_lines"] += 1
    if not pairs:
        raise LmsmithError(f"{path} contains no preference pairs", FORMAT_HINT)
    return pairs, stats.get("bad_lines", 0)


def prompt_messages(prompt: list[dict[str, Any]] | str) -> list[dict[str, Any]]:
    return _as_messages(prompt, "user")


def render_answer(tokenizer: Any, prompt: list[dict[str, Any]] | str, answer: list[dict[str, Any]] | str,
                  where: str = "", tools: Any = None) -> ChatExample:
    """Tokens of prompt + answer with labels on the answer only (chat template when the tokenizer has one)."""
    if not getattr(tokenizer, "chat_template", None):
        if not isinstance(prompt, str) or not isinstance(answer, str):
            raise LmsmithError(f"{where}: conversational pairs need a tokenizer with a chat template",
                               "use an instruct model, or plain-string prompt/chosen/rejected")
        p = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
        a = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
        if tokenizer.eos_token_id is not None:
            a.append(tokenizer.eos_token_id)
        return ChatExample(p + a, [IGNORE_INDEX] * len(p) + a)
    msgs = prompt_messages(prompt) + _as_messages(answer, "assistant")
    ex = render_chat(tokenizer, msgs, tools, where)
    # mask every token of the prompt (its own assistant turns included): only the answer is scored
    kw = {"tools": tools} if tools else {}
    head = tokenizer.apply_chat_template(prompt_messages(prompt), add_generation_prompt=True, tokenize=False, **kw)
    head_ids = list(tokenizer(head, add_special_tokens=False)["input_ids"])
    cut = len(head_ids) if ex.input_ids[:len(head_ids)] == head_ids else _first_label(ex)
    labels = [IGNORE_INDEX] * min(cut, len(ex)) + ex.labels[cut:]
    return ChatExample(ex.input_ids, labels)


def _first_label(ex: ChatExample) -> int:
    """Fallback when the template's prompt rendering is not a token prefix: start at the last assistant span."""
    last = len(ex.labels)
    i = last - 1
    while i >= 0 and ex.labels[i] == IGNORE_INDEX:
        i -= 1
    while i >= 0 and ex.labels[i] != IGNORE_INDEX:
        i -= 1
    return i + 1


def render_pair(tokenizer: Any, pair: Pair, max_length: int | None = None,
                policy: str = "truncate") -> PairExample | None:
    """Both answers rendered; too long: cut at `max_length` (None if nothing of an answer is left) or dropped."""
    tools = pair.record.get("tools")
    c = render_answer(tokenizer, pair.prompt, pair.chosen, pair.where, tools)
    r = render_answer(tokenizer, pair.prompt, pair.rejected, pair.where, tools)
    if max_length is not None and max(len(c), len(r)) > max_length:
        if policy == "drop":
            return None
        c = ChatExample(c.input_ids[:max_length], c.labels[:max_length])
        r = ChatExample(r.input_ids[:max_length], r.labels[:max_length])
        if not c.n_target or not r.n_target:
            return None
    if not c.n_target or not r.n_target:
        raise LmsmithError(f"{pair.where}: an answer renders to no tokens", "check the chat template and the answers")
    return PairExample(c, r)


@dataclass
class PromptRow:
    """A prompt for sampling or RL: its messages (or text) and every other column of the record (for verifiers)."""

    prompt: list[dict[str, Any]] | str
    columns: dict[str, Any]
    where: str


def read_prompts(path: str | Path, skip_bad_lines: bool = False) -> list[PromptRow]:
    """`{"prompt": "..." | [messages], ...}` or `{"messages": [...]}` per line; other fields are kept."""
    path = Path(path)
    if not path.is_file():
        raise LmsmithError(f"prompt file not found: {path}")
    rows: list[PromptRow] = []
    stats: dict[str, int] = {}
    for n, obj in iter_jsonl(path, skip_bad_lines, stats):
        where = f"{path}:{n}"
        prompt = obj.get("prompt", obj.get("messages")) if isinstance(obj, dict) else None
        ok = (isinstance(prompt, str) and prompt.strip()) or (isinstance(prompt, list) and prompt)
        if ok and isinstance(prompt, list):
            try:
                validate_messages(prompt + [{"role": "assistant", "content": "x"}], obj.get("tools"), where)
            except LmsmithError:
                ok = False
                if not skip_bad_lines:
                    raise
        if not ok:
            if skip_bad_lines:
                stats["bad_lines"] += 1
                continue
            raise LmsmithError(f"{where}: a prompt record needs a non-empty 'prompt' (text or messages)",
                               '{"prompt": "What is 2+2?", "answer": "4"} per line; extra fields go to the reward')
        cols = {k: v for k, v in obj.items() if k not in ("prompt", "messages")}
        rows.append(PromptRow(prompt, cols, where))
    if not rows:
        raise LmsmithError(f"{path} contains no prompts")
    return rows


def prompt_ids(tokenizer: Any, prompt: list[dict[str, Any]] | str, tools: Any = None) -> list[int]:
    """Token ids the model continues from: the chat template with the generation prompt, or the raw text."""
    if getattr(tokenizer, "chat_template", None):
        kw = {"tools": tools} if tools else {}
        out = tokenizer.apply_chat_template(prompt_messages(prompt), add_generation_prompt=True, tokenize=True,
                                            return_dict=True, **kw)
        return list(out["input_ids"])
    if not isinstance(prompt, str):
        raise LmsmithError("message prompts need a tokenizer with a chat template", "use plain-text prompts")
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
