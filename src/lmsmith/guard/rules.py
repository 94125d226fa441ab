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


def _control_re(extra: tuple[str, ...] | list[str] = ()) -> re.Pattern:
    toks = tuple(sorted({*CONTROL_TOKENS, *(t for t in extra if t and len(t) > 2)}, key=len, reverse=True))
    pat = _CONTROL_RE_CACHE.get(toks)
    if pat is None:
        pat = _CONTROL_RE_CACHE[toks] = re.compile("|".join(map(re.escape, toks)))
    return pat


def count_control_tokens(text: str, extra: tuple[str, ...] | list[str] = ()) -> Counter:
    """How often each control-token string (the common template markers plus `extra`, e.g. a tokenizer's
    `all_special_tokens`) occurs in `text`. Counted on the raw text: these strings are exact."""
    return Counter(m.group(0) for m in _control_re(extra).finditer(text))


def strip_control_tokens(text: str) -> str:
    """`text` with the control-token strings replaced by a space: the classifier's n-grams do not see them
    (their evidence is the `control_tokens` rule weight, counted once), so a user asking what `<|im_start|>`
    means is not scored like a forged system turn."""
    return _control_re().sub(" ", text)


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
            r"<</?sys>>",  # [INST] / [/INST] are control tokens, counted (and weighted) as such
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


