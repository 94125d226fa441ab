"""Chat data for supervised fine-tuning: OpenAI-style `messages` -> token ids + assistant-only labels.

Public API (used by training, serving and data tools):

- `check_chat_template(tokenizer)`: raise if the tokenizer has no chat template.
- `validate_messages(messages, tools=None, where="")`: structural checks (roles, contents, tool calls,
  at least one assistant turn) with a one-line `LmsmithError` naming `where` (e.g. `file.jsonl:12`).
- `render_chat(tokenizer, messages, tools=None, where="") -> ChatExample`: renders with the model's own
  chat template and returns `input_ids` and `labels` where every non-assistant token is `IGNORE_INDEX`.
  Assistant tokens include the turn's end-of-turn token (so the model learns to stop).
- `read_chat_jsonl(path, skip_bad_lines=False) -> ChatFile`: parse a JSONL file of `{"messages": [...],
  "tools": [...]?}` records, reporting `file:line` for bad lines (or counting them when skipping).
- `fit_length(example, max_length, policy)`: truncate or drop examples longer than the context.

How the mask is found: the template is rendered for each prefix of the conversation; the text an
assistant turn adds (between "prompt with generation prompt" and "prompt + this turn") is its span.
Characters map to tokens via the fast tokenizer's offsets, so this works for any template whose
rendering of a prefix is a prefix of the full rendering (ChatML, Llama 3, Mistral, Gemma, ...).
"""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from lmsmith.errors import LmsmithError

# The ChatML-with-tools template (Qwen2.5 style) our tokenizers get (`lmsmith tokenizer train`, lmsmith.tiny):
# the system turn lists tools; calls are JSON inside <tool_call> tags.
CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}"
    "You may call these tools. Reply with <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call>.\n<tools>\n"
    "{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools><|im_end|>\n"
    "{% elif messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% if not tools %}<|im_start|>system\n{{ message['content'] }}<|im_end|>\n{% endif %}"
    "{% elif message['role'] == 'tool' %}<|im_start|>tool\n<tool_response>{{ message['content'] }}</tool_response><|im_end|>\n"
    "{% elif message['role'] == 'assistant' %}<|im_start|>assistant\n{% if message['content'] %}{{ message['content'] }}{% endif %}"
    "{% if message.get('tool_calls') %}{% for call in message['tool_calls'] %}{% set fn = call['function'] if call.get('function') else call %}"
    "<tool_call>{\"name\": \"{{ fn['name'] }}\", \"arguments\": "
    "{{ fn['arguments'] if fn['arguments'] is string else fn['arguments'] | tojson }}}</tool_call>"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% else %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant", "tool")


@dataclass
class ChatExample:
    """One rendered conversation. `labels[i] == IGNORE_INDEX` where no loss is taken."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_target(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


@dataclass
class ChatFile:
    """Records read from a chat JSONL file, with the line each came from."""

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    bad_lines: int = 0


def check_chat_template(tokenizer: Any, ref: str = "the model") -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise LmsmithError(f"the tokenizer of {ref} has no chat template, so chat data cannot be rendered",
                           "use an instruct/chat model, or give a tokenizer with a chat template (--tokenizer)")


def validate_messages(messages: Any, tools: Any = None, where: str = "") -> None:
    """Reject conversations that cannot train anything or that the template cannot render."""
    at = f"{where}: " if where else ""
    if not isinstance(messages, list) or not messages:
        raise LmsmithError(f"{at}'messages' must be a non-empty list of {{role, content}} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise LmsmithError(f"{at}message {i} has no 'role'")
        role = m["role"]
        if role not in ROLES:
            raise LmsmithError(f"{at}message {i} has role '{role}' that chat templates cannot render",
                               f"use one of: {', '.join(ROLES)}")
        content = m.get("content")
        calls = m.get("tool_calls")
        if content is not None and not isinstance(content, str):
            raise LmsmithError(f"{at}message {i} ({role}) has non-text content", "content must be a string")
        if calls is not None:
            if role != "assistant":
                raise LmsmithError(f"{at}message {i}: only assistant messages may have 'tool_calls'")
            if not isinstance(calls, list) or not calls:
                raise LmsmithError(f"{at}message {i}: 'tool_calls' must be a non-empty list")
            for c in calls:
                fn = c.get("function", c) if isinstance(c, dict) else None
                if not isinstance(fn, dict) or "name" not in fn:
                    raise LmsmithError(f"{at}message {i}: each tool call needs a function 'name' and 'arguments'")
        if not content and not calls:
            raise LmsmithError(f"{at}message {i} ({role}) is empty")
    if not any(m["role"] == "assistant" for m in messages):
        raise LmsmithError(f"{at}conversation has no assistant turn, so there is nothing to learn",
                           "add an assistant message or drop the example")
    if tools is not None and not isinstance(tools, list):
        raise LmsmithError(f"{at}'tools' must be a list of function definitions")


def _normalize(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Templates disagree on tool-call arguments (dict vs JSON string); most expect a dict."""
    out = []
    for m in messages:
        m = dict(m)
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                fn = dict(c.get("function", c))
                if isinstance(fn.get("arguments"), str):
                    try:
                        fn["arguments"] = json.loads(fn["arguments"])
                    except json.JSONDecodeError:
                        pass
                fn.setdefault("arguments", {})
                calls.append({"type": "function", "function": fn, **({"id": c["id"]} if "id" in c else {})})
            m["tool_calls"] = calls
            m.setdefault("content", "")
        out.append(m)
    return out


