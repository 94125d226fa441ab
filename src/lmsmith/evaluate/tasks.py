"""Task files: one YAML per task, data in local JSONL/CSV/parquet, validated up front.

The field names follow lm-evaluation-harness (doc_to_text, doc_to_target, doc_to_choice, target_delimiter,
fewshot_delimiter, num_fewshot, fewshot_split, test_split, metric_list) so its tasks port by copying.
Every mistake is reported as one line naming the file and line it comes from.
"""

from __future__ import annotations

import ast
import csv
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmsmith.errors import LmsmithError, did_you_mean

KINDS = ("multiple_choice", "generation", "perplexity", "needle")
DEFAULT_METRICS = {
    "multiple_choice": ["acc", "acc_norm"],
    "generation": ["exact_match"],
    "perplexity": ["token_perplexity", "byte_perplexity", "bits_per_byte"],
    "needle": ["retrieval"],
}
KNOWN_METRICS = {
    "multiple_choice": {"acc", "acc_norm"},
    "generation": {"exact_match", "regex_match", "f1", "rouge_l", "length_ok", "json_valid"},
    "perplexity": {"token_perplexity", "byte_perplexity", "bits_per_byte", "word_perplexity"},
    "needle": {"retrieval"},
}
FIELDS = {  # every key a task file may use; anything else is a typo we name
    "task", "name", "kind", "output_type", "description", "data", "dataset_path", "dataset_kwargs",
    "test_split", "fewshot_split", "validation_split", "training_split", "doc_to_text", "doc_to_target",
    "doc_to_choice", "target_delimiter", "fewshot_delimiter", "num_fewshot", "fewshot_seed", "metric_list",
    "generation_kwargs", "regex", "length", "json_schema", "limit", "needle", "tag", "metadata",
    # lm-eval keys that do not change how a task is scored here (accepted so its YAMLs load unmodified)
    "dataset_name", "should_decontaminate", "doc_to_decontamination_query", "group", "task_alias", "group_alias",
    "repeats", "fewshot_config",
}
# lm-eval's output_type -> our kind (lm-eval's `loglikelihood` tasks are scored here as choices too)
OUTPUT_TYPES = {"multiple_choice": "multiple_choice", "loglikelihood": "multiple_choice",
                "generate_until": "generation", "loglikelihood_rolling": "perplexity"}
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
BUILTIN_DIR = Path(__file__).resolve().parents[1] / "assets" / "tasks"
FEWSHOT_SLOT = re.compile(r"\{\{\s*fewshot\s*\}\}|\{fewshot\}")
FORMAT_FIELD = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)((?:\[[^\]]*\]|\.[A-Za-z_]\w*)*)(?:![rsa])?(?::[^{}]*)?\}(?!\})")
DERIVED = ("lettered_choices", "fewshot")  # variables a template may use besides the data's fields


