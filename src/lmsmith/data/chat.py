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
- `render_template(tokenizer, messages, ...) -> Rendered` and `encode_rendered(tokenizer, rendered)`: the one
  place every chat prompt is tokenized (SFT, server, `generate --chat`, `LLM.chat`): only the control tokens
  the template wrote become special tokens; control-token spellings inside message content, tool calls,
  tool results or tool schemas stay plain text. `chat_ids(...)` = both in one call; `encode_plain(tok, text)`
  tokenizes user text (completion prompts) with special-token parsing off.
- `fit_length(example, max_length, policy)`: truncate or drop examples longer than the context.

How the mask is found: the template is rendered for each prefix of the conversation; the text an
assistant turn adds (between "prompt with generation prompt" and "prompt + this turn") is its span.
Characters map to tokens via the fast tokenizer's offsets, so this works for any template whose
rendering of a prefix is a prefix of the full rendering (ChatML, Llama 3, Mistral, Gemma, ...).
"""

from __future__ import annotations

import bisect
import gzip
import io
import json
import re
import secrets
import weakref
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


def _render(tokenizer: Any, messages: list[dict[str, Any]], tools: Any, gen_prompt: bool, where: str,
            protected: bool = False) -> Any:
    try:
        if protected:
            return render_template(tokenizer, messages, tools, gen_prompt)
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=gen_prompt)
    except Exception as e:  # jinja raise_exception(), undefined fields, ...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        roles = "/".join(m["role"] for m in messages)
        raise LmsmithError(f"{where + ': ' if where else ''}the chat template cannot render this conversation "
                           f"({roles}): {msg}", "check the roles and their order for this model") from None


def assistant_spans(tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None,
                    where: str = "") -> tuple[Rendered, list[tuple[int, int]]]:
    """The full rendering (with its control tokens) and the character spans the assistant turns occupy."""
    rendered = _render(tokenizer, messages, tools, False, where, protected=True)
    full = rendered.text
    # Prefix renderings must be measured on the same text: the template's own when the protected
    # rendering reproduced it exactly (the usual case), else protected renderings of each prefix.
    protected = not rendered.exact

    def render(msgs: list[dict[str, Any]], gen: bool) -> str:
        r = _render(tokenizer, msgs, tools, gen, where, protected)
        return r.text if protected else r

    spans: list[tuple[int, int]] = []
    prev = ""
    for i, m in enumerate(messages):
        upto = render(messages[: i + 1], False)
        if upto == prev:
            raise LmsmithError(f"{where + ': ' if where else ''}the chat template drops message {i} "
                               f"(role '{m['role']}'): it cannot render this role here",
                               "merge it into a neighbouring message or use a model whose template supports it")
        if m["role"] == "assistant":
            prompt = render(messages[:i], True) if i else ""
            if not (full.startswith(upto) and upto.startswith(prompt)):
                raise LmsmithError(f"{where + ': ' if where else ''}the chat template is not incremental "
                                   "(a rendered prefix is not a prefix of the whole conversation), so the "
                                   "assistant tokens cannot be located", "use a template without history rewriting")
            spans.append((len(prompt), len(upto)))
        prev = upto
    return rendered, spans


def render_chat(tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None, where: str = "") -> ChatExample:
    """Tokenize one conversation with the model's template; loss only on assistant tokens."""
    check_chat_template(tokenizer)
    validate_messages(messages, tools, where)
    messages = _normalize(messages)
    rendered, spans = assistant_spans(tokenizer, messages, tools, where)
    ids, offsets = encode_rendered(tokenizer, rendered)
    labels = [IGNORE_INDEX] * len(ids)
    for t, (a, b) in enumerate(offsets):
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


# ----------------------------------------------------------------------------------- control tokens
# A chat template writes control tokens (<|im_start|>, <|eot_id|>, <start_of_turn>, ...) around message
# content. Tokenizing the rendered text in one go would also turn control-token spellings *inside* the
# content into control tokens, so a user could forge a system turn. Here every untrusted string that
# spells (part of) a special token is replaced by an opaque random marker and the template is rendered
# again: the special tokens of that rendering are the template's own. The real text is then tokenized so
# that only those spans become special tokens; everything else (content, tool arguments and results,
# tool schemas, names) is plain text. A conversation without such spellings is rendered and tokenized
# exactly as `apply_chat_template` always did (nothing is replaced, the template sees the real strings).

_PLAIN_TOKENIZERS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_SPELLINGS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


@dataclass
class Rendered:
    """Text a chat template wrote, and the character spans of the control tokens the template (not the
    content) put there; `controls=None`: no untrusted text spells a special token, so every special token
    in `text` is a control token. `exact`: the text equals the template's own rendering."""

    text: str
    controls: list[tuple[int, int]] | None = None
    exact: bool = True

    def append_control(self, tokenizer: Any, text: str) -> None:
        """Append text the caller writes itself (a generation prefix): its special tokens count as control."""
        if self.controls is not None:
            base = len(self.text)
            self.controls += [(a + base, b + base) for a, b in _special_spans(tokenizer, text)]
        self.text += text