def _render(tokenizer: Any, messages: list[dict[str, Any]], tools: Any, gen_prompt: bool, where: str) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=gen_prompt)
    except Exception as e:  # jinja raise_exception(), undefined fields, ...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        roles = "/".join(m["role"] for m in messages)
        raise LmsmithError(f"{where + ': ' if where else ''}the chat template cannot render this conversation "
                           f"({roles}): {msg}", "check the roles and their order for this model") from None


def assistant_spans(tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None,
                    where: str = "") -> tuple[str, list[tuple[int, int]]]:
    """The full rendered text and the character spans the assistant turns occupy in it."""
    full = _render(tokenizer, messages, tools, False, where)
    spans: list[tuple[int, int]] = []
    prev = ""
    for i, m in enumerate(messages):
        upto = _render(tokenizer, messages[: i + 1], tools, False, where)
        if upto == prev:
            raise LmsmithError(f"{where + ': ' if where else ''}the chat template drops message {i} "
                               f"(role '{m['role']}'): it cannot render this role here",
                               "merge it into a neighbouring message or use a model whose template supports it")
        if m["role"] == "assistant":
            prompt = _render(tokenizer, messages[:i], tools, True, where) if i else ""
            if not (full.startswith(upto) and upto.startswith(prompt)):
                raise LmsmithError(f"{where + ': ' if where else ''}the chat template is not incremental "
                                   "(a rendered prefix is not a prefix of the whole conversation), so the "
                                   "assistant tokens cannot be located", "use a template without history rewriting")
            spans.append((len(prompt), len(upto)))
        prev = upto
    return full, spans


def render_chat(tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None, where: str = "") -> ChatExample:
    """Tokenize one conversation with the model's template; loss only on assistant tokens."""
    check_chat_template(tokenizer)
    validate_messages(messages, tools, where)
    messages = _normalize(messages)
    text, spans = assistant_spans(tokenizer, messages, tools, where)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    labels = [IGNORE_INDEX] * len(ids)
    for t, (a, b) in enumerate(enc["offset_mapping"]):
        if b <= a:
            continue
        for s, e in spans:
            if a >= s and b <= e:
                labels[t] = ids[t]
                break
    return ChatExample(ids, labels)


def fit_length(example: ChatExample, max_length: int, policy: str = "truncate") -> ChatExample | None:
    """Return the example cut to `max_length` ('truncate') or None ('drop', or nothing left to learn)."""
    if len(example) <= max_length:
        return example
    if policy == "drop":
        return None
    cut = ChatExample(example.input_ids[:max_length], example.labels[:max_length])
    return cut if cut.n_target else None


def open_text(path: Path) -> io.TextIOBase:
    """Open a text file, transparently decompressing .gz and .zst."""
    name = path.name
    if name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise LmsmithError(f"{path} is zstd-compressed but the 'zstandard' package is not installed",
                               "pip install zstandard") from None
        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")), encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_jsonl(path: Path, skip_bad_lines: bool = False, stats: dict | None = None) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object); a bad line is an error naming file:line unless skipped."""
    stats = stats if stats is not None else {}
    stats.setdefault("bad_lines", 0)
    try:
        with open_text(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    if not skip_bad_lines:
                        raise LmsmithError(f"{path}:{n}: not valid JSON ({e.msg})",
                                           "fix the line or pass --skip-bad-lines to skip and count such lines") from None
                    stats["bad_lines"] += 1
    except UnicodeDecodeError:
        raise LmsmithError(f"{path} is not UTF-8 text") from None
    except (OSError, EOFError) as e:
        raise LmsmithError(f"cannot read {path}: {e}") from None


def read_chat_jsonl(path: str | Path, skip_bad_lines: bool = False) -> ChatFile:
    """Read `{"messages": [...], "tools"?: [...]}` records; bad JSON is reported as file:line."""
    path = Path(path)
    if not path.is_file():
        raise LmsmithError(f"chat data file not found: {path}")
    cf = ChatFile(path)
    stats: dict = {}
    for n, obj in iter_jsonl(path, skip_bad_lines, stats):
        if not isinstance(obj, dict) or "messages" not in obj:
            if skip_bad_lines:
                stats["bad_lines"] += 1
                continue
            raise LmsmithError(f"{path}:{n}: record has no 'messages' field",
                               "chat data is JSONL with {\"messages\": [{\"role\": ..., \"content\": ...}]} per line")
        cf.records.append(obj)
        cf.lines.append(n)
    cf.bad_lines = stats["bad_lines"]
    if not cf.records:
        raise LmsmithError(f"{path} contains no chat examples")
    return cf


def render_file(tokenizer: Any, cf: ChatFile, max_length: int | None = None,
                policy: str = "truncate") -> tuple[list[ChatExample], dict[str, int]]:
    """Render every record of a chat file (validating all before returning). Counts what was cut."""
    examples: list[ChatExample] = []
    counts = {"examples": 0, "truncated": 0, "dropped": 0, "bad_lines": cf.bad_lines}
    for rec, n in zip(cf.records, cf.lines):
        ex = render_chat(tokenizer, rec["messages"], rec.get("tools"), where=f"{cf.path}:{n}")
        if max_length is not None and len(ex) > max_length:
            fitted = fit_length(ex, max_length, policy)
            counts["truncated" if fitted is not None else "dropped"] += 1
            if fitted is None:
                continue
            ex = fitted
        examples.append(ex)
    counts["examples"] = len(examples)
    return examples, counts
