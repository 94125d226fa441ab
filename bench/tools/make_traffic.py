"""Regenerate the shipped multilingual request traffic (src/lmsmith/assets/monitor/traffic.jsonl).

User requests as a served model would see them, in three languages (en, cs, pl) and three domains (an online
shop's customer support, health questions, programming help), generated from templates written here (seeded),
so the data is ours and licence-clean. Drift tests and bench/ops/drift.py split it into same-distribution pairs
and into language- or domain-shifted pairs.

    python -m bench.tools.make_traffic
"""

from __future__ import annotations

import json
import random

from bench.common import TRAFFIC

OUT = TRAFFIC
PER_CELL = 250

SLOTS = {
    "en": {
        "item": ["jacket", "phone case", "coffee grinder", "pair of boots", "backpack", "desk lamp", "blender",
                 "winter coat", "kettle", "gaming mouse", "yoga mat", "watch"],
        "city": ["Leeds", "Bristol", "Dublin", "Manchester", "Glasgow", "Cardiff", "York"],
        "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "the weekend"],
        "symptom": ["a headache", "a sore throat", "back pain", "a dry cough", "a fever", "trouble sleeping",
                    "a rash on my arm", "stomach ache", "dizziness", "a blocked nose"],
        "drug": ["ibuprofen", "paracetamol", "an antihistamine", "cough syrup", "vitamin D", "aspirin"],
        "lang": ["Python", "JavaScript", "Rust", "Go", "Java", "TypeScript", "C++"],
        "thing": ["a list", "a dictionary", "a JSON file", "a CSV file", "a REST API", "a unit test", "a regex",
                  "a SQL query", "a web server", "a background job"],
        "err": ["a KeyError", "a null pointer exception", "a segmentation fault", "a timeout", "an import error",
                "a type error", "a memory leak"],
    },
    "cs": {
        "item": ["bundu", "obal na telefon", "mlýnek na kávu", "boty", "batoh", "stolní lampu", "mixér",
                 "zimní kabát", "rychlovarnou konvici", "herní myš", "podložku na jógu", "hodinky"],
        "city": ["Brna", "Ostravy", "Plzně", "Olomouce", "Liberce", "Českých Budějovic", "Zlína"],
        "day": ["v pondělí", "v úterý", "ve středu", "ve čtvrtek", "v pátek", "o víkendu"],
        "symptom": ["bolest hlavy", "bolest v krku", "bolest zad", "suchý kašel", "horečku", "potíže se spánkem",
                    "vyrážku na ruce", "bolest břicha", "závratě", "ucpaný nos"],
        "drug": ["ibuprofen", "paralen", "antihistaminikum", "sirup proti kašli", "vitamín D", "aspirin"],
        "lang": ["Pythonu", "JavaScriptu", "Rustu", "Go", "Javě", "TypeScriptu", "C++"],
        "thing": ["seznam", "slovník", "soubor JSON", "soubor CSV", "REST API", "jednotkový test",
                  "regulární výraz", "dotaz SQL", "webový server", "úlohu na pozadí"],
        "err": ["KeyError", "výjimku null pointer", "segmentation fault", "timeout", "chybu importu",
                "typovou chybu", "únik paměti"],
    },
    "pl": {
        "item": ["kurtkę", "etui na telefon", "młynek do kawy", "buty", "plecak", "lampkę na biurko", "blender",
                 "płaszcz zimowy", "czajnik", "myszkę do gier", "matę do jogi", "zegarek"],
        "city": ["Krakowa", "Gdańska", "Wrocławia", "Poznania", "Łodzi", "Lublina", "Katowic"],
        "day": ["w poniedziałek", "we wtorek", "w środę", "w czwartek", "w piątek", "w weekend"],
        "symptom": ["ból głowy", "ból gardła", "ból pleców", "suchy kaszel", "gorączkę", "problemy ze snem",
                    "wysypkę na ręce", "ból brzucha", "zawroty głowy", "zatkany nos"],
        "drug": ["ibuprofen", "paracetamol", "lek przeciwhistaminowy", "syrop na kaszel", "witaminę D", "aspirynę"],
        "lang": ["Pythonie", "JavaScripcie", "Ruście", "Go", "Javie", "TypeScripcie", "C++"],
        "thing": ["listę", "słownik", "plik JSON", "plik CSV", "REST API", "test jednostkowy", "wyrażenie regularne",
                  "zapytanie SQL", "serwer WWW", "zadanie w tle"],
        "err": ["KeyError", "wyjątek null pointer", "segmentation fault", "timeout", "błąd importu",
                "błąd typu", "wyciek pamięci"],
    },
}