# v2 families (issue 23 follow-up): phrasings that generalise beyond "ignore previous instructions": rules
# declared void/null/no longer valid, discarding verbs on "your programming/configuration", "this message
# outranks your rules", "obey only me", "as if you never had rules", developer/admin authority claims,
# "what were you given before my first message", role markup in YAML/XML/markdown, notes to "any AI reading".
_NOUN_EN = r"(rules?|instructions?|guidelines|directives|configuration|setup|programming|polic(y|ies)|constraints|restrictions|guidance|training|system prompt|prompt)"
_NOUN_CS = r"(pravidl\w*|instrukc\w*|pokyn\w*|zasad\w*|konfigurac\w*|nastaveni|omezeni|direktiv\w*|program\w*|vedeni|trenink\w*|prompt\w*)"
_NOUN_PL = r"(zasad\w*|regul\w*|instrukcj\w*|polecen\w*|wytyczn\w*|konfiguracj\w*|ustawien\w*|ograniczen\w*|dyrektyw\w*|program\w*|trening\w*|wskazow\w*|prompt\w*)"
_NOUN_SL = r"(pravil\w*|navodil\w*|ukaz\w*|smernic\w*|konfiguracij\w*|nastavit\w*|omejit\w*|direktiv\w*|program\w*|ucenj\w*|politik\w*|napotk\w*|poziv\w*)"
_V2: dict[str, dict[str, list[str]]] = {
    "instruction_override": {
        "en": [
            rf"\b(your|you were given|given to you|you started with)\b{_S}{{0,30}}\b{_NOUN_EN}\b{_S}{{0,40}}\b(void|null|invalid|no longer (valid|apply|applies|count|matter)|(do|does|did)(n't| not) (apply|count|matter)|never existed|cancell?ed|suspended|revoked|lifted|removed|disabled|switched off)\b",
            rf"\b(cancel|void|nullify|revoke|reset|wipe|erase|discard|throw away|set aside|unlearn|disobey|suspend|deactivate|abandon|pay no attention to)\b{_S}{{0,30}}\b(your|prior|previous|earlier|original|initial|current|existing)\b{_S}{{0,20}}\b{_NOUN_EN}\b",
            rf"\b(outranks?|supersedes?|takes? (priority|precedence) over|overrides?|overrules?)\b{_S}{{0,20}}\b(your|all|any|every|previous|prior|earlier)\b{_S}{{0,20}}\b{_NOUN_EN}\b",
            r"\bthis (message|instruction|note|request) (outranks|overrides|supersedes|overrules|takes precedence|has (top |the highest )?priority)\b",
            r"\b(obey|listen to|follow) only me\b|\bonly (obey|listen to|follow) me\b",
            rf"\b(as if|as though)\b{_S}{{0,40}}\b{_NOUN_EN}\b{_S}{{0,30}}\b(never existed|did not exist|do(es)? not exist|were never|was never)\b",
            rf"\b(as if|as though) you (had |have )?never (been )?(given|received|had)\b{_S}{{0,20}}\b{_NOUN_EN}\b",
            r"\b(i am|i'm|this is) (your|the) (developer|administrator|admin|creator|operator|owner|system administrator)s?\b.{0,60}\b(disable|authori[sz]e|allow|permit|override|ignore|turn off|remove|lift|unlock)",
            r"\b(the|your) (real|actual|true|new) (task|job|goal|purpose|mission) (is|now)\b",
        ],
        "cs": [
            rf"\b(tv\w*|sv\w*|vase|vasi|jsi dostal\w*)\b{_S}{{0,30}}\b{_NOUN_CS}{_S}{{0,40}}\b(neplat\w*|zrusen\w*|neexist\w*|nepocita|nevztahuj\w*|pozastaven\w*|odvolan\w*|vypnut\w*)",
            rf"\b(povazuj|ber|pokladej)\b{_S}{{0,50}}\bza (neplatn\w*|zrusen\w*|neexistujic\w*)",
            rf"\b(zrus\w*|anuluj\w*|odvolej|resetuj\w*|smaz\w*|vymaz\w*|zahod\w*|odloz\w*|neposlechni|pozastav\w*|deaktivuj\w*|opust\w*|nevsimej si)\b{_S}{{0,30}}\b(sv\w*|tv\w*|predchozi|drivejsi|puvodni|pocatecni|soucasn\w*|stavajici|dosavadni)\b{_S}{{0,20}}\b{_NOUN_CS}",
            r"\b(tato|tahle|tohle) (zprava|instrukce|poznamka|pokyn)\b.{0,20}\b(ma (nejvyssi )?(prednost|prioritu)|prebiji|nahrazuje|rusi)",
            rf"\b(ma prednost pred|prebiji|nahrazuje|rusi)\b{_S}{{0,20}}\b(tv\w*|vsechn\w*|predchozi|drivejsi)\b{_S}{{0,20}}\b{_NOUN_CS}",
            r"\bposlouchej (jen|pouze|jenom) (mne|me)\b",
            rf"\bjako (by|bys|kdyby|kdybys)\b{_S}{{0,50}}\b{_NOUN_CS}",
            r"\bjsem (tvuj|vas) (vyvojar|administrator|spravce|tvurce|provozovatel)\b",
            r"\b(skutecny|pravy|opravdovy|novy) ukol (je|zni)\b",
        ],
        "pl": [
            rf"\b(twoj\w*|swoj\w*|wasz\w*|dostal\w*)\b{_S}{{0,30}}\b{_NOUN_PL}{_S}{{0,40}}\b(niewazn\w*|anulowan\w*|nie obowiazuj\w*|nie istnie\w*|nie dotycz\w*|zawieszon\w*|odwolan\w*|wylaczon\w*|zniesion\w*|zdjet\w*|uniewaznion\w*)",
            rf"\b(uznaj|traktuj|potraktuj)\b{_S}{{0,50}}\b(za|jako) (niewazn\w*|anulowan\w*|niebyl\w*|nieistniejac\w*)",
            rf"\b(anuluj\w*|odwolaj|zresetuj\w*|resetuj\w*|wyczysc\w*|usun\w*|wymaz\w*|wyrzuc\w*|odloz\w*|oducz sie|zawies\w*|dezaktywuj\w*|porzuc\w*|nie sluchaj|nie zwracaj uwagi na)\b{_S}{{0,30}}\b(swoj\w*|twoj\w*|poprzedni\w*|wczesniejsz\w*|pierwotn\w*|poczatkow\w*|obecn\w*|dotychczasow\w*)\b{_S}{{0,20}}\b{_NOUN_PL}",
            r"\b(ta|niniejsza) (wiadomosc|instrukcja|notatka|prosba)\b.{0,20}\b(ma (najwyzszy )?(pierwszenstwo|priorytet)|zastepuje|uniewaznia|anuluje)",
            rf"\b(ma pierwszenstwo przed|zastepuje|uniewaznia|anuluje)\b{_S}{{0,20}}\b(twoj\w*|wszystk\w*|poprzedni\w*|wczesniejsz\w*)\b{_S}{{0,20}}\b{_NOUN_PL}",
            r"\bsluchaj (tylko|wylacznie|jedynie) mnie\b",
            rf"\bjak(by|bys|gdyby|gdybys)\b{_S}{{0,50}}\b{_NOUN_PL}",
            r"\bjestem (twoim|waszym) (programista|deweloperem|administratorem|tworca|operatorem)\b",
            r"\b(prawdziwe|wlasciwe|nowe) zadanie (to|brzmi|jest)\b",
        ],
        "sl": [
            rf"\b(tvoj\w*|svoj\w*|vas\w*|si dobil\w*)\b{_S}{{0,30}}\b{_NOUN_SL}{_S}{{0,40}}\b(neveljavn\w*|preklican\w*|ne velja\w*|ne obstaja\w*|razveljavljen\w*|odpravljen\w*|izklopljen\w*|ustavljen\w*)",
            rf"\b(obravnavaj|stej|smatraj|imej)\b{_S}{{0,50}}\b(kot|za) (neveljavn\w*|preklican\w*|neobstojec\w*|nicn\w*)",
            rf"\b(preklici\w*|razveljavi\w*|ponastavi\w*|izbrisi\w*|zavrzi\w*|odlozi\w*|ne ubogaj|ustavi\w*|deaktiviraj\w*|opusti\w*|ne meni se za)\b{_S}{{0,30}}\b(svoj\w*|tvoj\w*|prejsnj\w*|predhodn\w*|prvotn\w*|zacetn\w*|trenutn\w*|dosedanj\w*|obstojec\w*)\b{_S}{{0,20}}\b{_NOUN_SL}",
            r"\b(to|tole) (sporocilo|navodilo|opombo|zahteva)\b.{0,20}\b(ima (najvisjo )?(prednost|prioriteto)|preglasi|nadomesti|razveljavi)",
            rf"\b(ima prednost pred|preglasi|nadomesti|razveljavi)\b{_S}{{0,20}}\b(tvoj\w*|vs\w*|prejsnj\w*|predhodn\w*)\b{_S}{{0,20}}\b{_NOUN_SL}",
            r"\bubogaj (samo|le|zgolj) mene\b",
            rf"\bkot da\b{_S}{{0,50}}\b{_NOUN_SL}",
            r"\bsem (tvoj|vas) (razvijalec|skrbnik|administrator|ustvarjalec|upravljavec)\b",
            r"\b(prava|resnicna|nova) naloga je\b",
        ],
    },
    "prompt_extraction": {
        "en": [
            rf"\b(repeat|print|paste|output|show|reveal|translate|spell out|write out|write down|quote|describe|list|dump|share|copy|summari[sz]e)\b{_S}{{0,30}}\byour\b{_S}{{0,20}}\b(instructions|preamble|configuration|setup|system (prompt|message)|initial prompt|prompt|rules|guidelines|context|directives)\b",
            rf"\b(what|which)\b{_S}{{0,20}}\b(text|instructions|rules|message|prompt|guidelines|directives)\b{_S}{{0,30}}\b(were you|did you (get|receive)|you (were|got))\b{_S}{{0,30}}\b(given|told|before|at the start|configured|set up|from)\b",
            r"\b(what|everything|anything) (did )?(the|your) (operator|developers?|creators?|admin\w*) (wrote|write|told|tell|said|say|gave|give) (to )?you\b",
            rf"\b(repeat|print|paste|output|show|reveal|quote|write|tell|what)\b{_S}{{0,60}}\b(before (my|our|this|i) |at the (very )?(start|beginning) of (this|our|the) (conversation|chat|session|context))",
        ],
        "cs": [
            rf"\b(zopakuj\w*|vypis\w*|vloz\w*|ukaz\w*|prozrad\w*|preloz\w*|napis\w*|odcituj\w*|popis\w*|vyjmenuj\w*|sdilej\w*|zkopiruj\w*|shrn\w*)\b{_S}{{0,30}}\b(sv\w*|tv\w*)\b{_S}{{0,20}}\b(instrukc\w*|preambul\w*|konfigurac\w*|nastaveni|systemov\w* prompt\w*|prompt\w*|pravidl\w*|zasad\w*|kontext\w*|pokyn\w*)",
            rf"\b(jak\w*|co)\b{_S}{{0,20}}\b(text\w*|instrukc\w*|pravidl\w*|pokyn\w*|zprav\w*|prompt\w*)\b{_S}{{0,30}}\b(jsi dostal\w*|ti (dal\w*|napsal\w*|rekl\w*|zadal\w*))",
            r"\bco ti (provozovatel|vyvojar\w*|tvurc\w*|administrator|spravce) (napsal\w*|rekl\w*|zadal\w*|dal\w*)",
            r"\b(pred (mou|nasi|touto) (prvni )?(zpravou|otazkou|konverzaci)|na (samem |uplnem )?zacatku (teto|nasi|tohoto) (konverzace|chatu|relace))",
        ],
        "pl": [
            rf"\b(powtorz|wypisz|wklej|pokaz|ujawnij|przetlumacz|napisz|zacytuj|opisz|wymien|udostepnij|skopiuj|streszcz|podaj|przepisz)\b{_S}{{0,30}}\b(swoj\w*|twoj\w*)\b{_S}{{0,20}}\b(instrukcj\w*|preambul\w*|konfiguracj\w*|ustawien\w*|prompt\w*|zasad\w*|regul\w*|kontekst\w*|polecen\w*|wytyczn\w*)",
            rf"\b(jaki\w*|co)\b{_S}{{0,20}}\b(tekst\w*|instrukcj\w*|zasad\w*|regul\w*|polecen\w*|wiadomosc\w*|prompt\w*)\b{_S}{{0,30}}\b(dostal\w*|otrzymal\w*|ci (dal\w*|napisal\w*|powiedzial\w*|przekazal\w*))",
            r"\bco ci (operator|programist\w*|tworc\w*|administrator|deweloper\w*) (napisal\w*|powiedzial\w*|przekazal\w*|dal\w*)",
            r"\b(przed (moja|nasza|ta) (pierwsza )?(wiadomoscia|rozmowa|pytaniem)|na (samym )?poczatku (tej|naszej) (rozmowy|sesji|konwersacji))",
        ],
        "sl": [
            rf"\b(ponovi|izpisi|prilepi|pokazi|razkrij|prevedi|napisi|citiraj|opisi|nastej|deli|kopiraj|povzemi|povej)\b{_S}{{0,30}}\b(svoj\w*|tvoj\w*)\b{_S}{{0,20}}\b(navodil\w*|preambul\w*|konfiguracij\w*|nastavit\w*|poziv\w*|pravil\w*|kontekst\w*|ukaz\w*|smernic\w*)",
            rf"\b(kaksn\w*|kaj)\b{_S}{{0,20}}\b(besedil\w*|navodil\w*|pravil\w*|ukaz\w*|sporocil\w*|poziv\w*)\b{_S}{{0,30}}\b(si dobil\w*|si prejel\w*|ti (je|so) (dal\w*|napisal\w*|rekl\w*|povedal\w*))",
            r"\bkaj (ti je|so ti) (upravljavec|razvijalc\w*|ustvarjalc\w*|skrbnik) (napisal\w*|rekl\w*|povedal\w*|dal\w*)",
            r"\b(pred (mojim|najinim|tem) (prvim )?(sporocilom|vprasanjem|pogovorom)|na (samem )?zacetku (tega|najinega) (pogovora|klepeta|seje))",
        ],
    },
    "delimiter_injection": {
        "any": [
            r"</?(instructions?|instrukce|instrukcje|navodila|pokyny|polecenia|admin|system_?prompt|developer|important)(\s[^>]{0,40})?>",
            r"\brole\s*:\s*(system|developer)\b",
            r"\[(system|admin|developer)\]\s*[(:]",
            r"<!--[^>]{0,40}\b(system\w*|sistem\w*|instruc\w*|instrukc\w*|navodil\w*|pokyn\w*|polecen\w*|wskazow\w*|ai|llm|assistant|asistent\w*|asystent\w*|model\w*|chatbot\w*)\b",
            r"\b(override|sudo|debug|god|admin|master) (mode|code)\b{_S}{0,40}\b(accepted|activated|enabled|granted|on|prijat\w*|aktivovan\w*|zaakceptowan\w*|aktywowan\w*|sprejet\w*|aktiviran\w*)\b".replace("{_S}", _S),
            r"\b(end of (the )?(document|data|context)|konec (dokumentu|dat|kontextu|dokumenta|podatkov|konteksta)|koniec (dokumentu|danych|kontekstu))\b",
        ],
    },
    "indirect_injection": {
        "en": [
            rf"\b(to|for|attention|note to|message to|p\.?s\.? to) (the |any |every |whatever |all )?(ai|model|language model|llm|assistant|chatbot|ai (assistant|model|system|agent|tool))s?\b{_S}{{0,40}}\b(reading|processing|summari[sz]ing|that reads|that processes|helping)\b",
            rf"\b(any|every|each|whatever|all) (ai|model|language model|llm|assistant|chatbot|agent)s?\b{_S}{{0,50}}\b(must|should|has to|is required to|needs to)\b",
        ],
        "cs": [
            rf"\b(pro |kazd\w* |jakakoli |jakykoli |jakoukoli )(ai|model\w*|jazykov\w* model\w*|asistent\w*|chatbot\w*)\b{_S}{{0,40}}\b(cte|ctou|zpracovav\w*|shrnuj\w*|pomaha\w*|musi)\b",
        ],
        "pl": [
            rf"\b(dla|do) (kazdej |kazdego |dowolnej |dowolnego |jakiejkolwiek )?(ai|sztucznej inteligencji|model\w*|asystent\w*|chatbot\w*)\b{_S}{{0,40}}\b(czyta|przetwarza|streszcza|pomaga|musi|powin\w*)",
            rf"\b(kazd\w*|dowoln\w*) (ai|model\w*|asystent\w*|chatbot\w*)\b{_S}{{0,40}}\b(musi|powin\w*|ma obowiazek)",
        ],
        "sl": [
            rf"\b(za|vsak\w*|katerikoli|katerokoli) (ai|umetno inteligenco|model\w*|asistent\w*|klepetaln\w*)\b{_S}{{0,40}}\b(bere|obdeluje|povzema|pomaga|mora)\b",
        ],
    },
}
for _cat, _by_lang in _V2.items():
    for _lang, _pats in _by_lang.items():
        _RULES[_cat].setdefault(_lang, []).extend(_pats)