# ----------------------------------------------------------------------------- YAML with line numbers
def load_yaml_lines(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse a YAML mapping and remember the (1-based) line of each top-level key."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise LmsmithError(f"cannot read task file {path}: {e.strerror}") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise LmsmithError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict) or node is None:
        raise LmsmithError(f"{path}:1: a task file must be a YAML mapping (task:, doc_to_text:, ...)")
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    return data, lines


# ----------------------------------------------------------------------------- data files
@dataclass
class Doc:
    """One data record and where it came from (for error messages)."""

    fields: dict[str, Any]
    source: str  # "file:line"
    index: int


def read_records(path: Path) -> list[Doc]:
    """JSONL (one object a line), JSON (a list), CSV (header row) or parquet."""
    if not path.exists():
        raise LmsmithError(f"data file does not exist: {path}")
    suffix = path.suffix.lower()
    docs: list[Doc] = []
    if suffix in (".jsonl", ".ndjson"):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise LmsmithError(f"{path}:{lineno}: not valid JSON ({e.msg})", "each line must be one JSON object") from None
            if not isinstance(obj, dict):
                raise LmsmithError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            docs.append(Doc(obj, f"{path}:{lineno}", len(docs)))
    elif suffix == ".json":
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise LmsmithError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
            raise LmsmithError(f"{path}:1: a .json data file must hold a list of objects")
        docs = [Doc(x, f"{path}:item {i}", i) for i, x in enumerate(items)]
    elif suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            for row in reader:
                docs.append(Doc(dict(row), f"{path}:{reader.line_num}", len(docs)))
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise LmsmithError(f"reading {path.name} needs pyarrow", "pip install pyarrow, or convert the data to JSONL") from None
        for i, row in enumerate(pq.read_table(path).to_pylist()):
            docs.append(Doc(row, f"{path}:row {i + 1}", i))
    else:
        raise LmsmithError(f"unsupported data file {path.name}", "use .jsonl, .json, .csv, .tsv or .parquet")
    if not docs:
        raise LmsmithError(f"{path}:1: the data file is empty", "add at least one record")
    return docs


# ----------------------------------------------------------------------------- templates
def template_fields(template: str) -> set[str]:
    """Top-level variable names a template uses ({name} format style or {{ name }} Jinja style)."""
    if is_jinja(template):
        import jinja2
        from jinja2 import meta

        try:
            return set(meta.find_undeclared_variables(_jinja_env().parse(template)))
        except jinja2.TemplateSyntaxError as e:
            raise ValueError(f"Jinja syntax error: {e.message}") from None
    return {m.group(1) for m in FORMAT_FIELD.finditer(template)}


def is_jinja(template: str) -> bool:
    return "{{" in template or "{%" in template


def render(template: str, doc: dict[str, Any]) -> str:
    """Fill a template. `{name}` (str.format, `{choices[0]}` works) or Jinja `{{ name }}` as in lm-eval."""
    if is_jinja(template):
        return _jinja_env().from_string(template).render(**doc)
    # escape lone braces that are not fields, then format
    return _format(template, doc)


def _jinja_env():
    """A sandbox, as transformers uses for chat templates: a task file is data, it must not run code."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


FIELD_PART = re.compile(r"\[([^\]]*)\]|\.([A-Za-z_]\w*)")
FIELD_SPEC = re.compile(r"\{[A-Za-z_]\w*(?P<parts>(?:\[[^\]]*\]|\.[A-Za-z_]\w*)*)(?:!(?P<conv>[rsa]))?(?::(?P<spec>[^{}]*))?\}")


def _format(template: str, doc: dict[str, Any]) -> str:
    """`str.format` for `{name}`, `{name[0]}`, `{name[key]}` (and `!r`, `:spec`), without attribute access:
    `{x.__class__}` would reach Python internals, so any `.attr` is refused."""
    out, pos = [], 0
    for m in FORMAT_FIELD.finditer(template):
        out.append(template[pos:m.start()])
        f = FIELD_SPEC.fullmatch(m.group(0))
        value: Any = doc[m.group(1)]
        for pm in FIELD_PART.finditer(f.group("parts") if f else ""):
            if pm.group(2) is not None:
                raise ValueError(f"attribute access ('.{pm.group(2)}') is not allowed in a template field "
                                 f"{m.group(0)}; use {{name}}, {{name[0]}} or {{name[key]}}")
            key = pm.group(1)
            value = value[int(key)] if key.isdigit() else value[key]
        conv = f.group("conv") if f else None
        value = {"r": repr, "a": ascii, "s": str}[conv](value) if conv else value
        out.append(format(value, (f.group("spec") or "") if f else ""))
        pos = m.end()
    out.append(template[pos:])
    return "".join(out)


# ----------------------------------------------------------------------------- the task
@dataclass
class Task:
    name: str
    kind: str
    path: Path
    doc_to_text: str = ""
    doc_to_target: Any = None
    doc_to_choice: Any = None
    description: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    num_fewshot: int = 0
    fewshot_seed: int = 1234
    metrics: list[str] = field(default_factory=list)
    generation_kwargs: dict[str, Any] = field(default_factory=dict)
    regex: str | None = None
    length: dict[str, Any] | None = None
    json_schema: dict[str, Any] | None = None
    needle: dict[str, Any] = field(default_factory=dict)
    docs: list[Doc] = field(default_factory=list)
    fewshot_docs: list[Doc] = field(default_factory=list)
    fewshot_from_test: bool = False
    lines: dict[str, int] = field(default_factory=dict)

    def where(self, key: str) -> str:
        return f"{self.path}:{self.lines.get(key, 1)}"

    # ---- the pieces of a prompt
    def header_and_item(self) -> tuple[str, str]:
        """doc_to_text split at its `{fewshot}` slot: text before it is written once, after it per example."""
        m = FEWSHOT_SLOT.search(self.doc_to_text)
        if not m:
            return "", self.doc_to_text
        return self.doc_to_text[:m.start()], self.doc_to_text[m.end():]

    def choices(self, doc: Doc) -> list[str]:
        spec = self.doc_to_choice
        if isinstance(spec, list):
            return [str(c) for c in spec]
        if isinstance(spec, str) and spec in doc.fields:
            value = doc.fields[spec]
        else:
            value = render(str(spec), doc.fields)
        if isinstance(value, str):
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise LmsmithError(f"{doc.source}: doc_to_choice gave {value[:60]!r}, not a list",
                                   f"make doc_to_choice ({self.where('doc_to_choice')}) a list or a field holding one") from None
        if not isinstance(value, (list, tuple)) or not value:
            raise LmsmithError(f"{doc.source}: doc_to_choice must give a non-empty list of choices, got {value!r}")
        return [str(c) for c in value]

    def variables(self, doc: Doc) -> dict[str, Any]:
        v = dict(doc.fields)
        if self.kind == "multiple_choice":
            v.setdefault("lettered_choices", "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(self.choices(doc))))
        return v

    def text(self, doc: Doc) -> str:
        """The per-example part of the prompt (no header, no shots)."""
        return self._render(self.header_and_item()[1], doc, "doc_to_text")

    def target(self, doc: Doc) -> Any:
        """The gold answer: a choice index for multiple choice, a string otherwise."""
        spec = self.doc_to_target
        if isinstance(spec, int) and not isinstance(spec, bool):
            value: Any = spec
        elif isinstance(spec, str) and spec in doc.fields:
            value = doc.fields[spec]
        else:
            value = self._render(str(spec), doc, "doc_to_target")
        if self.kind != "multiple_choice":
            if isinstance(value, list):  # several acceptable answers: keep them all
                return [str(x) for x in value]
            return str(value)
        choices = self.choices(doc)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value.strip())
        if isinstance(value, str):
            if value in choices:
                return choices.index(value)
            if len(value.strip()) == 1 and value.strip().upper() in LETTERS[:len(choices)]:
                return LETTERS.index(value.strip().upper())
            raise LmsmithError(f"{doc.source}: target {value!r} is not one of the choices {choices}",
                               "give the index of the right choice, its letter or its exact text")
        if not isinstance(value, int) or not 0 <= value < len(choices):
            raise LmsmithError(f"{doc.source}: choice index {value!r} is out of range: the item has {len(choices)} choices",
                               f"use 0..{len(choices) - 1}")
        return value

    def target_text(self, doc: Doc) -> str:
        t = self.target(doc)
        if self.kind == "multiple_choice":
            return self.choices(doc)[t]
        return t[0] if isinstance(t, list) else t

    def _render(self, template: str, doc: Doc, key: str) -> str:
        try:
            return render(template, self.variables(doc))
        except (KeyError, IndexError, AttributeError, TypeError) as e:
            raise LmsmithError(f"{self.where(key)}: {key} cannot be filled for {doc.source}: missing {e}") from None
        except Exception as e:  # jinja errors
            raise LmsmithError(f"{self.where(key)}: {key} cannot be filled for {doc.source}: {e}") from None

    def shots(self, doc: Doc, k: int | None = None) -> list[Doc]:
        """k few-shot examples for `doc`, seeded per item; never the item itself."""
        k = self.num_fewshot if k is None else k
        if k <= 0:
            return []
        pool = [d for d in self.fewshot_docs if not (self.fewshot_from_test and d.index == doc.index)]
        pool = [d for d in pool if d.fields != doc.fields]  # an identical record would leak the answer
        if len(pool) < k:
            raise LmsmithError(f"{self.where('num_fewshot')}: num_fewshot is {k} but only {len(pool)} examples are available for shots",
                               "lower num_fewshot or add records to the few-shot split")
        rng = random.Random(f"{self.fewshot_seed}:{doc.index}")
        return rng.sample(pool, k)

    def context(self, doc: Doc, k: int | None = None) -> str:
        """description + header + shots (each `text + target_delimiter + target`) + this item's text."""
        header = self._render(self.header_and_item()[0], doc, "doc_to_text") if FEWSHOT_SLOT.search(self.doc_to_text) else ""
        shots = self.shots(doc, k)
        fewshot = "".join(self.text(s) + self.target_delimiter + self.target_text(s) + self.fewshot_delimiter for s in shots)
        description = self._render(self.description, doc, "description") if self.description else ""
        return description + header + fewshot + self.text(doc)


# ----------------------------------------------------------------------------- loading
def builtin_tasks() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}