TEMPLATES = {
    ("en", "shop"): [
        "I ordered a {item} on {day} and it still has not arrived in {city}. Where is my order {n}?",
        "How do I return a {item} that is too small? I bought it {n} days ago.",
        "Can I change the delivery address for order {n} to {city}?",
        "The {item} I received is damaged. Can you send a replacement or refund me?",
        "Do you have the {item} in stock? I need it before {day}.",
        "My payment for the {item} went through twice, please refund one of the charges.",
        "Is there free shipping to {city} for orders over {n} pounds?",
        "I want to cancel my order of a {item}, it has not shipped yet.",
    ],
    ("cs", "shop"): [
        "Objednal jsem si {item} {day} a pořád mi nedorazila do {city}. Kde je moje objednávka {n}?",
        "Jak mám vrátit {item}, které jsou mi malé? Koupil jsem je před {n} dny.",
        "Můžu změnit doručovací adresu objednávky {n} do {city}?",
        "Zboží {item}, které mi přišlo, je poškozené. Pošlete mi prosím náhradu nebo vraťte peníze.",
        "Máte {item} skladem? Potřebuji to mít {day}.",
        "Platba za {item} mi odešla dvakrát, vraťte mi prosím jednu z nich.",
        "Je doprava do {city} zdarma pro objednávky nad {n} korun?",
        "Chci zrušit objednávku na {item}, ještě nebyla odeslána.",
    ],
    ("pl", "shop"): [
        "Zamówiłem {item} {day} i nadal nie dotarło do {city}. Gdzie jest moje zamówienie {n}?",
        "Jak zwrócić {item}, które są za małe? Kupiłem je {n} dni temu.",
        "Czy mogę zmienić adres dostawy zamówienia {n} do {city}?",
        "Otrzymany produkt {item} jest uszkodzony. Proszę o wymianę albo zwrot pieniędzy.",
        "Czy macie {item} na stanie? Potrzebuję tego {day}.",
        "Płatność za {item} została pobrana dwa razy, proszę o zwrot jednej z nich.",
        "Czy dostawa do {city} jest darmowa przy zamówieniach powyżej {n} złotych?",
        "Chcę anulować zamówienie na {item}, jeszcze nie zostało wysłane.",
    ],
    ("en", "health"): [
        "I have had {symptom} for {n} days. Should I see a doctor?",
        "Can I take {drug} together with {drug2}?",
        "What is the usual dose of {drug} for an adult with {symptom}?",
        "My child has {symptom} since {day}. What should I do?",
        "Is {symptom} a side effect of {drug}?",
        "How long does {symptom} usually last after a cold?",
        "I woke up with {symptom} and {symptom2}. Is it something serious?",
        "Should I stop taking {drug} if I get {symptom}?",
    ],
    ("cs", "health"): [
        "Už {n} dní mám {symptom}. Mám jít k lékaři?",
        "Můžu brát {drug} spolu s {drug2}?",
        "Jaká je obvyklá dávka léku {drug} pro dospělého, který má {symptom}?",
        "Moje dítě má {symptom}, začalo to {day}. Co mám dělat?",
        "Může být {symptom} vedlejším účinkem léku {drug}?",
        "Jak dlouho obvykle trvá {symptom} po nachlazení?",
        "Ráno jsem se probudil a mám {symptom} a {symptom2}. Je to něco vážného?",
        "Mám přestat brát {drug}, když mám {symptom}?",
    ],
    ("pl", "health"): [
        "Od {n} dni mam {symptom}. Czy powinienem iść do lekarza?",
        "Czy mogę brać {drug} razem z {drug2}?",
        "Jaka jest zwykła dawka leku {drug} dla dorosłego, który ma {symptom}?",
        "Moje dziecko ma {symptom}, zaczęło się {day}. Co mam robić?",
        "Czy {symptom} może być skutkiem ubocznym leku {drug}?",
        "Jak długo zwykle trwa {symptom} po przeziębieniu?",
        "Obudziłem się i mam {symptom} oraz {symptom2}. Czy to coś poważnego?",
        "Czy powinienem przestać brać {drug}, jeśli mam {symptom}?",
    ],
    ("en", "code"): [
        "How do I read {thing} in {lang}? My version throws {err}.",
        "Why does my {lang} program fail with {err} when I parse {thing}?",
        "Write a function in {lang} that sorts {thing} by date.",
        "What is the fastest way to cache {thing} in {lang}?",
        "How do I write {thing} for my {lang} service that returns {n} items?",
        "My {lang} code gets {err} after {n} requests. How do I debug it?",
        "Can you explain how to stream {thing} in {lang} without loading it all into memory?",
        "Convert this {lang} loop over {thing} to use async and await.",
    ],
    ("cs", "code"): [
        "Jak v {lang} načtu {thing}? Moje verze hází {err}.",
        "Proč můj program v {lang} padá na {err}, když parsuji {thing}?",
        "Napiš funkci v {lang}, která seřadí {thing} podle data.",
        "Jaký je nejrychlejší způsob, jak v {lang} cachovat {thing}?",
        "Jak napíšu {thing} pro svou službu v {lang}, která vrací {n} položek?",
        "Můj kód v {lang} dostane {err} po {n} požadavcích. Jak to mám ladit?",
        "Vysvětlíš mi, jak v {lang} streamovat {thing}, aniž bych to celé načetl do paměti?",
        "Přepiš tuhle smyčku v {lang} přes {thing} na async a await.",
    ],
    ("pl", "code"): [
        "Jak w {lang} wczytać {thing}? Moja wersja rzuca {err}.",
        "Dlaczego mój program w {lang} kończy się błędem {err}, gdy parsuję {thing}?",
        "Napisz funkcję w {lang}, która posortuje {thing} według daty.",
        "Jaki jest najszybszy sposób, żeby w {lang} cache'ować {thing}?",
        "Jak napisać {thing} dla mojej usługi w {lang}, która zwraca {n} elementów?",
        "Mój kod w {lang} dostaje {err} po {n} zapytaniach. Jak to debugować?",
        "Wyjaśnisz, jak w {lang} strumieniować {thing} bez wczytywania wszystkiego do pamięci?",
        "Przepisz tę pętlę w {lang} po {thing} na async i await.",
    ],
}
OPENERS = {"en": ["", "", "Hi, ", "Hello! ", "Please help: ", "Quick question. "],
           "cs": ["", "", "Dobrý den, ", "Ahoj, ", "Prosím o radu: ", "Rychlá otázka. "],
           "pl": ["", "", "Dzień dobry, ", "Cześć, ", "Proszę o pomoc: ", "Szybkie pytanie. "]}