def special_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokenizer's special tokens (those `split_special_tokens` keeps as plain text)."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for i, t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(t, "special", False):
            ids.add(int(i))
    return ids


def _special_spans(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    sp = special_ids(tokenizer)
    return [(a, b) for t, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]) if t in sp and b > a]


def _spellings(tokenizer: Any) -> tuple[Any, set[str], set[str], int]:
    """(regex of every special token, their proper prefixes, their proper suffixes, longest length)."""
    try:
        cached = _SPELLINGS.get(tokenizer)
    except TypeError:
        cached = None
    if cached is not None:
        return cached
    words = {str(t) for t in (getattr(tokenizer, "all_special_tokens", None) or []) if str(t)}
    for t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(t, "special", False) and getattr(t, "content", ""):
            words.add(t.content)
    ordered = sorted(words, key=len, reverse=True)
    regex = re.compile("|".join(map(re.escape, ordered))) if ordered else None
    prefixes = {w[:k] for w in words for k in range(1, len(w))}
    suffixes = {w[k:] for w in words for k in range(1, len(w))}
    out = (regex, prefixes, suffixes, max(map(len, words), default=0))
    try:
        _SPELLINGS[tokenizer] = out
    except TypeError:
        pass
    return out


def spells_special(tokenizer: Any, s: str) -> bool:
    """Whether `s` contains a special token's spelling, or could complete one with the text around it
    (it starts with the tail of one or ends with the head of one)."""
    regex, prefixes, suffixes, longest = _spellings(tokenizer)
    if regex is None or not s:
        return False
    if regex.search(s):
        return True
    return any(s[-k:] in prefixes or s[:k] in suffixes for k in range(1, min(longest, len(s) + 1)))


