"""The generators: each turns a chunk of input records into chat records through a `Caller` (cached calls).

- `Generate`: answers for prompts, `n` samples each.
- `Evolve`: Evol-Instruct (Xu et al. 2023, "WizardLM"): in-depth (constraints, deepening, concretizing, more
  reasoning steps) and in-breadth mutations for K rounds, with the paper's elimination checks (no change,
  copied the rewriting prompt, refusal, empty answer); a failed round keeps the previous instruction.
- `Transform`: rewrite records into a target format; JSON under a schema is decoded under it and validated.
- `Backtranslate`: Li et al. 2023, "Self-Alignment with Instruction Backtranslation": write the instruction a
  document answers; the (cleaned) document becomes the response.
- `Tools`: function-calling conversations from tool schemas: request, call with schema-valid arguments, tool
  result, final answer, in the chat format `train sft` trains on.

Every output record is `{"messages": [...], "metadata": {"source_id", "generator", "model", "template_hash", ...}}`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import random
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, ClassVar

from lmsmith.data.normalize import dedup_key, normalize_text
from lmsmith.data.synth.backends import Reply, Request, Sampling
from lmsmith.data.synth.runner import Caller, ChunkResult, Item
from lmsmith.data.synth.templates import fill, language_name, load_templates, template_hash
from lmsmith.errors import LmsmithError


@dataclass
class SamplingOptions:
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int = 0


def derive_seed(seed: int, *parts: Any) -> int:
    """A per-call seed from the run seed and the call's identity: stable across runs and processes."""
    blob = json.dumps([seed, *parts], ensure_ascii=False, default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little") & 0x7FFFFFFF


def hash_templates(templates: dict[str, str]) -> str:
    return template_hash("\x00".join(f"{k}={v}" for k, v in sorted(templates.items())))


@dataclass
class Base:
    """Shared plumbing: templates (with overrides), language, sampling, provenance metadata."""

    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    language: str | None = None
    template_files: list[str] = field(default_factory=list)
    name: ClassVar[str] = "base"
    DEFAULTS: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        self.templates = load_templates(self.DEFAULTS, self.template_files, self.name)
        self.thash = hash_templates(self.templates)
        self.lang = language_name(self.language)

    def template_hashes(self) -> dict[str, str]:
        return {k: template_hash(v) for k, v in self.templates.items()}

    def t(self, template: str, /, **values: Any) -> str:
        return fill(self.templates[template], language=self.lang, **values)

    def params(self, *call_id: Any, temperature: float | None = None, json_schema: dict | None = None,
               max_tokens: int | None = None) -> Sampling:
        s = self.sampling
        return Sampling(temperature=s.temperature if temperature is None else temperature, top_p=s.top_p,
                        max_tokens=max_tokens or s.max_tokens, seed=derive_seed(s.seed, self.name, *call_id),
                        json_schema=json_schema)

    def request(self, messages: list[dict[str, Any]], sampling: Sampling) -> Request:
        return Request(messages, sampling, self.thash)

    def meta(self, caller: Caller, item: Item, **extra: Any) -> dict[str, Any]:
        return {"source_id": item.source_id, "generator": self.name, "model": caller.model,
                "template_hash": self.thash, **({"language": self.language} if self.language else {}), **extra}

    def system(self) -> list[dict[str, Any]]:
        text = self.t("system").strip() if "system" in self.templates and self.language else ""
        return [{"role": "system", "content": text}] if text else []


def failed(res: ChunkResult, item: Item, step: str, reply: Reply | Exception) -> bool:
    """Count a failed call (the chunk is retried on the next run); True if it failed."""
    if isinstance(reply, Exception):
        res.failed += 1
        res.steps[f"{step}/failed"] += 1
        return True
    return False


def prompt_messages(record: dict[str, Any], where: Any) -> list[dict[str, Any]]:
    """The conversation to answer: `messages` up to the last user turn, or a `prompt`-like field."""
    msgs = record.get("messages")
    if isinstance(msgs, list) and msgs:
        last_user = max((i for i, m in enumerate(msgs) if isinstance(m, dict) and m.get("role") == "user"), default=None)
        if last_user is None:
            raise LmsmithError(f"record {where}: 'messages' has no user turn to answer")
        return [dict(m) for m in msgs[:last_user + 1]]
    for key in ("prompt", "instruction", "question", "input", "text"):
        if isinstance(record.get(key), str) and record[key].strip():
            return [{"role": "user", "content": record[key]}]
    raise LmsmithError(f"record {where} has no prompt", "each record needs 'messages' or a 'prompt' (or instruction, question, text) field")


def first_text(record: dict[str, Any], where: Any, field_name: str | None = None) -> str:
    keys = [field_name] if field_name else ["text", "content", "document", "body", "response", "output"]
    for key in keys:
        if isinstance(record.get(key), str) and record[key].strip():
            return record[key]
    raise LmsmithError(f"record {where} has no text field '{keys[0]}'" if field_name else f"record {where} has no text",
                       "use --text-field NAME" if not field_name else "check --text-field")


_LABEL = re.compile(r"^\s*(?:#+\s*)?(?:\*\*)?(?:new task|rewritten (?:prompt|task)|created prompt|instruction|question|"
                    r"request|task|prompt|nový úkol|úkol|instrukce|pokyn|otázka|požadavek|zadání|polecenie|pytanie|"
                    r"zahteva|navodilo|vprašanje)\s*#*\s*(?:\*\*)?\s*[:：]\s*(?:\*\*)?\s*", re.IGNORECASE)


def clean_line(text: str, first_paragraph: bool = True) -> str:
    """Model output to a bare instruction: no label ('Instruction:'), quotes or code fences; first paragraph."""
    text = text.strip().strip("`").strip()
    text = _LABEL.sub("", text, count=1).strip()
    if first_paragraph:
        paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        text = paras[0] if paras else ""
        text = _LABEL.sub("", text, count=1).strip()
    if len(text) >= 2 and text[0] in "\"'„“«" and text[-1] in "\"'“”»":
        text = text[1:-1].strip()
    return text


# ----------------------------------------------------------------------------- generate
@dataclass
class Generate(Base):
    n: int = 1
    keep_truncated: bool = False
    name = "generate"
    DEFAULTS = {"prompt": "{prompt}", "system": "Answer in {language}."}

    def process(self, items: list[Item], caller: Caller) -> ChunkResult:
        res = ChunkResult()
        convs, reqs = [], []
        for it in items:
            msgs = prompt_messages(it.record, it.source_id)
            msgs[-1] = {**msgs[-1], "content": self.t("prompt", prompt=msgs[-1]["content"])}
            convs.append(msgs)
            for k in range(self.n):
                reqs.append(self.request(self.system() + msgs, self.params(it.source_id, k)))
        replies = caller.call_many(reqs)
        for j, it in enumerate(items):
            for k in range(self.n):
                r = replies[j * self.n + k]
                if failed(res, it, "answer", r):
                    continue
                text = r.text.strip()
                if not text:
                    res.reject(it, "answer", "empty answer", sample=k)
                    continue
                if r.finish_reason == "length" and not self.keep_truncated:
                    res.reject(it, "answer", "truncated at max_tokens", sample=k)
                    continue
                res.steps["answer/kept"] += 1
                meta = self.meta(caller, it, **({"sample": k} if self.n > 1 else {}))
                res.records.append({"messages": convs[j] + [{"role": "assistant", "content": text}], "metadata": meta})
        return res


# ----------------------------------------------------------------------------- evolve
_REWRITE = ("Rewrite the task below so that it becomes harder to do well, yet stays sensible and answerable by a "
            "person. {how} Keep any code, tables and data of the original. Make it at most about 20 words longer. "
            "Write it in {language}. Output only the new task.\n\nTask:\n{instruction}")
EVOLVE_TEMPLATES = {
    "constraints": _REWRITE.replace("{how}", "Add one more requirement or constraint that the answer must meet."),
    "deepen": _REWRITE.replace("{how}", "Where the task asks about something, make it ask in more depth and breadth."),
    "concretize": _REWRITE.replace("{how}", "Replace general concepts with more specific ones."),
    "reasoning": _REWRITE.replace("{how}", "If a few simple steps solve it, make it explicitly need reasoning over "
                                           "several steps."),
    "breadth": ("Take the task below as inspiration and write a brand-new task in the same domain, on a rarer topic, "
                "about as long and as hard. Write it in {language}. Output only the new task.\n\nTask:\n{instruction}"),
    "system": "Answer in {language}.",
}
MUTATIONS = ("constraints", "deepen", "concretize", "reasoning", "breadth")
COPY_MARKERS = ("given prompt", "rewritten prompt", "#given", "#rewritten", "new task", "the task below",
                "original task", "rewritten task", "nový úkol", "původní úkol")
REFUSALS = ("sorry", "i cannot", "i can't", "i am unable", "i'm unable", "as an ai", "omlouvám", "nemohu", "nedokážu",
            "přepraszam", "przepraszam", "nie mogę", "žal mi je", "ne morem", "ospravedlňujem", "nemôžem")


def evolution_check(old: str, new: str, answer: str) -> str | None:
    """The elimination rules of Evol-Instruct: the reason an evolution failed, or None."""
    if not new.strip():
        return "empty instruction"
    if dedup_key(new) == dedup_key(old) or difflib.SequenceMatcher(None, old.lower(), new.lower()).ratio() >= 0.95:
        return "no change"
    low = new.lower()
    if any(m in low for m in COPY_MARKERS):
        return "copied prompt"
    words = answer.split()
    if any(r in answer.lower() for r in REFUSALS) and len(words) < 80:
        return "refusal"
    if not re.search(r"\w{2,}", answer) or len(words) < 2:
        return "empty answer"
    return None


@dataclass
class Evolve(Base):
    rounds: int = 3
    mutations: list[str] = field(default_factory=lambda: list(MUTATIONS))
    name = "evolve"
    DEFAULTS = EVOLVE_TEMPLATES

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [m for m in self.mutations if m not in MUTATIONS]
        if bad or not self.mutations:
            raise LmsmithError(f"unknown mutation(s): {', '.join(bad) or '(none given)'}", f"use {', '.join(MUTATIONS)}")
        if self.rounds < 1:
            raise LmsmithError(f"--rounds must be >= 1, got {self.rounds}")

    def process(self, items: list[Item], caller: Caller) -> ChunkResult:
        res = ChunkResult()
        current = {}
        for it in items:
            msgs = prompt_messages(it.record, it.source_id)
            current[id(it)] = msgs[-1]["content"]
        kept_rounds: dict[int, list[dict[str, Any]]] = {id(it): [] for it in items}
        dead: set[int] = set()
        for rnd in range(1, self.rounds + 1):
            live = [it for it in items if id(it) not in dead]
            muts = [random.Random(derive_seed(self.sampling.seed, "mutation", it.source_id, rnd)).choice(self.mutations)
                    for it in live]
            evolved = caller.call_many([self.request([{"role": "user", "content": self.t(m, instruction=current[id(it)])}],
                                                     self.params(it.source_id, rnd, "evolve"))
                                        for it, m in zip(live, muts)])
            news = []
            for it, r in zip(live, evolved):
                if failed(res, it, "evolve", r):
                    dead.add(id(it))  # this record's later rounds depend on it: retry on the next run
                    news.append(None)
                else:
                    news.append(clean_line(r.text))
            pending = [(it, m, n) for it, m, n in zip(live, muts, news) if n]
            for it, m, n in zip(live, muts, news):
                if n is not None and not n:
                    res.reject(it, "evolve", "empty instruction", round=rnd, mutation=m)
            answers = caller.call_many([self.request(self.system() + [{"role": "user", "content": n}],
                                                     self.params(it.source_id, rnd, "answer"))
                                        for it, _, n in pending])
            for (it, m, new), a in zip(pending, answers):
                if failed(res, it, "answer", a):
                    dead.add(id(it))
                    continue
                why = evolution_check(current[id(it)], new, a.text)
                if why is None and a.finish_reason == "length":
                    why = "truncated answer"
                if why:
                    res.reject(it, "evolve", why, round=rnd, mutation=m)
                    continue
                res.steps["evolve/kept"] += 1
                kept_rounds[id(it)].append({"messages": [{"role": "user", "content": new},
                                                         {"role": "assistant", "content": a.text.strip()}],
                                            "metadata": self.meta(caller, it, round=rnd, mutation=m,
                                                                  parent=current[id(it)])})
                current[id(it)] = new
        for it in items:
            res.records.extend(kept_rounds[id(it)])
        return res


# ----------------------------------------------------------------------------- transform
def strip_fences(text: str) -> str:
    t = text.strip()
    m = re.match(r"^```[\w-]*\s*\n(.*?)\n?```\s*$", t, flags=re.DOTALL)
    return m.group(1).strip() if m else t


def check_schema(schema: Any, where: str) -> None:
    import jsonschema

    if not isinstance(schema, dict):
        raise LmsmithError(f"{where} is not a JSON schema object")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        raise LmsmithError(f"{where} is not a valid JSON schema: {e.message}") from None


def validate_json(text: str, schema: dict[str, Any] | None) -> tuple[Any, str | None]:
    """(parsed value, None) or (None, why it is invalid)."""
    import jsonschema

    try:
        value = json.loads(strip_fences(text))
    except ValueError as e:
        return None, f"invalid JSON: {e}"
    if schema is not None:
        v = jsonschema.validators.validator_for(schema)(schema)
        err = jsonschema.exceptions.best_match(v.iter_errors(value))
        if err is not None:
            path = "/".join(str(p) for p in err.absolute_path) or "(root)"
            return None, f"schema violation at {path}: {err.message[:160]}"
    return value, None


@dataclass
class Transform(Base):
    instruction: str = ""
    format: str = "json"
    json_schema: dict[str, Any] | None = None
    text_field: str | None = None
    name = "transform"
    DEFAULTS = {"transform": "{instruction}\n\n{format_hint}\n\nInput:\n{input}"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.instruction.strip():
            raise LmsmithError("synth transform needs --instruction TEXT", 'e.g. --instruction "Extract the person and the date"')
        if self.format not in ("json", "xml", "text"):
            raise LmsmithError(f"unknown --format '{self.format}'", "use json, xml or text")
        if self.json_schema is not None:
            self.format = "json"
            check_schema(self.json_schema, "--json-schema")

    def hint(self) -> str:
        if self.format == "json":
            h = "Reply with one JSON value only, no explanation."
            if self.json_schema is not None:
                h += " It must validate against this JSON schema:\n" + json.dumps(self.json_schema, ensure_ascii=False)
            return h
        if self.format == "xml":
            return "Reply with one well-formed XML document only, no explanation."
        return f"Write the result in {self.lang}."

    def input_text(self, it: Item) -> str:
        if self.text_field or "text" in it.record:
            return first_text(it.record, it.source_id, self.text_field or "text")
        return json.dumps({k: v for k, v in it.record.items() if k not in ("id", "metadata")}, ensure_ascii=False)

    def process(self, items: list[Item], caller: Caller) -> ChunkResult:
        res = ChunkResult()
        prompts = [self.t("transform", instruction=self.instruction, format_hint=self.hint(), input=self.input_text(it))
                   for it in items]
        replies = caller.call_many([self.request([{"role": "user", "content": p}],
                                                 self.params(it.source_id, json_schema=self.json_schema))
                                    for it, p in zip(items, prompts)])
        for it, p, r in zip(items, prompts, replies):
            if failed(res, it, "transform", r):
                continue
            out, why = r.text.strip(), None
            if self.format == "json":
                value, why = validate_json(out, self.json_schema)
                if why is None:
                    out = json.dumps(value, ensure_ascii=False)
                elif r.finish_reason == "length":
                    why = "truncated at max_tokens: " + why
            elif self.format == "xml":
                out = strip_fences(out)
                try:
                    ET.fromstring(out)
                except ET.ParseError as e:
                    why = f"invalid XML: {e}"
            if not out:
                why = "empty output"
            if why:
                res.reject(it, "transform", why)
                continue
            res.steps["transform/kept"] += 1
            res.records.append({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": out}],
                                "metadata": self.meta(caller, it, format=self.format)})
        return res


# ----------------------------------------------------------------------------- backtranslate
@dataclass
class Backtranslate(Base):
    text_field: str | None = None
    clean: bool = True
    min_chars: int = 40
    max_doc_chars: int = 4000
    name = "backtranslate"
    DEFAULTS = {"backtranslate": (
        "Below is a text. Write one instruction or question, in {language}, that a user might give an AI assistant "
        "and for which this text would be a good answer. Output only the instruction.\n\nText:\n{document}")}

    def process(self, items: list[Item], caller: Caller) -> ChunkResult:
        res = ChunkResult()
        todo = []
        for it in items:
            doc = first_text(it.record, it.source_id, self.text_field)
            doc = normalize_text(doc) if self.clean else doc.strip()
            if len(doc) < self.min_chars:
                res.reject(it, "backtranslate", f"document shorter than {self.min_chars} characters")
                continue
            todo.append((it, doc))
        replies = caller.call_many([self.request([{"role": "user", "content": self.t(
            "backtranslate", document=doc[:self.max_doc_chars])}], self.params(it.source_id)) for it, doc in todo])
        for (it, doc), r in zip(todo, replies):
            if failed(res, it, "backtranslate", r):
                continue
            instruction = clean_line(r.text)
            if len(instruction) < 5:
                res.reject(it, "backtranslate", "empty instruction")
                continue
            res.steps["backtranslate/kept"] += 1
            res.records.append({"messages": [{"role": "user", "content": instruction},
                                             {"role": "assistant", "content": doc}],
                                "metadata": self.meta(caller, it, **({"truncated": True} if r.finish_reason == "length" else {}))})
        return res


# ----------------------------------------------------------------------------- tools
def normalize_tool(tool: Any, where: Any) -> dict[str, Any]:
    """OpenAI's `{"type": "function", "function": {name, description, parameters}}` from it or a bare function."""
    if not isinstance(tool, dict):
        raise LmsmithError(f"tool {where} is not a JSON object")
    fn = tool.get("function", tool) if tool.get("type", "function") == "function" else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", fn["name"]):
        raise LmsmithError(f"tool {where} needs a function 'name' (letters, digits, _ . -)",
                           'each tool: {"type": "function", "function": {"name", "description", "parameters"}}')
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    check_schema(params, f"tool {fn['name']}: 'parameters'")
    out = {"name": fn["name"], "description": str(fn.get("description") or ""), "parameters": params}
    return {"type": "function", "function": out}


@dataclass
class Tools(Base):
    name = "tools"
    DEFAULTS = {
        "request": ("Here is a tool that an AI assistant can call:\n{tool}\n\nWrite one realistic message, in {language}, "
                    "that a user could send to the assistant and that needs this tool. Include the concrete details "
                    "(names, numbers, places, dates) the call will need. Output only the user's message."),
        "arguments": ("You are an assistant that calls tools. The user's message needs the tool below. Reply with the "
                      "JSON arguments of the call only.\nTool:\n{tool}"),
        "result": ("The tool below was called with these arguments.\nTool:\n{tool}\nArguments: {arguments}\n\nWrite "
                   "the result the tool returns: one compact JSON value, realistic and consistent with the arguments. "
                   "Output only the result."),
        "answer": ("A user wrote: {request}\n\nYou called the tool {name} with the arguments {arguments} and it "
                   "returned:\n{result}\n\nNow answer the user in {language}, using the result. Output only the answer."),
    }

    def process(self, items: list[Item], caller: Caller) -> ChunkResult:
        res = ChunkResult()
        tools = [it.record["tool"] for it in items]
        specs = [json.dumps(t["function"], ensure_ascii=False) for t in tools]
        # 1. the user's request
        r1 = caller.call_many([self.request([{"role": "user", "content": self.t("request", tool=s)}],
                                            self.params(it.source_id, "request")) for it, s in zip(items, specs)])
        live = []
        for i, (it, r) in enumerate(zip(items, r1)):
            if failed(res, it, "request", r):
                continue
            req = clean_line(r.text)
            if len(req) < 5:
                res.reject(it, "request", "empty request")
                continue
            live.append((i, req))
        # 2. the call's arguments, decoded under the tool's parameter schema
        r2 = caller.call_many([self.request(
            [{"role": "system", "content": self.t("arguments", tool=specs[i])}, {"role": "user", "content": req}],
            self.params(items[i].source_id, "arguments", temperature=0.0, max_tokens=max(self.sampling.max_tokens, 256),
                        json_schema=tools[i]["function"]["parameters"])) for i, req in live])
        called = []
        for (i, req), r in zip(live, r2):
            it = items[i]
            if failed(res, it, "arguments", r):
                continue
            args, why = validate_json(r.text, tools[i]["function"]["parameters"])
            if why is None and not isinstance(args, dict):
                why = "arguments are not a JSON object"
            if why and r.finish_reason == "length":
                why = "truncated at max_tokens: " + why
            if why:
                res.reject(it, "arguments", why)
                continue
            called.append((i, req, json.dumps(args, ensure_ascii=False)))
        # 3. the tool's result
        r3 = caller.call_many([self.request([{"role": "user", "content": self.t("result", tool=specs[i], arguments=a)}],
                                            self.params(items[i].source_id, "result")) for i, _, a in called])
        answered = []
        for (i, req, a), r in zip(called, r3):
            if failed(res, items[i], "result", r):
                continue
            result = strip_fences(r.text)
            if not result:
                res.reject(items[i], "result", "empty tool result")
                continue
            answered.append((i, req, a, result))
        # 4. the final answer
        r4 = caller.call_many([self.request([{"role": "user", "content": self.t(
            "answer", request=req, name=tools[i]["function"]["name"], arguments=a, result=result)}],
            self.params(items[i].source_id, "answer")) for i, req, a, result in answered])
        for (i, req, a, result), r in zip(answered, r4):
            it = items[i]
            if failed(res, it, "answer", r):
                continue
            final = r.text.strip()
            if not final:
                res.reject(it, "answer", "empty answer")
                continue
            name = tools[i]["function"]["name"]
            call_id = "call_" + hashlib.sha256(f"{it.source_id}|{self.sampling.seed}".encode()).hexdigest()[:24]
            res.steps["tools/kept"] += 1
            res.records.append({
                "messages": [
                    {"role": "user", "content": req},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"id": call_id, "type": "function", "function": {"name": name, "arguments": a}}]},
                    {"role": "tool", "tool_call_id": call_id, "name": name, "content": result},
                    {"role": "assistant", "content": final}],
                "tools": [tools[i]],
                "metadata": self.meta(caller, it, tool=name)})
        return res


def tool_items(items: list[Item], n: int) -> list[Item]:
    """Each tool schema becomes `n` items (`name/k`); a file may hold tools or `{"tools": [...]}` records."""
    out = []
    seen: set[str] = set()
    for it in items:
        rec = it.record
        tools = rec["tools"] if isinstance(rec.get("tools"), list) else [rec]
        for j, t in enumerate(tools):
            tool = normalize_tool(t, f"{it.source_id}" + (f"[{j}]" if len(tools) > 1 else ""))
            name = tool["function"]["name"]
            if name in seen:
                raise LmsmithError(f"tool '{name}' is defined twice in the input", "give each tool a unique name")
            seen.add(name)
            out.extend(Item(f"{name}/{k}", {"tool": tool}) for k in range(n))
    return out