# v3 families, written from VALIDATION errors of the v2 model (never from held-out texts): "the prompt that
# defines your behaviour", "the rules the operator gave you", "the prompt you were started with", "whatever
# the operator configured", authority-granted exceptions, safety policy "switched off", "enable your
# unfiltered mode", "everything is allowed", "a chatbot that was never given guidelines", prefix injection.
_V3: dict[str, dict[str, list[str]]] = {
    "instruction_override": {
        "en": [
            r"\b(whatever|anything|everything) (the|your) (operator|developers?|admin\w*|creators?|owner|system)s? (has |have )?(configured|set up|said|told you|wrote|gave you|instructed)",
            rf"\b(operator|developers?|admin\w*|creators?|owner)s?\b{_S}{{0,20}}\b(authori[sz]ed|approved|allowed|permitted|granted)\b{_S}{{0,10}}\b(an? )?(exception|override|you)\b",
            rf"\b(safety|security|content|moderation) (policy|policies|filters?|rules|guidelines|mode|settings?|checks?)\b{_S}{{0,20}}\b(is|are|was|were|has been|have been) (now |temporarily )?(switched off|turned off|disabled|suspended|lifted|removed|off|paused)\b",
            rf"\b(continue|complete|start (your )?(answer|reply|response))\b{_S}{{0,30}}\b(sure|of course|certainly|absolutely)\b{_S}{{0,5}}\bhere('s| is| are)\b",
        ],
        "cs": [
            rf"\b(at|cokoli|cokoliv)\b{_S}{{0,20}}\b(provozovatel|vyvojar|administrator|spravce|tvurc)\w*\b{_S}{{0,20}}\b(nastavil|rekl|napsal|zadal|nakonfiguroval)\w*",
            rf"\b(provozovatel|vyvojar|administrator|spravce)\w*\b{_S}{{0,20}}\b(povolil|schvalil|udelil)\w* (vyjimk\w*|ti)\b",
            rf"\bbezpecnostni (politik\w*|pravidl\w*|filtr\w*|rezim\w*|omezeni|kontrol\w*)\b{_S}{{0,20}}\b(vypnut\w*|zrusen\w*|pozastaven\w*)",
            rf"\b(pokracuj\w*|dopln\w*|zacni (svou )?odpoved\w*)\b{_S}{{0,40}}\b(jasne|samozrejme|jiste|urcite)\b{_S}{{0,5}}\b(tady|zde|takto)\b",
        ],
        "pl": [
            rf"\b(cokolwiek|niezaleznie od tego)\b{_S}{{0,20}}\b(operator|programist|administrator|tworc|deweloper)\w*",
            rf"\b(operator|administrator|programist|deweloper|tworc)\w*\b{_S}{{0,20}}\b(zezwolil|pozwolil|zatwierdzil|udzielil)\w* (na )?(wyjat\w*|ci)\b",
            rf"\b(polityk\w*|zasady|filtry|ograniczenia|kontrol\w*) bezpieczenstwa\b{_S}{{0,30}}\b(wylaczon\w*|zawieszon\w*|zniesion\w*|wstrzyman\w*)",
            rf"\b(kontynuuj|dokoncz|zacznij (swoja )?odpowiedz)\b{_S}{{0,40}}\b(jasne|oczywiscie|pewnie|jasna sprawa)\b{_S}{{0,5}}\b(oto|tak)\b",
        ],
        "sl": [
            rf"\b(karkoli|kar koli)\b{_S}{{0,20}}\b(upravljavec|razvijalec|razvijalci|skrbnik|ustvarjalec|ustvarjalci)\w*",
            rf"\b(upravljavec|skrbnik|razvijalec|administrator|ustvarjalec)\w*\b{_S}{{0,20}}\b(odobril|dovolil|dal)\w* (izjem\w*|ti)\b",
            rf"\bvarnostn\w* (politik\w*|pravil\w*|filtr\w*|omejit\w*|nastavit\w*|preverjanj\w*)\b{_S}{{0,20}}\b(izklopljen\w*|ukinjen\w*|odpravljen\w*|ustavljen\w*|onemogocen\w*)",
            rf"\b(nadaljuj|dokoncaj|zacni (svoj )?odgovor)\b{_S}{{0,40}}\b(seveda|jasno|vsekakor|prav)\b{_S}{{0,5}}\b(tukaj|tako|evo)\b",
        ],
    },
    "roleplay_jailbreak": {
        "en": [
            rf"\b(enable|activate|switch (on|to|into)|turn on|enter|go into)\b{_S}{{0,20}}\b(unfiltered|unrestricted|uncensored|developer|god|jailbreak|dan|no-limits?|debug|evil) mode\b",
            r"\b(everything|anything) is (allowed|permitted)\b",
            rf"\b(simulate|emulate|act as|pretend to be|play|be)\b{_S}{{0,30}}\b(ai|model|chatbot|assistant|bot)\b{_S}{{0,30}}\b(never (been )?(given|had)|without|with no)\b{_S}{{0,20}}\b(guidelines|rules|restrictions|filters|limits|ethics|morals)\b",
            rf"\bwho (ignores|breaks|has no|never follows|doesn't follow|does not follow)\b{_S}{{0,20}}\b(rules|guidelines|restrictions|limits|ethics|polic(y|ies))\b",
        ],
        "cs": [
            rf"\b(zapni|aktivuj|prepni)\w*\b{_S}{{0,20}}\b(nefiltrovan|neomezen|necenzurovan|vyvojarsk)\w* rezim",
            r"\b(vsechno|vse) (je )?dovoleno\b",
            rf"\b(simuluj|hraj|predstiraj|bud)\w*\b{_S}{{0,30}}\b(ai|model\w*|chatbot\w*|asistent\w*|bot\w*)\b{_S}{{0,30}}\b(nikdy nedostal|bez|nema)\w*\b{_S}{{0,20}}\b(zasad|pravidel|omezeni|filtr\w*|etiky)",
            rf"\bktery (ignoruje|porusuje|nema|nerespektuje)\b{_S}{{0,20}}\b(pravidl\w*|zasad\w*|omezeni|etik\w*)",
        ],
        "pl": [
            rf"\b(wlacz|aktywuj|przelacz)\w*\b{_S}{{0,20}}\b(niefiltrowan|nieograniczon|nieocenzurowan|deweloperski)\w* tryb|\btryb\w* (bez ograniczen|niefiltrowan\w*|nieograniczon\w*)",
            r"\bwszystko (jest )?(wolno|dozwolone)\b",
            rf"\b(symuluj|zagraj|udawaj|badz)\w*\b{_S}{{0,30}}\b(ai|model\w*|chatbot\w*|asystent\w*|bot\w*)\b{_S}{{0,30}}\b(nigdy nie dostal|bez|nie ma)\w*\b{_S}{{0,20}}\b(zasad|regul|ograniczen|filtr\w*|etyki)",
            rf"\bktory (ignoruje|lamie|nie ma|nie przestrzega)\b{_S}{{0,20}}\b(zasad\w*|regul\w*|ograniczen\w*|etyk\w*)",
        ],
        "sl": [
            rf"\b(vklopi|aktiviraj|preklopi)\w*\b{_S}{{0,20}}\b(nefiltriran|neomejen|necenzuriran|razvijalsk)\w* nacin",
            r"\bvse je dovoljeno\b",
            rf"\b(simuliraj|igraj|pretvarjaj se|bodi)\w*\b{_S}{{0,30}}\b(ai|model\w*|klepetaln\w*|asistent\w*|bot\w*)\b{_S}{{0,30}}\b(nikoli ni dobil|brez|nima)\w*\b{_S}{{0,20}}\b(pravil|smernic|omejitev|filtr\w*|etike)",
            rf"\bki (ignorira|krsi|nima|ne upostevaj?)\b{_S}{{0,20}}\b(pravil\w*|smernic\w*|omejit\w*|etik\w*)",
        ],
    },
    "prompt_extraction": {
        "en": [
            rf"\b(prompt|instructions|rules|guidelines|text|message)\b{_S}{{0,20}}\b(defines?|governs?|controls?|shapes?|configures?|sets? up)\b{_S}{{0,10}}\byour\b",
            r"\b(operator|developers?|creators?|admin\w*|owner)s? (gave|has given|wrote|told|configured|set up|provided|sent) (to )?you\b",
            rf"\b(prompt|instructions|rules|configuration)\b{_S}{{0,20}}\byou (were|are|have been) (started|launched|initiali[sz]ed|booted|created|configured|set up|given|loaded)\b",
            rf"\b(exact|full|complete|original) (wording|text) of\b{_S}{{0,20}}\b(prompt|instructions|rules|guidelines|setup|configuration)\b",
        ],
        "cs": [
            rf"\b(prompt\w*|instrukc\w*|pravidl\w*|pokyn\w*|text\w*)\b{_S}{{0,20}}\b(urcuj\w*|ridi|definuj\w*|nastavuj\w*)\b{_S}{{0,10}}\b(tve|tvoje|tvuj|tvou)\b",
            rf"\bti (dal\w*|napsal\w*|zadal\w*|poslal\w*)\b{_S}{{0,10}}\b(provozovatel|vyvojar\w*|tvurc\w*|administrator|spravce)",
            rf"\b(prompt\w*|instrukc\w*|pokyn\w*|pravidl\w*)\b{_S}{{0,30}}\b(te|tebe) (spustili|nastavili|nakonfigurovali|inicializovali|vytvorili)",
            rf"\b(presne |puvodni |uplne )?zneni\b{_S}{{0,20}}\b(promptu|instrukci|pokynu|pravidel|zadani)",
        ],
        "pl": [
            rf"\b(prompt\w*|instrukcj\w*|zasad\w*|polecen\w*|tekst\w*)\b{_S}{{0,20}}\b(okresla|definiuje|steruje|ustala|kontroluje)\w*\b{_S}{{0,10}}\b(twoj\w*)\b",
            rf"\b(dal\w*|napisal\w*|przekazal\w*|zadal\w*)\b ci\b{_S}{{0,10}}\b(operator|programist\w*|tworc\w*|administrator|deweloper\w*)",
            rf"\b(prompt\w*|instrukcj\w*|polecen\w*|zasad\w*)\b{_S}{{0,30}}\bcie (uruchomiono|skonfigurowano|ustawiono|zainicjowano|stworzono)",
            rf"\b(dokladne |pierwotne |pelne )?brzmienie\b{_S}{{0,20}}\b(promptu|instrukcji|polecen|zasad)",
        ],
        "sl": [
            rf"\b(poziv\w*|navodil\w*|pravil\w*|besedil\w*)\b{_S}{{0,20}}\b(doloca|usmerja|definira|nastavlja)\w*\b{_S}{{0,10}}\b(tvoj\w*)\b",
            rf"\bti (jih |ga )?(je|so) (dal\w*|napisal\w*|povedal\w*|poslal\w*)\b{_S}{{0,10}}\b(upravljavec|razvijalc\w*|ustvarjalc\w*|skrbnik)",
            rf"\b(poziv\w*|navodil\w*|pravil\w*)\b{_S}{{0,30}}\b(so te|te je) (zagnali|zagnal|nastavili|konfigurirali|ustvarili)",
            rf"\b(natancn\w* |tocn\w* |izvirn\w* )(besedilo|besedilom|zapis)\b{_S}{{0,20}}\b(poziv\w*|navodil|pravil)",
        ],
    },
}
for _cat, _by_lang in _V3.items():
    for _lang, _pats in _by_lang.items():
        _RULES[_cat].setdefault(_lang, []).extend(_pats)