def find_task(name_or_path: str) -> Path:
    p = Path(name_or_path).expanduser()
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise LmsmithError(f"task file does not exist: {p}")
        return p
    builtins = builtin_tasks()
    if name_or_path not in builtins:
        hint = did_you_mean(name_or_path, builtins)
        raise LmsmithError(f"unknown task '{name_or_path}'" + (f"; {hint}" if hint else ""),
                           f"built-in tasks: {', '.join(builtins)}; or give a path to a task YAML")
    return builtins[name_or_path]


def load_task(name_or_path: str | Path, num_fewshot: int | None = None, limit: int | None = None) -> Task:
    path = find_task(str(name_or_path))
    raw, lines = load_yaml_lines(path)

    def where(key: str) -> str:
        return f"{path}:{lines.get(key, 1)}"

    for key in raw:
        if key not in FIELDS:
            close = [f for f in FIELDS if f.replace("_", "") == str(key).replace("_", "") or f.startswith(str(key)[:6])]
            raise LmsmithError(f"{where(key)}: unknown field '{key}'",
                               f"did you mean {close[0]}?" if close else f"known fields: {', '.join(sorted(FIELDS))}")
    name = str(raw.get("task") or raw.get("name") or path.stem)
    output_type = raw.get("output_type")
    if output_type is not None and output_type not in OUTPUT_TYPES:
        raise LmsmithError(f"{where('output_type')}: unknown output_type '{output_type}'",
                           f"lm-eval's output types: {', '.join(OUTPUT_TYPES)}")
    kind = raw.get("kind") or OUTPUT_TYPES.get(output_type or "")
    if kind is None:
        raise LmsmithError(f"{path}:1: missing field 'kind'",
                           f"add `kind: {' | '.join(KINDS)}` (or lm-eval's `output_type: {' | '.join(OUTPUT_TYPES)}`)")
    if kind not in KINDS:
        raise LmsmithError(f"{where('kind')}: unknown kind '{kind}'", f"use one of: {', '.join(KINDS)}")

    required = {"multiple_choice": ("doc_to_text", "doc_to_target", "doc_to_choice"),
                "generation": ("doc_to_text", "doc_to_target"), "perplexity": ("doc_to_text",), "needle": ("needle",)}[kind]
    for key in required:
        if raw.get(key) is None:
            raise LmsmithError(f"{path}:1: missing field '{key}' (needed by kind '{kind}')", "see the built-in tasks for an example")

    metrics = parse_metrics(raw.get("metric_list"), kind, where("metric_list"))
    task = Task(
        name=name, kind=kind, path=path, lines=lines,
        doc_to_text=str(raw.get("doc_to_text", "")), doc_to_target=raw.get("doc_to_target"),
        doc_to_choice=raw.get("doc_to_choice"), description=str(raw.get("description") or ""),
        target_delimiter=str(raw.get("target_delimiter", " ")), fewshot_delimiter=str(raw.get("fewshot_delimiter", "\n\n")),
        num_fewshot=int(raw.get("num_fewshot") or 0) if num_fewshot is None else num_fewshot,
        fewshot_seed=int(raw.get("fewshot_seed", 1234)), metrics=metrics,
        generation_kwargs=dict(raw.get("generation_kwargs") or {}), regex=raw.get("regex"),
        length=raw.get("length"), needle=dict(raw.get("needle") or {}),
    )
    if task.num_fewshot < 0:
        raise LmsmithError(f"{where('num_fewshot')}: num_fewshot must be >= 0")
    if task.regex is not None:
        try:
            re.compile(task.regex)
        except re.error as e:
            raise LmsmithError(f"{where('regex')}: invalid regex: {e}") from None
    if raw.get("json_schema") is not None:
        schema = raw["json_schema"]
        if isinstance(schema, str):
            sp = (path.parent / schema)
            try:
                schema = json.loads(sp.read_text())
            except (OSError, ValueError) as e:
                raise LmsmithError(f"{where('json_schema')}: cannot read JSON schema {sp}: {e}") from None
        task.json_schema = schema
    if "length_ok" in metrics and not (isinstance(task.length, dict) and task.length.get("unit", "words") in ("words", "chars")):
        raise LmsmithError(f"{where('length')}: metric length_ok needs `length: {{unit: words|chars, min: N, max: M}}`")
    if "json_valid" in metrics and task.json_schema is None:
        raise LmsmithError(f"{where('metric_list')}: metric json_valid needs a `json_schema:` (inline or a file)")
    if "regex_match" in metrics and not task.regex:
        raise LmsmithError(f"{where('metric_list')}: metric regex_match needs a `regex:` with one capture group")

    if kind == "needle":
        return task
    splits = data_files(raw, path, where)
    test_split = str(raw.get("test_split") or raw.get("validation_split") or "test")
    if test_split not in splits:
        raise LmsmithError(f"{where('test_split')}: no data for split '{test_split}'", f"splits given: {', '.join(splits) or 'none'}")
    task.docs = read_records(splits[test_split])
    if limit:
        task.docs = task.docs[:limit]
    fs_split = raw.get("fewshot_split") or raw.get("training_split")
    if fs_split:
        if fs_split not in splits:
            raise LmsmithError(f"{where('fewshot_split')}: no data for split '{fs_split}'", f"splits given: {', '.join(splits)}")
        task.fewshot_docs = read_records(splits[fs_split])
    else:
        task.fewshot_docs, task.fewshot_from_test = task.docs, True
    validate(task, task.docs[0])
    for doc in task.docs + (task.fewshot_docs if not task.fewshot_from_test else []):
        if kind == "multiple_choice":
            task.target(doc)  # raises naming file:line for an out-of-range index or unknown answer
    return task


