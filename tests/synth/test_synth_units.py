"""Pure pieces of synth: template filling, cleaning model output, Evol-Instruct's elimination rules, cache keys."""

from __future__ import annotations

import pytest

from lmsmith.data.synth.backends import Request, Sampling, request_key
from lmsmith.data.synth.cache import CallCache
from lmsmith.data.synth.generators import clean_line, derive_seed, evolution_check, normalize_tool, strip_fences
from lmsmith.data.synth.templates import fill, language_name
from lmsmith.errors import LmsmithError


def test_fill_is_plain_substitution():
    assert fill("{a} {{b}} {a}", a="x") == "x {b} x"
    assert fill("{a.__class__}", a="x") == "{a.__class__}"  # no attribute access: stays text
    assert language_name("cs") == "Czech" and language_name(None).startswith("the same language")


@pytest.mark.parametrize("raw,clean", [
    ("Instruction: Jak upéct chleba?", "Jak upéct chleba?"),
    ('"Co je Vltava?"', "Co je Vltava?"),
    ("**Otázka:** Kolik měří Sněžka?\n\nDalší text.", "Kolik měří Sněžka?"),
    ("#Rewritten Prompt#: Popiš fotosyntézu ve třech krocích.", "Popiš fotosyntézu ve třech krocích."),
    ("```\nNapiš báseň.\n```", "Napiš báseň."),
])
def test_clean_line(raw, clean):
    assert clean_line(raw) == clean


def test_evolution_check_rules():
    old = "Popiš fotosyntézu."
    long_answer = "Fotosyntéza je proces, při kterém rostliny " + "vyrábějí cukry " * 10
    assert evolution_check(old, "Popiš fotosyntézu.", long_answer) == "no change"
    assert evolution_check(old, "Rewrite the given prompt: popiš víc", long_answer) == "copied prompt"
    assert evolution_check(old, "Popiš fotosyntézu u řas a srovnej ji s rostlinami.", "Omlouvám se, to nemohu.") == "refusal"
    assert evolution_check(old, "Popiš fotosyntézu u řas a srovnej ji s rostlinami.", "... !!") == "empty answer"
    assert evolution_check(old, "Popiš fotosyntézu u řas a srovnej ji s rostlinami.", long_answer) is None
    # a long answer that says sorry once is not a refusal (the paper: short and contains 'sorry')
    assert evolution_check(old, "Popiš fotosyntézu u řas.", "Sorry for the wait. " + "word " * 100) is None


def test_cache_key_covers_every_part(tmp_path):
    base = Request([{"role": "user", "content": "ahoj"}], Sampling(seed=1), "t1")
    k = request_key("endpoint:x", "m", base)
    assert k == request_key("endpoint:x", "m", Request([{"role": "user", "content": "ahoj"}], Sampling(seed=1), "t1"))
    variants = [request_key("engine", "m", base), request_key("endpoint:x", "m2", base),
                request_key("endpoint:x", "m", Request(base.messages, Sampling(seed=2), "t1")),
                request_key("endpoint:x", "m", Request(base.messages, Sampling(seed=1, temperature=0.1), "t1")),
                request_key("endpoint:x", "m", Request(base.messages, Sampling(seed=1), "t2")),
                request_key("endpoint:x", "m", Request([{"role": "user", "content": "ahoj!"}], Sampling(seed=1), "t1"))]
    assert len({k, *variants}) == 7
    c = CallCache(tmp_path / "c.sqlite")
    c.put(k, {"text": "x"})
    assert CallCache(tmp_path / "c.sqlite").get(k) == {"text": "x"} and len(c) == 1


def test_seeds_and_tools():
    assert derive_seed(0, "a", 1) == derive_seed(0, "a", 1) != derive_seed(0, "a", 2)
    assert strip_fences('```json\n{"a": 1}\n```') == '{"a": 1}'
    t = normalize_tool({"name": "f", "parameters": {"type": "object"}}, 1)
    assert t == {"type": "function", "function": {"name": "f", "description": "", "parameters": {"type": "object"}}}
    with pytest.raises(LmsmithError, match="not a valid JSON schema"):
        normalize_tool({"name": "f", "parameters": {"type": 5}}, 1)
    with pytest.raises(LmsmithError, match="needs a function 'name'"):
        normalize_tool({"description": "x"}, 1)