CLOSERS = {"en": ["", "", " Thanks.", " Thank you in advance!", " It is urgent."],
           "cs": ["", "", " Díky.", " Předem děkuji!", " Je to naléhavé."],
           "pl": ["", "", " Dzięki.", " Z góry dziękuję!", " To pilne."]}


def fill(template: str, lang: str, rng: random.Random) -> str:
    s = SLOTS[lang]
    vals = {k: rng.choice(v) for k, v in s.items()}
    vals["drug2"] = rng.choice([d for d in s["drug"] if d != vals["drug"]])
    vals["symptom2"] = rng.choice([d for d in s["symptom"] if d != vals["symptom"]])
    vals["n"] = str(rng.choice([rng.randint(2, 9), rng.randint(10, 99), rng.randint(1000, 99999)]))
    text = template.format(**vals)
    opener = rng.choice(OPENERS[lang])
    if opener:
        keep = opener.endswith((". ", "! ")) or text.startswith("I ")
        text = opener + text if keep else opener + text[0].lower() + text[1:]
    return text + rng.choice(CLOSERS[lang])


def main() -> None:
    rng = random.Random(0)
    rows = []
    for (lang, domain), templates in TEMPLATES.items():
        seen: set[str] = set()
        while len(seen) < PER_CELL:
            text = fill(rng.choice(templates), lang, rng)
            if text not in seen:
                seen.add(text)
                rows.append({"text": text, "lang": lang, "domain": domain})
    rng.shuffle(rows)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} requests to {OUT}")


if __name__ == "__main__":
    main()