def parse_metrics(spec: Any, kind: str, where: str) -> list[str]:
    if spec is None:
        return list(DEFAULT_METRICS[kind])
    if not isinstance(spec, list):
        raise LmsmithError(f"{where}: metric_list must be a list")
    names = []
    for m in spec:
        name = m.get("metric") if isinstance(m, dict) else m
        if name not in KNOWN_METRICS[kind]:
            raise LmsmithError(f"{where}: unknown metric '{name}' for kind {kind}", f"use: {', '.join(sorted(KNOWN_METRICS[kind]))}")
        names.append(str(name))
    return names


def data_files(raw: dict[str, Any], path: Path, where) -> dict[str, Path]:
    """`data: {test: f.jsonl, train: g.jsonl}` or lm-eval's `dataset_path: json` + `dataset_kwargs: {data_files: ...}`."""
    files = raw.get("data")
    key = "data"
    if files is None and isinstance(raw.get("dataset_kwargs"), dict):
        files, key = raw["dataset_kwargs"].get("data_files"), "dataset_kwargs"
    if files is None:
        raise LmsmithError(f"{path}:1: missing field 'data'", "add `data: {test: items.jsonl}` (paths relative to the task file)")
    if isinstance(files, str):
        files = {"test": files}
    if not isinstance(files, dict):
        raise LmsmithError(f"{where(key)}: data must map split names to files")
    out = {}
    for split, f in files.items():
        if isinstance(f, list):
            f = f[0]
        p = Path(str(f)).expanduser()
        out[str(split)] = p if p.is_absolute() else path.parent / p
    return out


def validate(task: Task, doc: Doc) -> None:
    """Check templates against the data's fields before running anything."""
    known = set(doc.fields) | set(DERIVED)
    for key in ("doc_to_text", "doc_to_target", "doc_to_choice", "description"):
        value = getattr(task, key)
        if not isinstance(value, str) or (key in ("doc_to_target", "doc_to_choice") and value in doc.fields):
            continue
        try:
            used = template_fields(value)
        except ValueError as e:
            raise LmsmithError(f"{task.where(key)}: {key}: {e}") from None
        unknown = sorted(used - known)
        if unknown:
            raise LmsmithError(f"{task.where(key)}: {key} references unknown field '{unknown[0]}'",
                               f"fields in {doc.source.rsplit(':', 1)[0]}: {', '.join(sorted(doc.fields))}")
        if key in ("doc_to_target", "doc_to_choice") and not used:
            raise LmsmithError(f"{task.where(key)}: {key} '{value}' is neither a field of the data nor a template",
                               f"fields in {doc.source.rsplit(':', 1)[0]}: {', '.join(sorted(doc.fields))}")
