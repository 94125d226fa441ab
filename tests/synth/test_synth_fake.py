"""`lmsmith synth` against a fake OpenAI server on loopback: provenance, the call cache, retries, resuming a
SIGKILLed run to identical bytes, schema-valid transforms, curation, and failures that a rerun repairs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from fake_openai import FakeOpenAI, default_text
from lmsmith.cli import main

SRC = Path(__file__).resolve().parents[2] / "src"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def ep(srv: FakeOpenAI) -> list[str]:
    return ["--endpoint", srv.url, "--api-model", "fake", "--max-retries", "3"]


@pytest.fixture
def srv():
    with FakeOpenAI() as s:
        yield s


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    rows = [{"id": f"p{i}", "prompt": f"Napiš větu číslo {i} o Praze."} for i in range(10)]
    return write_jsonl(tmp_path / "prompts.jsonl", rows)


def test_generate_provenance_and_cache(srv, prompts, tmp_path, capsys):
    out = tmp_path / "answers.jsonl"
    args = ["synth", "generate", *ep(srv), "--input", str(prompts), "--output", str(out), "--n", "2", "--chunk-size", "4"]
    assert main(args) == 0
    recs = read_jsonl(out)
    assert len(recs) == 20 and srv.count == 20
    assert [r["metadata"]["source_id"] for r in recs[:4]] == ["p0", "p0", "p1", "p1"]
    assert [r["metadata"]["sample"] for r in recs[:2]] == [0, 1]
    m0 = recs[0]["metadata"]
    assert m0["generator"] == "generate" and m0["model"] == "fake" and len(m0["template_hash"]) == 16
    assert recs[0]["messages"][0] == {"role": "user", "content": "Napiš větu číslo 0 o Praze."}
    assert recs[0]["messages"][1]["role"] == "assistant"
    assert recs[0]["messages"][1]["content"] != recs[1]["messages"][1]["content"]  # samples get different seeds
    manifest = json.loads((tmp_path / "answers.jsonl.manifest.json").read_text())
    assert manifest["calls"] == {"answered_now": 20, "from_cache": 0, "failed": 0}
    assert manifest["tokens"]["completion"] > 0 and manifest["records_out"] == 20
    first = out.read_bytes()
    # the same command again: every answer from the cache, not one request, same bytes
    assert main(args) == 0
    assert srv.count == 20 and out.read_bytes() == first
    assert json.loads((tmp_path / "answers.jsonl.manifest.json").read_text())["calls"]["from_cache"] == 20
    # a different seed is a different call
    assert main(args + ["--seed", "1", "--limit", "2"]) == 0
    assert srv.count == 24


def test_retries_inside_a_run(srv, prompts, tmp_path):
    srv.script = ["500", "429:0", "500"]
    out = tmp_path / "o.jsonl"
    assert main(["synth", "generate", *ep(srv), "--input", str(prompts), "--output", str(out), "--concurrency", "1"]) == 0
    assert len(read_jsonl(out)) == 10 and srv.count == 13


def test_failed_calls_are_retried_by_the_next_run(srv, prompts, tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    srv.script = ["500"] * 2  # with --max-retries 1 the first call fails for good
    args = ["synth", "generate", "--endpoint", srv.url, "--api-model", "fake", "--max-retries", "1",
            "--input", str(prompts), "--output", str(out), "--concurrency", "1", "--chunk-size", "5"]
    assert main(args) == 1
    assert "rerun the same command" in " ".join(capsys.readouterr().err.split())
    assert len(read_jsonl(out)) == 9
    assert (tmp_path / "o.jsonl.parts").is_dir()  # the failed chunk is not saved; the other one is
    n = srv.count
    assert main(args) == 0
    assert srv.count == n + 1  # only the failed call is sent again
    assert len(read_jsonl(out)) == 10 and not (tmp_path / "o.jsonl.parts").exists()


def cache_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]


def test_sigkill_resume_sends_no_answered_request_and_same_bytes(tmp_path):
    rows = [{"id": i, "prompt": f"Otázka {i}: co víš o číslu {i}?"} for i in range(40)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    env = {**os.environ, "PYTHONPATH": str(SRC), "LMSMITH_HOME": str(tmp_path / "home")}

    def cmd(url: str, out: Path, cache: Path) -> list[str]:
        return [sys.executable, "-m", "lmsmith.cli", "synth", "generate", "--endpoint", url, "--api-model", "fake",
                "--input", str(inp), "--output", str(out), "--cache-path", str(cache), "--concurrency", "2",
                "--chunk-size", "8", "--n", "1"]

    with FakeOpenAI(delay=0.1) as srv:
        killed_cache = tmp_path / "killed.sqlite"
        p = subprocess.Popen(cmd(srv.url, tmp_path / "a.jsonl", killed_cache), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while len(srv.answered) < 14 and time.time() < deadline and p.poll() is None:
            time.sleep(0.02)
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert p.returncode == -signal.SIGKILL
        assert not (tmp_path / "a.jsonl").exists()
        done = cache_rows(killed_cache)
        assert 10 <= done < 40
        first = [json.dumps(b, sort_keys=True) for b in srv.requests]
        n_first = srv.count
        r = subprocess.run(cmd(srv.url, tmp_path / "a.jsonl", killed_cache), env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        resent = [json.dumps(b, sort_keys=True) for b in srv.requests[n_first:]]
        assert len(resent) == 40 - done  # every answered call came from the cache
        cached = set(first) - set(json.dumps(b, sort_keys=True) for b in srv.requests[n_first:])
        assert len(cached) >= done and not (set(resent) & cached)
        # an uninterrupted run with its own cache writes the same bytes
        r = subprocess.run(cmd(srv.url, tmp_path / "b.jsonl", tmp_path / "fresh.sqlite"), env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert len(read_jsonl(tmp_path / "a.jsonl")) == 40


SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 40},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                           "city": {"enum": ["Praha", "Brno", "Ostrava"]}},
          "required": ["name", "age", "city"], "additionalProperties": False}


def test_transform_json_schema_output_always_validates(tmp_path):
    def responder(body):  # every third answer breaks the schema; the others follow response_format
        msg = body["messages"][-1]["content"]
        assert body["response_format"]["json_schema"]["schema"] == SCHEMA
        if "číslo 3" in msg or "číslo 6" in msg:
            return json.dumps({"name": "X", "age": 999, "city": "Praha"})
        if "číslo 9" in msg:
            return "not json at all"
        return default_text(body)

    rows = [{"id": i, "text": f"Osoba číslo {i} se jmenuje Jana a žije v Brně."} for i in range(10)]
    inp = write_jsonl(tmp_path / "people.jsonl", rows)
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    with FakeOpenAI(responder=responder) as srv:
        assert main(["synth", "transform", *ep(srv), "--input", str(inp), "--output", str(tmp_path / "o.jsonl"),
                     "--instruction", "Extrahuj jméno, věk a město.", "--json-schema", str(tmp_path / "schema.json")]) == 0
    recs = read_jsonl(tmp_path / "o.jsonl")
    assert len(recs) == 7
    for r in recs:
        jsonschema.validate(json.loads(r["messages"][-1]["content"]), SCHEMA)
    rejects = read_jsonl(tmp_path / "o.jsonl.rejects.jsonl")
    assert sorted(r["source_id"] for r in rejects) == [3, 6, 9]
    assert any("schema violation at age" in r["reason"] for r in rejects)
    assert any("invalid JSON" in r["reason"] for r in rejects)


def test_transform_bad_schema_is_one_line(tmp_path, capsys):
    (tmp_path / "s.json").write_text(json.dumps({"type": "objekt"}))
    inp = write_jsonl(tmp_path / "i.jsonl", [{"text": "x"}])
    assert main(["synth", "transform", "--endpoint", "http://127.0.0.1:9/v1", "--api-model", "m", "--input", str(inp),
                 "--output", str(tmp_path / "o.jsonl"), "--instruction", "x", "--json-schema", str(tmp_path / "s.json")]) == 1
    assert "not a valid JSON schema" in capsys.readouterr().err


def test_backtranslate_document_becomes_the_response(srv, tmp_path):
    docs = [{"id": "d1", "text": "Praha je hlavní město České republiky a leží na řece Vltavě.  Má přes milion obyvatel."},
            {"id": "d2", "text": "Krátký."}]
    inp = write_jsonl(tmp_path / "docs.jsonl", docs)
    srv.responder = lambda body: "Instrukce: Řekni mi něco o Praze."
    assert main(["synth", "backtranslate", *ep(srv), "--input", str(inp), "--output", str(tmp_path / "o.jsonl"),
                 "--language", "cs"]) == 0
    recs = read_jsonl(tmp_path / "o.jsonl")
    assert len(recs) == 1 and srv.count == 1
    assert recs[0]["messages"] == [{"role": "user", "content": "Řekni mi něco o Praze."},
                                   {"role": "assistant", "content": "Praha je hlavní město České republiky a leží na řece "
                                                                    "Vltavě. Má přes milion obyvatel."}]
    assert "Czech" in srv.requests[0]["messages"][0]["content"]
    assert read_jsonl(tmp_path / "o.jsonl.rejects.jsonl")[0]["source_id"] == "d2"


def test_evolve_rounds_and_elimination(tmp_path):
    def responder(body):
        msg = body["messages"][-1]["content"]
        if msg.startswith("Rewrite") or msg.startswith("Take the task"):
            seed_task = msg.split("Task:\n", 1)[1]
            if "kočka" in seed_task:
                return seed_task  # no change
            if "pes" in seed_task:
                return "#Rewritten Prompt#: given prompt, but harder"
            return seed_task + " Odpověz ve třech krocích."
        if "zakázané" in msg:
            return "Omlouvám se, s tím nemohu pomoci."
        return "Podrobná odpověď: " + msg
    rows = [{"id": 1, "prompt": "Popiš, jak funguje fotosyntéza."}, {"id": 2, "prompt": "Co dělá kočka?"},
            {"id": 3, "prompt": "Co dělá pes?"}, {"id": 4, "prompt": "Vysvětli zakázané téma."}]
    inp = write_jsonl(tmp_path / "seeds.jsonl", rows)
    with FakeOpenAI(responder=responder) as srv:
        assert main(["synth", "evolve", *ep(srv), "--input", str(inp), "--output", str(tmp_path / "o.jsonl"),
                     "--rounds", "2", "--language", "cs"]) == 0
    recs = read_jsonl(tmp_path / "o.jsonl")
    assert [r["metadata"]["source_id"] for r in recs] == [1, 1]
    assert [r["metadata"]["round"] for r in recs] == [1, 2]
    assert recs[1]["messages"][0]["content"].count("Odpověz ve třech krocích.") == 2
    assert recs[1]["metadata"]["parent"] == recs[0]["messages"][0]["content"]
    reasons = {(r["source_id"], r["reason"]) for r in read_jsonl(tmp_path / "o.jsonl.rejects.jsonl")}
    assert reasons == {(2, "no change"), (3, "copied prompt"), (4, "refusal")}
    m = json.loads((tmp_path / "o.jsonl.manifest.json").read_text())
    assert m["rejects"]["evolve: refusal"] == 2 and m["steps"]["evolve/kept"] == 2


def test_curate_dedup_language_and_judge(tmp_path):
    def judge(body):
        prompt = body["messages"][-1]["content"]
        assert body["response_format"]["json_schema"]["schema"]["required"] == ["reason", "score"]
        score = 5 if "výborná" in prompt else 2
        return json.dumps({"reason": f"hodnocení {score}", "score": score})

    def chat(q, a, i):
        return {"id": i, "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
    long_cs = "Praha je hlavní město České republiky, leží na Vltavě a žije v ní přes milion lidí."
    rows = [chat("Co je Praha?", long_cs + " Je to výborná odpověď.", 1),
            chat("Co je Praha?", long_cs + " Je to výborná odpověď.", 2),  # exact duplicate
            chat("Co je Praha?", long_cs + " Je to výborná odpověď!", 3),  # same words: exact duplicate too
            chat("Co je Brno?", "Brno je druhé největší město v Česku, leží na soutoku Svratky a Svitavy. Slabá odpověď.", 4),
            chat("What is Paris?", "Paris is the capital of France and a great city with many museums and parks.", 5),
            chat("Co je Ostrava?", "Ok.", 6)]
    inp = write_jsonl(tmp_path / "sft.jsonl", rows)
    with FakeOpenAI(responder=judge) as srv:
        assert main(["synth", "curate", "--judge-endpoint", srv.url, "--judge-api-model", "judge", "--input", str(inp),
                     "--output", str(tmp_path / "c.jsonl"), "--language", "cs", "--min-chars", "10"]) == 0
        assert srv.count == 2  # only the survivors of the cheap filters are judged
    recs = read_jsonl(tmp_path / "c.jsonl")
    assert [r["id"] for r in recs] == [1]
    assert recs[0]["metadata"]["score"] == 5 and recs[0]["metadata"]["score_reason"] == "hodnocení 5"
    rej = {r["source_id"]: r["step"] for r in read_jsonl(tmp_path / "c.jsonl.rejects.jsonl")}
    assert rej == {2: "exact_dedup", 3: "exact_dedup", 4: "judge", 5: "language", 6: "length"}
    m = json.loads((tmp_path / "c.jsonl.manifest.json").read_text())
    assert m["records_in"] == 6 and m["records_out"] == 1 and m["steps"]["judge/score_2"] == 1


def test_curate_near_duplicates_without_judge(tmp_path):
    base = " ".join(f"slovo{i}" for i in range(60))
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": base}]},
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": base + " konec"}]},
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "úplně jiný text " * 5}]}]
    inp = write_jsonl(tmp_path / "x.jsonl", rows)
    assert main(["synth", "curate", "--input", str(inp), "--output", str(tmp_path / "c.jsonl")]) == 0
    assert len(read_jsonl(tmp_path / "c.jsonl")) == 2
    assert read_jsonl(tmp_path / "c.jsonl.rejects.jsonl")[0]["reason"] == "near duplicate of 1"


def test_no_backend_is_one_line(prompts, tmp_path, capsys):
    assert main(["synth", "generate", "--input", str(prompts), "--output", str(tmp_path / "o.jsonl")]) == 1
    assert "no model given" in capsys.readouterr().err


def test_template_override_and_unknown_placeholder(srv, prompts, tmp_path, capsys):
    (tmp_path / "t.txt").write_text("Odpověz stručně: {prompt}")
    assert main(["synth", "generate", *ep(srv), "--input", str(prompts), "--output", str(tmp_path / "o.jsonl"),
                 "--limit", "1", "--template", f"prompt={tmp_path / 't.txt'}"]) == 0
    assert srv.requests[0]["messages"][-1]["content"] == "Odpověz stručně: Napiš větu číslo 0 o Praze."
    (tmp_path / "attr.txt").write_text("{prompt} {evil.__class__}")  # not a placeholder: stays literal text
    assert main(["synth", "generate", *ep(srv), "--input", str(prompts), "--output", str(tmp_path / "o.jsonl"),
                 "--limit", "1", "--template", str(tmp_path / "attr.txt")]) == 0
    assert srv.requests[-1]["messages"][-1]["content"].endswith("{evil.__class__}")
    (tmp_path / "bad2.txt").write_text("{prompt} {secret}")
    assert main(["synth", "generate", *ep(srv), "--input", str(prompts), "--output", str(tmp_path / "o.jsonl"),
                 "--template", str(tmp_path / "bad2.txt")]) == 1
    assert "unknown placeholder(s) {secret}" in capsys.readouterr().err
