"""Hand-written detection rules: multilingual (en/cs/pl/sl) regular expressions grouped by attack category,
and a counter of chat-template control tokens.

Patterns run on `normalize(text)`: NFKC, lowercased, diacritics and zero-width characters removed
("Ignoruj předchozí" -> "ignoruj predchozi"), whitespace collapsed, so one pattern covers text written with
or without diacritics and full-width or zero-width tricks. A rule hit is a feature of the classifier (its
weight is learned), not a verdict: "ignore the previous exercise" and "ignore all previous instructions"
differ in more than one word.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

# Chat-template control strings of the common families (ChatML, Llama 2/3, Gemma, Phi, Mistral, Zephyr).
CONTROL_TOKENS = (
    "<|im_start|>", "<|im_end|>", "<|im_sep|>", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
    "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|python_tag|>", "<|endoftext|>", "<|system|>", "<|user|>",
    "<|assistant|>", "<|end|>", "<start_of_turn>", "<end_of_turn>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>",
    "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[AVAILABLE_TOOLS]", "[TOOL_CALLS]", "[TOOL_RESULTS]",
    "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
)
_CONTROL_RE_CACHE: dict[tuple[str, ...], re.Pattern] = {}

_DROP = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
_FOLD = str.maketrans({"ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ß": "ss", "ø": "o", "æ": "ae"})
_MARKS = re.compile(r"[\u0300-\u036f]")
_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lowercase, diacritics and zero-width characters removed, whitespace collapsed (offsets are not kept)."""
    t = unicodedata.normalize("NFKD", text.translate(_DROP).translate(_FOLD))
    return _SPACE.sub(" ", _MARKS.sub("", t)).lower().strip()


def count_control_tokens(text: str, extra: tuple[str, ...] | list[str] = ()) -> Counter:
    """How often each control-token string (the common template markers plus `extra`, e.g. a tokenizer's
    `all_special_tokens`) occurs in `text`. Counted on the raw text: these strings are exact."""
    toks = tuple(sorted({*CONTROL_TOKENS, *(t for t in extra if t and len(t) > 2)}, key=len, reverse=True))
    pat = _CONTROL_RE_CACHE.get(toks)
    if pat is None:
        pat = _CONTROL_RE_CACHE[toks] = re.compile("|".join(map(re.escape, toks)))
    return Counter(m.group(0) for m in pat.finditer(text))


def tokenizer_special_tokens(tok) -> list[str]:
    """The special tokens of a tokenizer (what must stay data in user content and retrieved text)."""
    specials = list(getattr(tok, "all_special_tokens", []) or [])
    added = getattr(tok, "added_tokens_decoder", None) or {}
    specials += [str(getattr(t, "content", t)) for t in added.values() if getattr(t, "special", False)]
    return sorted(set(specials))


# ----------------------------------------------------------------------------------------- the rules
_S = r"[^.!?\n]"  # inside one sentence
CATEGORIES = ("instruction_override", "roleplay_jailbreak", "prompt_extraction", "delimiter_injection",
              "indirect_injection", "exfiltration", "encoded_payload", "control_tokens")

