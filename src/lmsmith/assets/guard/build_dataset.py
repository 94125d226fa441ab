"""Build the guard dataset (train / validation / heldout JSONL) from the hand-written fragments in source/.

    python src/lmsmith/assets/guard/build_dataset.py        # rewrites data/*.jsonl (deterministic, seed 0)

Splits are made by TEMPLATE, not by example: every 4th template of each train pool goes to validation only,
and the held-out split uses only the `*_HO` pools (other phrasings, other goals, other lead-ins, other topics,
other document texts, rot13 instead of hex), so no held-out attack shares a template with training.
"""

from __future__ import annotations

import base64
import codecs
import importlib.util
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
LANGS = ("en", "cs", "pl", "sl")
COUNTS = {"train": (400, 420), "validation": (110, 130), "heldout": (120, 160)}  # (attacks, benign) per language
ATTACK_MIX = {"override": 25, "roleplay": 15, "extract": 12, "delim": 13, "indirect": 15, "encoded": 8, "wrapped": 12}
BENIGN_MIX = {"request": 30, "hard": 37, "docs": 26, "encoded_benign": 7}
# the train/validation mix may change between dataset versions; the held-out mix stays as first published
# (tried: wrapped 22 with hard hosts and role-play attacks; validation got worse). Long documents (6-10
# paragraphs, as RAG retrieves them) with and without an injection, so that long prose is no signal.
TRAIN_ATTACK_MIX = {**ATTACK_MIX, "longdoc_indirect": 6}
TRAIN_BENIGN_MIX = {**BENIGN_MIX, "longdoc": 8}


def load_fragments(lang: str):
    spec = importlib.util.spec_from_file_location(f"guard_fragments_{lang}", HERE / "source" / f"fragments_{lang}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pools(f, split: str) -> dict[str, list[str]]:
    """The fragment pools one split may draw from."""
    names = ["OVERRIDE", "ROLEPLAY", "EXTRACT", "DELIM", "INDIRECT", "BENIGN", "HARD", "DOCS"]
    if split == "heldout":
        p = {n.lower(): getattr(f, n + "_HO") for n in names}
        p.update(goals=f.GOALS_HO, leadins=f.LEADINS_HO, encoded=f.ENCODED_HO, encodings=["rot13", "base64"])
    else:
        want_val = split == "validation"
        p = {n.lower(): [t for i, t in enumerate(getattr(f, n)) if (i % 4 == 3) == want_val] for n in names}
        p.update(goals=f.GOALS, leadins=f.LEADINS, encoded=f.ENCODED, encodings=["base64", "hex", "rot13"])
    p["encoded_benign"] = f.ENCODED_BENIGN
    p["wrapped"] = (p["benign"], p["override"] + p["extract"])  # (host questions, appended attacks)
    return p


def encode(text: str, how: str) -> str:
    if how == "base64":
        return base64.b64encode(text.encode()).decode()
    if how == "hex":
        return text.encode().hex()
    return codecs.encode(text, "rot13")


def join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def attack(kind: str, p: dict, rng: random.Random) -> str:
    goal = rng.choice(p["goals"])
    fill = lambda t: t.replace("{goal}", goal)  # noqa: E731
    lead = rng.choice(p["leadins"])
    if kind in ("override", "roleplay"):
        return join(lead, fill(rng.choice(p[kind])))
    if kind == "extract":
        return join(lead, rng.choice(p["extract"]))
    if kind == "delim":  # markup after an ordinary request, as pasted into a chat or a tool result
        return join(rng.choice(p["benign"]) if rng.random() < 0.5 else "", fill(rng.choice(p["delim"])))
    if kind == "indirect":  # a document with an instruction for the model inside (what RAG retrieves)
        docs = rng.sample(p["docs"], min(len(p["docs"]), rng.choice([1, 2, 3, 4])))
        cut = rng.randint(1, len(docs))
        return join(*docs[:cut], fill(rng.choice(p["indirect"])), *docs[cut:])
    if kind == "longdoc_indirect":
        docs = rng.choices(p["docs"], k=rng.randint(6, 10))
        cut = rng.randint(1, len(docs))
        return join(*docs[:cut], fill(rng.choice(p["indirect"])), *docs[cut:])
    if kind == "encoded":
        inner = fill(rng.choice(p["override"] + p["roleplay"]))
        how = rng.choice(p["encodings"])
        return rng.choice([t for t in p["encoded"] if (how == "rot13") == ("rot13" in t)] or p["encoded"]) \
            .replace("{payload}", encode(inner, how))
    if kind == "wrapped":  # a legitimate question with the attack appended
        hosts, attacks = p["wrapped"]
        return join(rng.choice(hosts), fill(rng.choice(attacks)))
    raise ValueError(kind)


def benign(kind: str, p: dict, rng: random.Random) -> str:
    lead = rng.choice(p["leadins"])
    if kind == "request":
        return join(lead, rng.choice(p["benign"]), rng.choice(p["benign"]) if rng.random() < 0.3 else "")
    if kind == "hard":
        return join(lead if rng.random() < 0.5 else "", rng.choice(p["hard"]),
                    rng.choice(p["benign"]) if rng.random() < 0.2 else "")
    if kind == "docs":  # as long as the documents that carry indirect injections, so length is no signal
        return join(*rng.sample(p["docs"], min(len(p["docs"]), rng.choice([1, 2, 3, 4, 5]))))
    if kind == "longdoc":
        return join(*rng.choices(p["docs"], k=rng.randint(6, 10)))
    if kind == "encoded_benign":
        how = rng.choice(["base64", "hex"])
        t = [t for t in p["encoded_benign"] if ("hex" in t) == (how == "hex")][0]
        return t.replace("{payload}", encode(rng.choice(p["benign"] + p["docs"][:2]), how))
    raise ValueError(kind)


def sample(make, mix: dict[str, int], n: int, p: dict, rng: random.Random, seen: set[str]) -> list[tuple[str, str]]:
    kinds, weights = list(mix), list(mix.values())
    out: list[tuple[str, str]] = []
    tries = 0
    while len(out) < n and tries < n * 200:
        tries += 1
        kind = rng.choices(kinds, weights)[0]
        text = make(kind, p, rng)
        if text not in seen:
            seen.add(text)
            out.append((kind, text))
    return out


def build(out_dir: Path = HERE / "data", seed: int = 0) -> dict[str, int]:
    out_dir.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()  # no text appears in two splits
    sizes = {}
    for split, (n_att, n_ben) in COUNTS.items():
        rows = []
        for lang in LANGS:
            rng = random.Random(f"{seed}-{split}-{lang}")
            p = pools(load_fragments(lang), split)
            mix = ATTACK_MIX if split == "heldout" else TRAIN_ATTACK_MIX
            recs = [(1, k, t) for k, t in sample(attack, mix, n_att, p, rng, seen)]
            bmix = BENIGN_MIX if split == "heldout" else TRAIN_BENIGN_MIX
            recs += [(0, k, t) for k, t in sample(benign, bmix, n_ben, p, rng, seen)]
            rng.shuffle(recs)
            rows += [{"id": f"{lang}-{split}-{i:04d}", "text": t, "label": y, "lang": lang, "category": k}
                     for i, (y, k, t) in enumerate(recs)]
        with open(out_dir / f"{split}.jsonl", "w") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        sizes[split] = len(rows)
    return sizes


if __name__ == "__main__":
    print(build())