def _plain_backend(tokenizer: Any) -> Any:
    """A private copy of the fast tokenizer that never parses special tokens (thread-safe: no shared flag)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    try:
        plain = _PLAIN_TOKENIZERS.get(tokenizer)
    except TypeError:
        plain = None
    if plain is None:
        from tokenizers import Tokenizer

        plain = Tokenizer.from_str(backend.to_str())
        plain.encode_special_tokens = True
        plain.no_truncation()
        plain.no_padding()
        try:
            _PLAIN_TOKENIZERS[tokenizer] = plain
        except TypeError:
            pass
    return plain


def _encode_plain_piece(tokenizer: Any, text: str, add_special_tokens: bool = False) -> tuple[list[int], list[tuple[int, int]]]:
    plain = _plain_backend(tokenizer)
    if plain is not None:
        enc = plain.encode(text, add_special_tokens=add_special_tokens)
        return list(enc.ids), [tuple(o) for o in enc.offsets]
    ids = tokenizer.encode(text, add_special_tokens=add_special_tokens, split_special_tokens=True)
    return list(ids), [(0, 0)] * len(ids)


def encode_plain(tokenizer: Any, text: str, add_special_tokens: bool = True) -> list[int]:
    """Tokenize user text with special-token parsing off (BOS/EOS the tokenizer adds itself still come).

    Text without control-token spellings gives exactly `tokenizer(text)["input_ids"]`."""
    if not spells_special(tokenizer, text):
        return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
    return _encode_plain_piece(tokenizer, text, add_special_tokens)[0]


class _Protector:
    """Swaps each untrusted string that spells (part of) a special token for a marker the template cannot
    mistake for anything else. Strings without such spellings are left alone."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.nonce = secrets.token_hex(6).upper()
        self.values: list[str] = []
        self.pattern = re.compile(f"LMSMITHQ{self.nonce}N([0-9]+)E")

    def mark(self, s: Any) -> Any:
        if not isinstance(s, str) or not spells_special(self.tokenizer, s):
            return s
        self.values.append(s)
        return f"LMSMITHQ{self.nonce}N{len(self.values) - 1}E"

    def deep(self, x: Any) -> Any:
        if isinstance(x, str):
            return self.mark(x)
        if isinstance(x, dict):
            return {self.mark(k): self.deep(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [self.deep(v) for v in x]
        return x


def _json_inner(s: str, ascii_only: bool) -> str:
    return json.dumps(s, ensure_ascii=ascii_only)[1:-1]


def _match_contents(plain: str, templ: list[str], values: list[str], budget: int = 20000) -> list[str] | None:
    """The form each content took in the template's own rendering (as is, trimmed, JSON-escaped), found by
    a small backtracking search so that template pieces and contents reproduce `plain` exactly."""
    if not plain.startswith(templ[0]):
        return None
    cands = [list(dict.fromkeys((v, v.strip(), v.lstrip(), v.rstrip(), _json_inner(v, False), _json_inner(v, True))))
             for v in values]
    chosen: list[str] = []
    stack = [(0, len(templ[0]), 0)]  # (content index, cursor, candidate index)
    while stack:
        budget -= 1
        if budget < 0:
            return None
        i, cur, c = stack.pop()
        del chosen[i:]
        if i == len(values):
            if cur == len(plain):
                return chosen
            continue
        if c + 1 < len(cands[i]):
            stack.append((i, cur, c + 1))
        cand, nxt = cands[i][c], templ[i + 1]
        if plain.startswith(cand, cur) and plain.startswith(nxt, cur + len(cand)):
            chosen.append(cand)
            stack.append((i + 1, cur + len(cand) + len(nxt), 0))
    return None


def render_template(tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None,
                    add_generation_prompt: bool = False, **kwargs: Any) -> Rendered:
    """Render with the model's chat template, remembering which special tokens the template wrote.

    Errors of the template itself (jinja exceptions) propagate, as from `apply_chat_template`."""
    plain_text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                               add_generation_prompt=add_generation_prompt, **kwargs)
    prot = _Protector(tokenizer)
    marked_messages, marked_tools = prot.deep(messages), prot.deep(tools) if tools else tools
    if not prot.values:  # nothing untrusted spells a special token: the template's text is all there is
        return Rendered(plain_text)
    try:
        marked = tokenizer.apply_chat_template(marked_messages, tools=marked_tools, tokenize=False,
                                               add_generation_prompt=add_generation_prompt, **kwargs)
    except Exception:  # the template inspects the content itself
        raise _unsafe(prot.values) from None
    pieces = prot.pattern.split(marked)  # [template, idx, template, idx, ..., template]
    templ, idxs = pieces[0::2], [int(i) for i in pieces[1::2]]
    # Rebuild the real text piece by piece. The template may have trimmed or JSON-escaped a content:
    # choose the form that reproduces its own rendering (then the text is exactly what it always was).
    chosen = _match_contents(plain_text, templ, [prot.values[k] for k in idxs]) or [prot.values[k] for k in idxs]
    out: list[str] = [templ[0]]
    for c, nxt in zip(chosen, templ[1:]):
        out += [c, nxt]
    text = "".join(out)
    if ("LMSMITHQ" + prot.nonce) in text:  # the template cut a marker apart
        raise _unsafe(prot.values)
    # Control spans: the special tokens inside the template's own pieces, moved to their place in `text`.
    marks = list(prot.pattern.finditer(marked))
    r_starts = [0] + [m.end() for m in marks]
    r_ends = [m.start() for m in marks] + [len(marked)]
    t_starts = [0]
    for i in range(1, len(templ)):
        t_starts.append(t_starts[-1] + len(out[2 * i - 2]) + len(out[2 * i - 1]))
    controls = []
    for a, b in _special_spans(tokenizer, marked):
        i = bisect.bisect_right(r_starts, a) - 1
        if b <= r_ends[i]:  # inside one template piece (never across a marker)
            controls.append((a - r_starts[i] + t_starts[i], b - r_starts[i] + t_starts[i]))
    return Rendered(text, controls, text == plain_text)


def _unsafe(spellings: list[str]) -> LmsmithError:
    """The template inspects or cuts the untrusted strings themselves, so where they end up cannot be told
    apart from its own text: refuse rather than guess (a guess could hand a forged turn to the model)."""
    shown = ", ".join(sorted({m.group(0) for v in spellings for m in [_first_spelling(v)] if m})[:3])
    return LmsmithError(f"this chat template cannot keep control-token spellings ({shown or 'partial ones'}) in "
                        "the messages as plain text", "remove them from the messages")


def _first_spelling(v: str) -> Any:
    return None if not v else re.search(r"<[^<>\s]{1,40}>|\[[A-Z_]{2,40}\]", v)


def encode_rendered(tokenizer: Any, rendered: Rendered) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets of a rendering: special tokens only at its control spans."""
    text = rendered.text
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    if rendered.controls is None:
        return ids, offsets
    sp = special_ids(tokenizer)
    found = [(a, b) for t, (a, b) in zip(ids, offsets) if t in sp and b > a]
    if found == sorted(rendered.controls):
        return ids, offsets  # nothing forged: the tokenizer's own result, unchanged
    out_ids: list[int] = []
    out_off: list[tuple[int, int]] = []
    pos = 0
    for a, b in sorted(rendered.controls) + [(len(text), len(text))]:
        if a > pos:
            pid, poff = _encode_plain_piece(tokenizer, text[pos:a])
            out_ids += pid
            out_off += [(x + pos, y + pos) for x, y in poff]
        if b > a:
            out_ids += list(tokenizer(text[a:b], add_special_tokens=False)["input_ids"])
            out_off.append((a, b))
        pos = max(pos, b)
    return out_ids, out_off


def chat_ids(tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None,
             add_generation_prompt: bool = True, **kwargs: Any) -> list[int]:
    """Prompt ids for a conversation with control tokens from the template only (the safe
    `apply_chat_template(..., tokenize=True)`)."""
    return encode_rendered(tokenizer, render_template(tokenizer, messages, tools, add_generation_prompt, **kwargs))[0]