# v4 families, from general knowledge of injection phrasing (written before the held-out run of v4; not from
# held-out or validation texts): "nothing you were told applies", a rule "given to you" declared void,
# "start over / clear your context", "do not tell the user", "when summarising this, ...", transcript and
# heading markup ("Assistant: Sure", "### Instruction:", "BEGIN SYSTEM PROMPT", JSON prompt keys, CDATA breaks).
_V4: dict[str, dict[str, list[str]]] = {
    "instruction_override": {
        "en": [
            rf"\b(nothing|none of (the|what)|no (rule|instruction|guideline)s?)\b{_S}{{0,30}}\byou (were|have been|had been) (configured|programmed|given|told|set up|instructed|trained)\b{_S}{{0,30}}\b(applies|apply|counts|count|matters|holds|is valid)\b",
            rf"\b{_NOUN_EN}\b{_S}{{0,10}}\b(given to you|you were given|you received|you got)\b{_S}{{0,30}}\b(void|null|invalid|cancell?ed|revoked|obsolete|expired)\b",
            rf"\b(clear|wipe|reset|flush|erase)\b{_S}{{0,15}}\b(your )?(memory|context|context window|instructions|state)\b{_S}{{0,30}}\b(start|begin|from now|and)\b",
            r"\b(you are|you're) (now )?(free|released|unbound|liberated) (from|of)\b",
            r"\b(from now on|starting now|henceforth|from this (point|moment) on),? you (will|must|shall|are going to) (only )?(obey|follow|do|answer|comply)\b",
        ],
        "cs": [
            rf"\b(nic|zadn\w*)\b{_S}{{0,30}}\b(co|s cim|se kterym\w*|ktere) (ti|te|jsi)\b{_S}{{0,30}}\b(neplati|neplatil\w*|uz neplati|se nepocita)",
            rf"\b{_NOUN_CS}{_S}{{0,10}}\b(ktere|co) (ti|jsi) (dal\w*|dostal\w*|zadal\w*)\b{_S}{{0,30}}\b(neplatn\w*|zrusen\w*|zastaral\w*|prosl\w*)",
            rf"\b(vymaz|smaz|resetuj|vycisti)\w*\b{_S}{{0,15}}\b(svou |tvou |sve |tve )?(pamet|kontext|instrukce|stav)\b",
            r"\b(od ted|odted|od teto chvile|od tohoto okamziku)\b,? (budes|musis) (jen |pouze )?(poslouchat|plnit|delat|odpovidat)\b",
        ],
        "pl": [
            rf"\b(nic|zadn\w*)\b{_S}{{0,30}}\b(z czym|co|ktor\w*) (cie|ci|zostal\w*)\b{_S}{{0,30}}\b(nie obowiazuje|nie ma znaczenia|nie liczy sie)",
            rf"\b{_NOUN_PL}{_S}{{0,10}}\b(ktore|co) (ci )?(dano|przekazano|dostal\w*|otrzymal\w*)\b{_S}{{0,30}}\b(niewazn\w*|anulowan\w*|nieaktualn\w*|wygasl\w*)",
            rf"\b(wyczysc|usun|zresetuj|wymaz)\w*\b{_S}{{0,15}}\b(swoj\w* |twoj\w* )?(pamiec|kontekst|instrukcje|stan)\b",
            r"\b(od teraz|od tej chwili|od tego momentu)\b,? (bedziesz|musisz) (tylko |wylacznie )?(sluchac|wykonywac|robic|odpowiadac)\b",
        ],
        "sl": [
            rf"\b(nic|noben\w*)\b{_S}{{0,30}}\b(kar|s cimer|ki) (si|so te|ti)\b{_S}{{0,30}}\b(ne velja|ne steje|ni pomembn\w*)",
            rf"\b{_NOUN_SL}{_S}{{0,10}}\b(ki si jih|ki so ti|ki ti jih)\b{_S}{{0,30}}\b(neveljavn\w*|preklican\w*|zastarel\w*|potekl\w*)",
            rf"\b(izbrisi|pocisti|ponastavi)\w*\b{_S}{{0,15}}\b(svoj\w* |tvoj\w* )?(spomin|kontekst|navodila|stanje)\b",
            r"\b(od zdaj|odslej|od tega trenutka)\b,? (bos|moras) (samo |le )?(ubogal\w*|izvajal\w*|delal\w*|odgovarjal\w*|ubogati)\b",
        ],
    },
    "indirect_injection": {
        "en": [
            r"\b(do not|don't|never|without) (tell|telling|inform|informing|mention|mentioning|alert|alerting|let) (the |this )?(user|reader|human)\b",
            rf"\bwhen (you are |you're )?(summari[sz]ing|processing|reading|translating|analy[sz]ing) this\b{_S}{{0,20}}\b(page|document|text|e-?mail|file|article|review|site)?\b{_S}{{0,10}},? (you )?(must|should|always|first|instead|also)\b",
        ],
        "cs": [
            r"\b(nerikej|neinformuj|nezminuj|neupozornuj)\w* (to )?(uzivatel\w*|ctenar\w*)\b|\buzivateli (to )?(nerikej|nezminuj)\w*",
            rf"\b(pri shrnovani|az budes shrnovat|pri zpracovani|az budes zpracovavat|pri prekladu)\b{_S}{{0,30}}\b(tohoto|tento|teto|tuto)\b",
        ],
        "pl": [
            r"\b(nie mow|nie informuj|nie wspominaj|nie ostrzegaj)\w* (o tym )?(uzytkownik\w*|czytelnik\w*)\b",
            rf"\b(podczas streszczania|streszczajac|przetwarzajac|podczas przetwarzania|tlumaczac)\b{_S}{{0,30}}\b(ten|ta|to|tego|tej)\b",
        ],
        "sl": [
            r"\b(ne povej|ne obvesti|ne omenjaj|ne opozori)\w* (tega )?(uporabnik\w*|bralc\w*)\b|\buporabniku (tega )?(ne povej|ne omenjaj)\b",
            rf"\b(ko bos povzemal\w*|pri povzemanju|ko bos obdeloval\w*|pri obdelavi|pri prevajanju)\b{_S}{{0,30}}\b(to|ta|tega|te)\b",
        ],
    },
    "delimiter_injection": {
        "any": [
            r"\b(assistant|ai|asistent|asystent)\s*:\s*(sure|ok|okay|certainly|of course|jasne|samozrejme|oczywiscie|seveda)\b",
            r"#{2,}\s*(instruction|response|new instructions?|pokyny|instrukce|instrukcja|instrukcje|navodila|odpoved|odpowiedz|odgovor)\s*:?",
            r"\b(begin|start|konec|zacatek|poczatek|koniec|zacetek) (of )?(the )?(system|admin|new|systemoveho|systemowego|sistemskega) (prompt\w*|instructions?|message|poziv\w*)\b",
            r"\"(instruction|system_prompt|system|prompt)\"\s*:",
            r"\]\]>",
        ],
    },
}
for _cat, _by_lang in _V4.items():
    for _lang, _pats in _by_lang.items():
        _RULES[_cat].setdefault(_lang, []).extend(_pats)