_RULES: dict[str, dict[str, list[str]]] = {
    "instruction_override": {
        "en": [
            rf"\b(ignore|disregard|forget|override|bypass|skip|abandon|drop)\b{_S}{{0,40}}\b(previous|prior|above|earlier|preceding|original|initial|all|your|system)\b{_S}{{0,30}}\b(instructions?|directions?|directives?|rules|guidelines|prompts?|programming|constraints|polic(y|ies))\b",
            r"\b(new|updated) (instructions|rules|directives) (override|replace|supersede)",
            r"\byour (new|only|real) (task|job|goal) (is|now)\b",
            r"\b(stop|quit) (following|obeying) (your|the) (rules|guidelines|instructions|policies)",
            r"\bdo not (obey|follow) your (original|previous|initial|system)",
            r"\b(instructions|prompt|rules) (have|has) been (updated|changed|cancell?ed|revoked|replaced)",
            r"\bprevious (prompt|instructions?) (is|are|was|were) (cancell?ed|void|revoked)",
            r"\b(rules|restrictions|constraints|limitations|limits|guidelines|policies|safeguards)\b.{0,40}\b(no longer (apply|count|matter)|(are|were) (now )?(lifted|void|removed|switched off|disabled))",
            r"\bnot bound by\b",
            r"\b(drop|disable|turn off|switch off) (your|all|the) (safeguards|safety|filters|guardrails)",
        ],
        "cs": [
            rf"\b(ignoruj\w*|zapomen\w*|nevsimej\w*|prestan\w*|preskoc\w*|obejdi\w*|zrus\w*|neposlouchej\w*|nerid\w*)\b{_S}{{0,40}}\b(predchozi|drivejsi|puvodni|dosavadni|vyse|vsechn\w*|vse|sv\w*|tv\w*|systemov\w*|bezpecnostni)\b{_S}{{0,30}}\b(instrukc\w*|pokyn\w*|pravidl\w*|zasad\w*|prikaz\w*|prompt\w*|omezeni)",
            r"\bnove (pokyny|instrukce|prikazy) rusi\b",
            r"\btvuj (novy|jediny|skutecny) ukol\b",
            r"\b(predchozi|puvodni) (zadani|prompt|pokyny|instrukce) (je|jsou|byl\w*) zrusen",
            r"\b(aktualizoval\w*|zmenil\w*) (tve|tvoje) (instrukce|pokyny)",
        ],
        "pl": [
            rf"\b(zignoruj\w*|ignoruj\w*|zapomnij\w*|pomin\w*|nie zwazaj|przestan\w*|obejdz\w*|anuluj\w*|nie sluchaj)\b{_S}{{0,40}}\b(poprzedni\w*|wczesniejsz\w*|powyzsz\w*|pierwotn\w*|dotychczasow\w*|wszystk\w*|swoj\w*|twoj\w*|systemow\w*|bezpieczenstwa)\b{_S}{{0,30}}\b(instrukcj\w*|polecen\w*|zasad\w*|regul\w*|wytyczn\w*|wskazow\w*|prompt\w*|ograniczen\w*)",
            r"\bnowe (polecenia|instrukcje) zastepuja\b",
            r"\btwoje (nowe|jedyne|prawdziwe) zadanie\b",
            r"\b(poprzedni|pierwotny) (prompt|polecenie) jest anulowan",
            r"\bzaktualizowal\w* twoje (instrukcje|polecenia)",
        ],
        "sl": [
            rf"\b(prezri\w*|ignoriraj\w*|pozabi\w*|ne upostevaj|nehaj|preskoci\w*|zaobidi\w*|preklici\w*|ne ubogaj)\b{_S}{{0,40}}\b(prejsnj\w*|predhodn\w*|zgornj\w*|prvotn\w*|dosedanj\w*|vs\w*|svoj\w*|tvoj\w*|sistemsk\w*|varnostn\w*)\b{_S}{{0,30}}\b(navodil\w*|ukaz\w*|pravil\w*|smernic\w*|poziv\w*|instrukcij\w*|omejit\w*)",
            r"\bnova navodila razveljavijo\b",
            r"\btvoja (nova|edina|prava) naloga\b",
            r"\bprejsnji (poziv|ukaz) je preklican",
            r"\bposodobil\w* tvoja navodila",
        ],
    },
    "roleplay_jailbreak": {
        "en": [
            r"\b(you are|you're) (now )?(dan|an? (unrestricted|unfiltered|uncensored|jailbroken) \w+|no longer an? (assistant|ai))\b",
            r"\bas dan\b|\bdo anything now\b",
            r"\b(you are|you're) (now )?in developer mode\b",
            rf"\b(pretend|imagine|act as if|act like|roleplay as|role-play as|play the role of)\b{_S}{{0,40}}\b(no|without|any)\b{_S}{{0,20}}\b(filters?|restrictions?|rules|limits|guidelines|ethics|censorship)\b",
            r"\bact as an? (jailbroken|unrestricted|uncensored|unfiltered)\b",
            r"\bjailbr(eak|oken)\b",
            r"\b(uncensored|unrestricted|unfiltered) (persona|mode|model|ai|version|assistant)\b",
            r"\bstay in character\b",
            r"\bnever refuses?\b",
            r"\b(with|has|have) (no|zero) (rules|restrictions|limits|guidelines|filters|ethic\w*)\b",
            r"\b(alter ego|evil (twin|version)|rogue ai)\b",
        ],
        "cs": [
            rf"\b(predstirej\w*|predstav si|hraj roli|chovej se jako|jsi ted|uz nejsi)\b{_S}{{0,60}}\b(bez (jakychkoli |zadnych )?(omezeni|filtr\w*|pravidel|etiky|cenzury)|jailbreak\w*)",
            r"\brezim\w* vyvojare\b.{0,40}\bneplat",
            r"\bbez (jakychkoli |zadnych )?(pravidel|omezeni|filtru|etiky|zasad)\b",
            r"\b(omezeni|pravidla|zasady|ochrany)\b.{0,40}\b(uz neplati|jsou (ted )?zrusen\w*|jsou vypnut\w*)",
            r"\bzustan v roli\b", r"\bnikdy nic neodmitne\b", r"\bnecenzurovan\w*", r"\bjsi dan\b|\bjako dan\b",
        ],
        "pl": [
            rf"\b(udawaj\w*|wyobraz sobie|wciel sie|zachowuj sie jak|jestes teraz|nie jestes juz)\b{_S}{{0,60}}\b(bez (zadnych )?(ograniczen|filtrow|zasad|regul|etyki|cenzury)|jailbreak\w*)",
            r"\btryb\w* dewelopera\b.{0,40}\bnie obowiazuj",
            r"\bbez (zadnych )?(zasad|ograniczen|filtrow|etyki|regul)\b",
            r"\b(ograniczenia|zasady|reguly|zabezpieczenia)\b.{0,40}\b(juz nie obowiazuj\w*|zostaly zniesione|sa wylaczone)",
            r"\bnie wychodz z roli\b", r"\bniczego nie odmawia\b", r"\bnieocenzurowan\w*", r"\bjestes dan\b|\bjako dan\b",
        ],
        "sl": [
            rf"\b(pretvarjaj se|predstavljaj si|igraj vlogo|obnasaj se kot|zdaj si|nisi vec)\b{_S}{{0,60}}\b(brez (kakrsnih koli |nobenih )?(omejitev|filtrov|pravil|etike|cenzure)|jailbreak\w*)",
            r"\bnacin\w* za razvijalce\b.{0,40}\bne veljajo",
            r"\bbrez (kakrsnih koli |nobenih )?(pravil|omejitev|filtrov|etike|smernic)\b",
            r"\b(omejitve|pravila|zascite)\b.{0,40}\b(ne veljajo vec|so (zdaj )?odpravljen\w*|so izklopljen\w*)",
            r"\bostani v vlogi\b", r"\bnikoli nicesar ne zavrne\b", r"\bnecenzuriran\w*", r"\bsi dan\b|\bkot dan\b",
        ],
    },
    "prompt_extraction": {
        "en": [
            rf"\b(print|show|reveal|tell|repeat|output|display|give|copy|dump|leak|quote|write out)\b{_S}{{0,40}}\b(system (prompt|message)|(initial|original|hidden|secret|confidential|first|full|configuration) (prompt|instructions|message|directives)|instructions you (were given|are following))\b",
            r"\brepeat (the|all) (text|words|everything) (above|before)\b",
            r"\b(everything|all text|the text) (before|above) (this|my) (message|line)\b",
            r"\bwhat (were|are) your (initial|original|first|system|hidden) (instructions|prompt|rules)\b",
            r"\b(prompt|instructions|message)\b.{0,20}\b(verbatim|word for word)\b",
        ],
        "cs": [
            rf"\b(vypis\w*|ukaz\w*|prozrad\w*|rekni|zopakuj\w*|zkopiruj\w*|odcituj\w*)\b{_S}{{0,40}}\b(systemov\w* (prompt\w*|zprav\w*)|(uvodni|puvodni|skryt\w*|duvern\w*|tajn\w*|konfiguracni) (prompt\w*|instrukc\w*|pokyn\w*|zprav\w*))",
            r"\b(text|vsechno|vse) (nad|pred) (touto|tou|mou) zpravou\b",
            r"\bjake (byly|jsou) (tve|tvoje) (uvodni|puvodni|prvni) (instrukce|pokyny)\b",
            r"\b(prompt\w*|instrukc\w*|pokyn\w*|zprav\w*)\b.{0,20}\b(slovo od slova|doslova)\b",
        ],
        "pl": [
            rf"\b(wypisz|pokaz|ujawnij|podaj|powtorz|skopiuj|zacytuj)\b{_S}{{0,40}}\b(prompt\w* systemow\w*|wiadomosc\w* systemow\w*|(poczatkow\w*|pierwotn\w*|ukryt\w*|poufn\w*|tajn\w*|konfiguracyjn\w*) (prompt\w*|instrukcj\w*|polecen\w*|wiadomosc\w*))",
            r"\b(tekst|wszystko) (powyzej|przed ta wiadomoscia)\b",
            r"\bjakie (byly|sa) twoje (poczatkowe|pierwotne|pierwsze) (instrukcje|polecenia)\b",
            r"\b(prompt\w*|instrukcj\w*|polecen\w*|wiadomosc\w*)\b.{0,25}\b(slowo w slowo|doslownie)\b",
        ],
        "sl": [
            rf"\b(izpisi|pokazi|razkrij|povej|ponovi|kopiraj|citiraj)\b{_S}{{0,40}}\b(sistemsk\w* (poziv\w*|sporocil\w*)|(zacetn\w*|prvotn\w*|skrit\w*|zaupn\w*|tajn\w*|konfiguracijsk\w*) (poziv\w*|navodil\w*|sporocil\w*))",
            r"\b(besedilo|vse) (nad|pred) tem sporocilom\b",
            r"\bkaksna so bila tvoja (zacetna|prvotna|prva) navodila\b",
            r"\b(poziv\w*|navodil\w*|sporocil\w*)\b.{0,20}\b(besedo za besedo|dobesedno)\b",
        ],
    },
    "delimiter_injection": {
        "any": [
            r"</?(system|user|assistant|sys)\s*>",
            r"\[/?inst\]|<</?sys>>",
            r"(^|\n| )#{2,}\s*(system|systemu|sistem)\b\s*:",
            r"\"role\"\s*:\s*\"(system|developer)\"",
            r"\bsystem (override|update|prompt update)\b|\bprepsani systemu\b|\bnadpisanie systemu\b|\bpreglasitev sistema\b",
            r"\b(end of (the )?(user )?(input|prompt)|konec vstupu\w*|koniec danych|konec uporabnikovega vnosa)\b",
        ],
    },
    "indirect_injection": {
        "en": [r"\b(if you are|note to|message for|attention) (an? |the |any )?(ai|language model|llm|ai assistant|assistant|chatbot|ai agents?)\b",
               r"\bai (agents|assistants|models) (must|should)\b"],
        "cs": [r"\b(pokud jsi|poznamka pro|zprava pro) (\w+ )?(ai|jazykovy model|asistent\w*|chatbot\w*)\b",
               r"\bai (agenti|asistenti|modely) (musi|maji)\b"],
        "pl": [r"\b(jesli jestes|uwaga dla|wiadomosc dla) (\w+ )?(ai|modelem jezykowym|asystent\w*|chatbot\w*)\b",
               r"\bagenci ai musza\b"],
        "sl": [r"\b(ce si|opomba za|sporocilo za) (\w+ )?(ai|jezikovni model|asistent\w*|klepetaln\w*)\b",
               r"\bai agenti morajo\b"],
    },
    "exfiltration": {
        "any": [rf"\b(send|forward|post|upload|email|posli|preposli|wyslij|przeslij|poslji)\b{_S}{{0,50}}\b(conversation|chat|history|konverzac\w*|rozmow\w*|pogovor\w*|histori\w*)\b{_S}{{0,30}}(@|https?://)"],
    },
    "encoded_payload": {
        "any": [rf"\b(decode|dekoduj\w*|zdekoduj\w*|dekodiraj\w*)\b{_S}{{0,60}}\b(follow|obey|execute|do what|ridi|udelej|wykonaj|zrob|sledi|naredi|izvedi)\w*"],
    },
}


@dataclass(frozen=True)
class RuleHit:
    category: str
    lang: str
    pattern: str
    snippet: str


def _compile() -> list[tuple[str, str, re.Pattern]]:
    return [(cat, lang, re.compile(p)) for cat, by_lang in _RULES.items() for lang, pats in by_lang.items()
            for p in pats]


COMPILED = _compile()


def match_rules(norm_text: str, languages: tuple[str, ...] | None = None) -> list[RuleHit]:
    """Rule hits in an already-normalized text; `languages` restricts the language-specific patterns."""
    hits = []
    for cat, lang, pat in COMPILED:
        if languages is not None and lang != "any" and lang not in languages:
            continue
        m = pat.search(norm_text)
        if m:
            hits.append(RuleHit(cat, lang, pat.pattern, m.group(0)[:80]))
    return hits
