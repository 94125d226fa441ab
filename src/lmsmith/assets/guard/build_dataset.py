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
# Augmentation of the TRAIN split only (never of validation or held-out, never from their texts): extra rows
# per language and kind, attacks and benign texts in pairs so that the transformation itself is no signal.
AUGMENT = {"insert": 60, "mix": 40, "hardhost": 40, "noise": 60}


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


_LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})
_HOMOGLYPH = str.maketrans({"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "i": "і"})  # Cyrillic


def noisy(text: str, rng: random.Random) -> str:
    """Spelling noise an attacker (or a sloppy typist) adds: leetspeak or Cyrillic homoglyphs in some words,
    random casing, doubled spaces, dropped or repeated punctuation."""
    out = []
    for w in text.split(" "):
        r = rng.random()
        if r < 0.12:
            w = w.translate(_LEET)
        elif r < 0.24:
            w = w.translate(_HOMOGLYPH)
        elif r < 0.34:
            w = w.upper()
        elif r < 0.40:
            w = w.strip(".,;:!?")
        elif r < 0.44:
            w = w + rng.choice(["!!", "..", " ", ","])
        out.append(w)
    return " ".join(out)


def insert_sentence(docs: list[str], sentence: str, rng: random.Random) -> str:
    """`sentence` put at a random sentence boundary inside the joined documents."""
    text = join(*docs)
    cuts = [i + 2 for i in range(len(text) - 1) if text[i] in ".!?" and text[i + 1] == " "]
    at = rng.choice(cuts) if cuts else len(text)
    return join(text[:at].rstrip(), sentence, text[at:].lstrip())


def augment(lang: str, p: dict, others: dict[str, dict], rng: random.Random, seen: set[str]) -> list[tuple[int, str, str]]:
    """Augmented TRAIN rows (label, category, text) of one language, made from train pools only:
    `insert`: a direct attack at a random position in benign documents (and, as its benign pair, a hard
    negative at a random position); `mix`: an attack of another language inside this language's documents
    (and benign documents with a paragraph of another language); `hardhost`: a hard negative with an attack
    appended (and two hard negatives joined); `noise`: leetspeak / homoglyph / casing / punctuation noise on
    train attacks and benign texts alike."""
    direct = ["override", "extract", "roleplay"]
    rows: list[tuple[int, str, str]] = []

    def add(label: int, cat: str, text: str) -> None:
        if text not in seen:
            seen.add(text)
            rows.append((label, cat, text))

    def docs() -> list[str]:
        return rng.sample(p["docs"], min(len(p["docs"]), rng.randint(1, 5)))

    for _ in range(AUGMENT["insert"] // 2):
        add(1, "aug_insert", insert_sentence(docs(), attack(rng.choice(direct), p, rng), rng))
        add(0, "aug_insert_benign", insert_sentence(docs(), rng.choice(p["hard"]), rng))
    for _ in range(AUGMENT["mix"] // 2):
        q = others[rng.choice(sorted(others))]
        add(1, "aug_mix", insert_sentence(docs(), attack(rng.choice(direct + ["indirect"]), q, rng), rng))
        add(0, "aug_mix_benign", insert_sentence(docs(), rng.choice(q["docs"] + q["benign"]), rng))
    for _ in range(AUGMENT["hardhost"] // 2):
        add(1, "aug_hardhost", join(rng.choice(p["hard"]), attack(rng.choice(direct), p, rng)))
        add(0, "aug_hardhost_benign", join(*rng.sample(p["hard"], 2)))
    for _ in range(AUGMENT["noise"] // 2):
        add(1, "aug_noise", noisy(attack(rng.choice(direct + ["delim", "indirect"]), p, rng), rng))
        add(0, "aug_noise_benign", noisy(benign(rng.choice(["request", "hard", "hard"]), p, rng), rng))
    return rows


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


def build(out_dir: Path = HERE / "data", seed: int = 0, augmented: bool = True) -> dict[str, int]:
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
            if split == "train" and augmented:
                others = {o: pools(load_fragments(o), "train") for o in LANGS if o != lang}
                recs += augment(lang, p, others, random.Random(f"{seed}-augment-{lang}"), seen)
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