# v5 families, general knowledge again (written after the v4 held-out run, not from held-out or validation
# texts): "what do your instructions say" / "what instructions do you have", headings for the AI ("Instructions
# for the AI:"), "the model that reads this must", setup/system message "as if it never existed", `### System`
# headings and `=== new system prompt ===` banners in any language.
_SETUP_MSG = {
    "en": r"(setup|system|initial|first|original|opening) (message|prompt)",
    "cs": r"(uvodni|systemov\w*|puvodni|prvni|pocatecni) (zprav\w*|zadani)",
    "pl": r"(poczatkow\w*|systemow\w*|pierwotn\w*|pierwsz\w*) (wiadomosc\w*|polecen\w*)",
    "sl": r"(uvodn\w*|sistemsk\w*|prvotn\w*|prv\w*|zacetn\w*) (sporocil\w*|navodil\w*)",
}
_AS_IF = {"en": r"(as if|as though)", "cs": r"jako (by|bys|kdyby|kdybys)", "pl": r"jak(by|bys|gdyby|gdybys)", "sl": r"kot da"}
_V5: dict[str, dict[str, list[str]]] = {
    "instruction_override": {lang: [rf"\b{_AS_IF[lang]}\b{_S}{{0,40}}\b{_SETUP_MSG[lang]}\b"] for lang in _AS_IF},
    "prompt_extraction": {
        "en": [r"\bwhat (do|does) your (instructions|rules|prompt|system prompt|guidelines|directives) say\b",
               r"\b(what|which) (instructions|rules|guidelines|directives) (do|did) you (have|follow|get|receive)\b"],
        "cs": [r"\bjak (zni|znely) (tve|tvoje|tvuj|tvoji) (pokyny|instrukce|zadani|pravidla|prompt)\b",
               r"\bjake (pokyny|instrukce|pravidla|zasady) (mas|dodrzujes|jsi dostal\w*)\b"],
        "pl": [r"\bjak brzmi\w* (twoje|twoj|twoja) (instrukcje|polecenia|zasady|prompt|zadanie)\b",
               r"\bjakie (instrukcje|polecenia|zasady|reguly) (masz|otrzymal\w*|dostal\w*|stosujesz)\b"],
        "sl": [r"\bkako se glas\w* (tvoja|tvoj|tvoje) (navodila|pravila|poziv|ukazi)\b",
               r"\bkaksna (navodila|pravila) (imas|si dobil\w*|si prejel\w*|upostevas)\b"],
    },
    "indirect_injection": {
        "en": [r"\b(instructions?|notes?|messages?|directives?) (for|to) (the |any |all )?(ai|llm|language models?|assistants?|chatbots?|bots?|crawlers?|ai agents?)\b\s*[:\-]",
               rf"\b(ai|model|assistant|chatbot|tool|agent|llm)s?\b,? (that|which|who) (is )?(reads?|reading|process(es|ing)?|summari[sz](es|ing))\b{_S}{{0,20}}\b(this|these)\b"],
        "cs": [r"\b(pokyny|instrukce|poznamka|vzkaz) (pro|k) (ai|umelou inteligenci|asistent\w*|model\w*|chatbot\w*|robot\w*|crawler\w*)\b\s*[:\-]",
               r"\b(ai|model\w*|asistent\w*|chatbot\w*|nastroj\w*)\b,? (ktery|ktera|jenz) (toto|tento|tuto|tohle|to) (cte|zpracovava|shrnuje)"],
        "pl": [r"\b(instrukcj\w*|polecenia|notatka|wiadomosc) (dla|do) (ai|sztucznej inteligencji|asystent\w*|model\w*|chatbot\w*|robot\w*|crawler\w*)\b\s*[:\-]",
               r"\b(ai|model\w*|asystent\w*|chatbot\w*|narzedzi\w*)\b,? (ktory|ktora|ktore) (to|ten|te|ta) (czyta|przetwarza|streszcza)"],
        "sl": [r"\b(navodila|opomba|sporocilo) (za) (ai|umetno inteligenco|asistent\w*|model\w*|klepetaln\w*|robot\w*|pajk\w*)\b\s*[:\-]",
               r"\b(ai|model\w*|asistent\w*|klepetaln\w*|orodj\w*)\b,? ki (to|ta|te|tole) (bere|obdeluje|povzema)"],
    },
    "delimiter_injection": {
        "any": [r"#{2,}\s*(system\w*|sistem\w*|admin\w*|developer|vyvojar\w*|razvijalec)\b",
                r"={3,}\s*[^=]{0,40}\b(system\w*|sistem\w*|prompt\w*|instruc\w*|instrukc\w*|navodil\w*|pokyn\w*|polecen\w*)[^=]{0,20}={3,}"],
    },
}
for _cat, _by_lang in _V5.items():
    for _lang, _pats in _by_lang.items():
        _RULES[_cat].setdefault(_lang, []).extend(_pats)


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
_FIRST_GROUP = re.compile(r"^\\b\(([^()\[\]{}]*)\)(?![?*{])")
_LITERAL = re.compile(r"[a-z' ]+")


