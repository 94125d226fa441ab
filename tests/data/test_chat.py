"""Chat rendering: assistant-only labels (checked by decoding them) and clear validation errors."""

from __future__ import annotations

import pytest

from lmsmith.data.chat import IGNORE_INDEX, ChatExample, fit_length, read_chat_jsonl, render_chat, render_file
from lmsmith.errors import LmsmithError
from lmsmith.tiny import tiny_tokenizer

from .samples import chat, write_jsonl


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def learned_text(tok, ex: ChatExample) -> str:
    return tok.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab != IGNORE_INDEX])


def test_loss_covers_assistant_tokens_only(tok):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is Praha?"},
            {"role": "assistant", "content": "In Czechia."}, {"role": "user", "content": "And Warszawa?"},
            {"role": "assistant", "content": "In Poland."}]
    ex = render_chat(tok, msgs)
    assert len(ex.input_ids) == len(ex.labels)
    assert learned_text(tok, ex) == "In Czechia.<|im_end|>\nIn Poland.<|im_end|>\n"
    prompt = tok.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab == IGNORE_INDEX])
    assert "Where is Praha?" in prompt and "Be brief." in prompt and "In Czechia" not in prompt
    # labels equal the token ids where they are kept
    assert all(lab in (IGNORE_INDEX, t) for t, lab in zip(ex.input_ids, ex.labels))


def test_tool_calls_and_tool_results(tok):
    msgs = [{"role": "user", "content": "What is 27*33?"},
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                "name": "calculate", "arguments": '{"expression": "27*33"}'}}]},
            {"role": "tool", "content": '{"status": true, "result": 891}'},
            {"role": "assistant", "content": "You have 891 pieces in total."}]
    ex = render_chat(tok, msgs, tools=[{"type": "function", "function": {"name": "calculate", "parameters": {}}}])
    learned = learned_text(tok, ex)
    assert '<tool_call>{"name": "calculate", "arguments": {"expression": "27*33"}}</tool_call>' in learned
    assert "You have 891 pieces in total." in learned
    assert "891}" not in learned.replace("pieces", "")  # the tool's result is input, not a target
    assert "What is 27*33?" not in learned


@pytest.mark.parametrize("msgs,needle", [
    ([{"role": "user", "content": "hi"}], "no assistant turn"),
    ([{"role": "narrator", "content": "x"}, {"role": "assistant", "content": "y"}], "role 'narrator'"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}], "is empty"),
    ([{"role": "user", "content": "hi", "tool_calls": [{"function": {"name": "f"}}]},
      {"role": "assistant", "content": "y"}], "only assistant"),
])
def test_invalid_conversations(tok, msgs, needle):
    with pytest.raises(LmsmithError, match=needle):
        render_chat(tok, msgs, where="f.jsonl:3")


def test_role_the_template_cannot_render(tok):
    tok2 = tiny_tokenizer()
    tok2.chat_template = ("{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tools') }}"
                          "{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    msgs = [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}, {"role": "assistant", "content": "c"}]
    with pytest.raises(LmsmithError, match=r"x.jsonl:2: the chat template cannot render.*no tools"):
        render_chat(tok2, msgs, where="x.jsonl:2")


def test_template_that_silently_drops_a_role(tok):
    tok2 = tiny_tokenizer()
    tok2.chat_template = ("{% for m in messages %}{% if m['role'] != 'system' %}<|im_start|>{{ m['role'] }}\n"
                          "{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
                          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    msgs = [{"role": "user", "content": "a"}, {"role": "system", "content": "late"}, {"role": "assistant", "content": "c"}]
    with pytest.raises(LmsmithError, match="drops message 1"):
        render_chat(tok2, msgs)


def test_missing_chat_template(tok):
    tok2 = tiny_tokenizer()
    tok2.chat_template = None
    with pytest.raises(LmsmithError, match="no chat template"):
        render_chat(tok2, chat("a", "b")["messages"])


def test_bad_json_line_reports_file_and_line(tmp_path):
    f = write_jsonl(tmp_path / "c.jsonl", [chat("a", "b"), "{not json", chat("c", "d")])
    with pytest.raises(LmsmithError, match=r"c.jsonl:2: not valid JSON.*--skip-bad-lines"):
        read_chat_jsonl(f)
    cf = read_chat_jsonl(f, skip_bad_lines=True)
    assert len(cf.records) == 2 and cf.bad_lines == 1 and cf.lines == [1, 3]


def test_truncate_or_drop_long_examples(tok, tmp_path):
    f = write_jsonl(tmp_path / "c.jsonl", [chat("short", "ok"), chat("q", "answer " * 60)])
    exs, counts = render_file(tok, read_chat_jsonl(f), max_length=60, policy="truncate")
    assert counts["truncated"] == 1 and len(exs) == 2 and max(len(e) for e in exs) == 60
    exs, counts = render_file(tok, read_chat_jsonl(f), max_length=60, policy="drop")
    assert counts["dropped"] == 1 and len(exs) == 1
    # a cut that leaves no assistant token is dropped even when truncating
    ex = render_chat(tok, chat("x " * 80, "y")["messages"])
    assert fit_length(ex, 20, "truncate") is None
