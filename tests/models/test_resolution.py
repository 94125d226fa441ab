"""One resolution per ref and one hash pass per registry version per process, counted for whole commands."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from lmsmith.cli import main
from lmsmith.registry import store
from lmsmith.registry.registry import Registry


@pytest.fixture
def counted(monkeypatch, lmsmith_home: Path):
    """Count Registry.resolve calls per ref and sha256 reads per file of a registered version."""
    resolved: Counter[str] = Counter()
    hashed: Counter[str] = Counter()
    real_resolve, real_sha = Registry.resolve, store.sha256_file

    def resolve(self, ref, verify=True):
        resolved[ref] += 1
        return real_resolve(self, ref, verify=verify)

    def sha256_file(path):
        p = Path(path)
        if (lmsmith_home / "registry" / "models") in p.parents:
            hashed[str(p.relative_to(lmsmith_home / "registry" / "models"))] += 1
        return real_sha(path)

    monkeypatch.setattr(Registry, "resolve", resolve)
    monkeypatch.setattr(store, "sha256_file", sha256_file)
    store.clear_hash_cache()  # as in a fresh process
    return resolved, hashed


def version_files(registry: Registry, ref: str) -> set[str]:
    mv = registry.get(ref)
    return {f"{mv.name}/{mv.version}/{rel}" for rel in mv.files}


def assert_once(counted, registry: Registry, refs: list[str]) -> None:
    resolved, hashed = counted
    assert set(resolved) == set(refs) and all(n == 1 for n in resolved.values()), dict(resolved)
    assert all(n == 1 for n in hashed.values()), {k: n for k, n in hashed.items() if n > 1}
    want = set().union(*(version_files(registry, r) for r in refs))
    assert set(hashed) == want  # every file of every version checked: a full pass, and only one


def test_generate_resolves_once_and_hashes_once(tiny_ref, registry, counted, capsys):
    assert main(["generate", tiny_ref, "--prompt", "Praha je", "--max-tokens", "3"]) == 0
    assert_once(counted, registry, [tiny_ref])


def test_eval_resolves_once_and_hashes_once(tiny_ref, registry, counted, tmp_path, capsys):
    (tmp_path / "mc.jsonl").write_text("".join(
        json.dumps({"q": f"{i} + 1 = ?", "choices": [str(i), str(i + 1)], "answer": 1}) + "\n" for i in range(3)))
    (tmp_path / "mc.yaml").write_text("task: mini\nkind: multiple_choice\ndata: {test: mc.jsonl}\n"
                                      "doc_to_text: \"{q}\"\ndoc_to_choice: choices\ndoc_to_target: answer\n")
    assert main(["eval", tiny_ref, "--tasks", str(tmp_path / "mc.yaml"), "--run-dir", str(tmp_path / "run")]) == 0
    assert_once(counted, registry, [tiny_ref])


def test_train_sft_resolves_once_and_hashes_once(tiny_ref, registry, counted, tmp_path, capsys):
    chat = {"messages": [{"role": "user", "content": "Hlavní město?"}, {"role": "assistant", "content": "Praha."}]}
    data = tmp_path / "chat.jsonl"
    data.write_text((json.dumps(chat, ensure_ascii=False) + "\n") * 8)
    assert main(["train", "sft", "--model", tiny_ref, "--data", str(data), "--lora-r", "4", "--lora-targets", "q_proj",
                 "--merge", "--steps", "2", "--batch-size", "2", "--seq-len", "64", "--no-mlflow", "--no-plot",
                 "--eval-fraction", "0", "--output-name", "tiny-sft", "--run-dir", str(tmp_path / "run")]) == 0
    assert_once(counted, registry, [tiny_ref])  # precheck, tokenizer, weights and the merge share one resolution
    assert registry.get("tiny-sft").lineage.parent == "tiny@1"


def test_adapter_resolves_its_base_once(tiny_ref, registry, counted, tmp_path, capsys):
    """An adapter names its base: two refs, each resolved and hashed once, for the runner and the tokenizer."""
    from peft import LoraConfig, get_peft_model

    from lmsmith.models import load_model

    model = get_peft_model(load_model(tiny_ref, device="cpu"), LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path / "adapter")
    registry.register(tmp_path / "adapter", "ad", kind="adapter", base=tiny_ref)
    resolved, hashed = counted
    resolved.clear(), hashed.clear(), store.clear_hash_cache()
    assert main(["generate", "ad", "--prompt", "Praha je", "--max-tokens", "2"]) == 0
    assert_once(counted, registry, ["ad", tiny_ref])


def test_a_changed_file_is_hashed_again(tiny_ref, registry, counted):
    from lmsmith.errors import IntegrityError
    from lmsmith.models import resolve_model

    resolve_model(tiny_ref)
    mv = registry.get(tiny_ref)
    target = mv.dir / "config.json"
    data = target.read_bytes()
    target.chmod(0o644)
    target.write_bytes(data.replace(b"{", b"{ ", 1))  # same inode, new mtime: the cache must not answer
    with pytest.raises(IntegrityError, match="config.json"):
        resolve_model(tiny_ref)