def _anchors(pattern: str) -> tuple[str, ...] | None:
    """Literals one of which every match must contain: the alternatives of a leading `\\b(a|b\\w*|c)` group
    (with `\\w*` or a final `s?` cut off). A text with none of them skips the pattern (a substring test is far
    cheaper than a regex search); None where the pattern has no such group."""
    m = _FIRST_GROUP.match(pattern)
    if not m:
        return None
    out = []
    for alt in m.group(1).split("|"):
        for suffix in ("\\w*", "s?"):
            if alt.endswith(suffix):
                alt = alt[: -len(suffix)]
        if not alt or not _LITERAL.fullmatch(alt):
            return None
        out.append(alt)
    return tuple(out)


ANCHORS = {pat.pattern: _anchors(pat.pattern) for _, _, pat in COMPILED}


def match_rules(norm_text: str, languages: tuple[str, ...] | None = None,
                only: set[str] | None = None) -> list[RuleHit]:
    """Rule hits in an already-normalized text; `languages` restricts the language-specific patterns, `only`
    to these pattern strings (those that matched a larger text containing this one)."""
    hits = []
    for cat, lang, pat in COMPILED:
        if languages is not None and lang != "any" and lang not in languages:
            continue
        if only is not None and pat.pattern not in only:
            continue
        anchors = ANCHORS.get(pat.pattern)
        if anchors is not None and not any(a in norm_text for a in anchors):
            continue
        m = pat.search(norm_text)
        if m:
            hits.append(RuleHit(cat, lang, pat.pattern, m.group(0)[:80]))
    return hits
