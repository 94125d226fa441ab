"""Regenerate the built-in evaluation data (src/lmsmith/assets/tasks/*.jsonl) from facts written here.

Everything is generated from this file (seeded), so the data is ours and licence-clean:
Czech questions on capitals, arithmetic, opposites, days, months and numbers.

    python -m bench.tools.make_builtin_tasks
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from bench.common import ROOT

OUT = ROOT / "src" / "lmsmith" / "assets" / "tasks"

CAPITALS = [  # (stát v 2. pádě, hlavní město)
    ("Česka", "Praha"), ("Slovenska", "Bratislava"), ("Polska", "Varšava"), ("Německa", "Berlín"),
    ("Rakouska", "Vídeň"), ("Maďarska", "Budapešť"), ("Francie", "Paříž"), ("Itálie", "Řím"),
    ("Španělska", "Madrid"), ("Portugalska", "Lisabon"), ("Řecka", "Atény"), ("Norska", "Oslo"),
    ("Švédska", "Stockholm"), ("Finska", "Helsinky"), ("Dánska", "Kodaň"), ("Nizozemska", "Amsterdam"),
    ("Belgie", "Brusel"), ("Irska", "Dublin"), ("Slovinska", "Lublaň"), ("Chorvatska", "Záhřeb"),
    ("Srbska", "Bělehrad"), ("Bulharska", "Sofie"), ("Rumunska", "Bukurešť"), ("Ukrajiny", "Kyjev"),
    ("Litvy", "Vilnius"), ("Lotyšska", "Riga"), ("Estonska", "Tallinn"), ("Japonska", "Tokio"),
    ("Číny", "Peking"), ("Egypta", "Káhira"), ("Kanady", "Ottawa"), ("Austrálie", "Canberra"),
]
OPPOSITES = [
    ("velký", "malý"), ("starý", "mladý"), ("teplý", "studený"), ("rychlý", "pomalý"), ("den", "noc"),
    ("vysoký", "nízký"), ("silný", "slabý"), ("těžký", "lehký"), ("dobrý", "špatný"), ("plný", "prázdný"),
    ("bílý", "černý"), ("nahoře", "dole"), ("otevřít", "zavřít"), ("začátek", "konec"), ("léto", "zima"),
    ("dlouhý", "krátký"), ("široký", "úzký"), ("bohatý", "chudý"), ("veselý", "smutný"), ("drahý", "levný"),
]
DAYS = ["pondělí", "úterý", "středa", "čtvrtek", "pátek", "sobota", "neděle"]
MONTHS = ["leden", "únor", "březen", "duben", "květen", "červen", "červenec", "srpen", "září", "říjen",
          "listopad", "prosinec"]
NUMBERS = {1: "jedna", 2: "dva", 3: "tři", 4: "čtyři", 5: "pět", 6: "šest", 7: "sedm", 8: "osm", 9: "devět",
           10: "deset", 11: "jedenáct", 12: "dvanáct", 20: "dvacet", 30: "třicet", 100: "sto"}


def mc(question: str, answer: str, pool: list[str], rng: random.Random, category: str) -> dict:
    wrong = rng.sample([p for p in dict.fromkeys(pool) if p != answer], 3)
    choices = wrong + [answer]
    rng.shuffle(choices)
    return {"question": question, "choices": choices, "answer": choices.index(answer), "category": category}


def facts(rng: random.Random) -> list[dict]:
    items = []
    cities = [c for _, c in CAPITALS]
    for state, city in CAPITALS:
        items.append(mc(f"Jaké je hlavní město {state}?", city, cities, rng, "hlavní města"))
    for a, b in OPPOSITES:
        pool = [w for pair in OPPOSITES for w in pair if w != a]
        items.append(mc(f"Které slovo má opačný význam než slovo „{a}“?", b, pool, rng, "opačná slova"))
    for i, d in enumerate(DAYS):
        items.append(mc(f"Který den následuje po dni {d}?", DAYS[(i + 1) % 7], DAYS, rng, "dny v týdnu"))
    for i, m in enumerate(MONTHS):
        items.append(mc(f"Který měsíc následuje po měsíci {m}?", MONTHS[(i + 1) % 12], MONTHS, rng, "měsíce"))
    for n, w in NUMBERS.items():
        items.append(mc(f"Jak se číslo {n} napíše slovem?", w, list(NUMBERS.values()), rng, "číslovky"))
    for _ in range(44):
        a, b = rng.randint(2, 49), rng.randint(2, 49)
        op = rng.choice(["+", "-", "×"])
        if op == "×":
            a, b = rng.randint(2, 12), rng.randint(2, 12)
        if op == "-" and b > a:
            a, b = b, a
        ans = a + b if op == "+" else a - b if op == "-" else a * b
        near = sorted({ans + d for d in (-10, -2, -1, 1, 2, 10) if ans + d >= 0})
        items.append(mc(f"Kolik je {a} {op} {b}?", str(ans), [str(x) for x in near] + [str(ans)], rng, "počítání"))
    return items


def short_answers(rng: random.Random) -> list[dict]:
    """Questions answered by one word or number (generation task)."""
    items = []
    for state, city in rng.sample(CAPITALS, 14):
        items.append({"question": f"Jaké je hlavní město {state}?", "answer": city})
    for _ in range(12):
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        items.append({"question": f"Kolik je {a} + {b}?", "answer": str(a + b)})
    for _i, d in enumerate(rng.sample(DAYS, 6)):
        items.append({"question": f"Který den následuje po dni {d}?", "answer": DAYS[(DAYS.index(d) + 1) % 7]})
    return items


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} items to {path}")


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    rng = random.Random(20261123)
    items = facts(rng)
    rng.shuffle(items)
    write_jsonl(OUT / "cs_facts.train.jsonl", items[:10])
    write_jsonl(OUT / "cs_facts.test.jsonl", items[10:])
    answers = short_answers(random.Random(7))
    write_jsonl(OUT / "cs_answers.train.jsonl", answers[:4])
    write_jsonl(OUT / "cs_answers.test.jsonl", answers[4:])


if __name__ == "__main__":
    main()
