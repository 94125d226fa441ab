"""`lmsmith synth generate|evolve|transform|backtranslate|tools|curate`.

An entry point, so it may wire stages together: it builds the in-process engine backend from serve and the
judge from evaluate, and hands both to the generators in `lmsmith.data.synth`, which only see protocols.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from lmsmith.config import Config, add_config_args, config_from_args
from lmsmith.errors import LmsmithError
from lmsmith.progress import console, out


class RunOptions(Config):
    input: str = Field(description="input file: JSONL/JSON records (or .txt, one per line)")
    output: str = Field(description="output JSONL; OUTPUT.manifest.json and OUTPUT.rejects.jsonl are written next to it")
    limit: int | None = Field(None, description="use only the first N input records")
    seed: int = Field(0, description="run seed; each call's seed derives from it and the record")
    chunk_size: int = Field(64, description="records per chunk: the unit of atomic output and of resuming")
    cache: bool = Field(True, description="cache every model call (a rerun sends only unanswered calls)")
    cache_path: str | None = Field(None, description="call cache file (default: $LMSMITH_HOME/cache/synth.sqlite)")
    concurrency: int = Field(8, description="endpoint: requests in flight")
    timeout: float = Field(120.0, description="endpoint: seconds per request attempt, to the last byte")
    max_retries: int = Field(4, description="endpoint: retries on 429/5xx/timeouts (exponential backoff, Retry-After)")
    rate_limit: float | None = Field(None, description="endpoint: at most this many requests per second")
    dtype: str = Field("auto", description="engine: weights dtype")
    device: str | None = Field(None, description="engine: cpu or cuda (default: cuda if available)")
    max_num_seqs: int = Field(64, description="engine: sequences decoded together")


class ModelOptions(RunOptions):
    model: str | None = Field(None, description="registry model (or directory) run in-process on our engine")
    endpoint: str | None = Field(None, description="OpenAI-compatible server URL instead of --model (lmsmith serve, vLLM, ...)")
    api_model: str | None = Field(None, description="model name on the endpoint")
    api_key: str | None = Field(None, description="endpoint API key (default: $OPENAI_API_KEY)")
    temperature: float = Field(0.7, description="sampling temperature (0 = greedy)")
    top_p: float = Field(1.0, description="nucleus sampling")
    max_tokens: int = Field(512, description="tokens per answer at most")
    language: str | None = Field(None, description="ISO code of the language to write in (cs, pl, sl, ...)")
    template: list[str] = Field(default_factory=list, description="override prompt templates: NAME=FILE[,NAME=FILE] (or FILE)")


class GenerateOptions(ModelOptions):
    n: int = Field(1, description="samples per prompt (each its own record, metadata.sample = k)")
    keep_truncated: bool = Field(False, description="keep answers cut at --max-tokens")


class EvolveOptions(ModelOptions):
    rounds: int = Field(3, description="evolution rounds (each successful round is a record)")
    mutations: list[str] = Field(default_factory=lambda: ["constraints", "deepen", "concretize", "reasoning", "breadth"],
                                 description="mutations to draw from")


class TransformOptions(ModelOptions):
    instruction: str | None = Field(None, description="what to do with each record")
    format: Literal["json", "xml", "text"] = Field("json", description="target format (validated)")
    json_schema: str | None = Field(None, description="JSON schema file: output is decoded under it and validated")
    text_field: str | None = Field(None, description="record field to transform (default: text, else the whole record)")


class BacktranslateOptions(ModelOptions):
    text_field: str | None = Field(None, description="document field (default: text, content, document, ...)")
    clean: bool = Field(True, description="normalize the document's whitespace and Unicode before it becomes the response")
    min_chars: int = Field(40, description="skip documents shorter than this")
    max_doc_chars: int = Field(4000, description="characters of the document shown to the model")


class ToolsOptions(ModelOptions):
    n: int = Field(2, description="conversations per tool")


class CurateOptions(RunOptions):
    judge: str | None = Field(None, description="judge model (registry ref) run in-process")
    judge_endpoint: str | None = Field(None, description="judge on an OpenAI-compatible server instead")
    judge_api_model: str | None = Field(None, description="judge model name on the endpoint")
    judge_api_key: str | None = Field(None, description="judge endpoint API key (default: $OPENAI_API_KEY)")
    threshold: float = Field(4.0, description="keep records the judge scores at least this (1-5)")
    rubric: str | None = Field(None, description="rubric text or file (default: the 5-point self-curation scale)")
    judge_max_tokens: int = Field(256, description="tokens per verdict")
    judge_json: bool = Field(True, description="decode verdicts under a JSON schema (reason, score)")
    min_chars: int = Field(1, description="drop responses shorter than this")
    max_chars: int | None = Field(None, description="drop responses longer than this")
    language: str | None = Field(None, description="keep only records in this language (ISO code)")
    min_lang_prob: float = Field(0.5, description="language ID confidence needed")
    dedup: bool = Field(True, description="drop exact duplicates")
    near_dedup: bool = Field(True, description="drop MinHash near-duplicates")
    near_threshold: float = Field(0.8, description="estimated Jaccard similarity counted as near-duplicate")


# ----------------------------------------------------------------------------- wiring
def cache_for(o: RunOptions):
    from lmsmith.data.synth.cache import CallCache
    from lmsmith.home import lmsmith_home

    if not o.cache:
        return CallCache(None)
    return CallCache(o.cache_path or lmsmith_home() / "cache" / "synth.sqlite")


def make_backend(model: str | None, endpoint: str | None, api_model: str | None, api_key: str | None, o: RunOptions,
                 flag: str = "--model"):
    if endpoint and model:
        raise LmsmithError(f"give either {flag} or the endpoint, not both")
    if endpoint:
        from lmsmith.data.synth.backends import EndpointBackend

        return EndpointBackend(endpoint, api_model or "", api_key or os.environ.get("OPENAI_API_KEY"),
                               concurrency=o.concurrency, timeout=o.timeout, max_retries=o.max_retries,
                               rate_limit=o.rate_limit)
    if not model:
        raise LmsmithError("no model given", f"pass {flag} REF (our engine) or an endpoint URL with its model name")
    from lmsmith.serve.synth_backend import EngineBackend

    with console.status(f"loading {model} on the engine …"):
        return EngineBackend(model, dtype=o.dtype, device=o.device, max_num_seqs=o.max_num_seqs)


class EvalJudge:
    """The evaluate stage's absolute judge (prompt and score parsing) on the self-curation rubric."""

    def __init__(self, rubric: str, use_schema: bool = True):
        from lmsmith.data.synth.curate import VERDICT_SCHEMA
        from lmsmith.evaluate.judge import JudgeConfig, absolute_prompt

        self.cfg = JudgeConfig(mode="absolute", scale=(1, 5), rubric=rubric)
        self._prompt = absolute_prompt
        self.template = absolute_prompt({"prompt": "{instruction}", "response": "{response}"}, self.cfg)
        self.json_schema = VERDICT_SCHEMA if use_schema else None

    def prompt(self, instruction: str, response: str) -> str:
        return self._prompt({"prompt": instruction, "response": response}, self.cfg)

    def parse(self, text: str) -> tuple[float | None, str]:
        from lmsmith.evaluate.judge import parse_score
        from lmsmith.evaluate.metrics import extract_json

        score = parse_score(text, (1, 5))
        try:
            obj = extract_json(text)
        except ValueError:
            obj = None
        reason = obj.get("reason") if isinstance(obj, dict) and isinstance(obj.get("reason"), str) else text.strip()[:300]
        return score, reason


def _fingerprint(o: Config, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from lmsmith.data.synth.runner import file_sha256

    skip = {"api_key", "judge_api_key", "cache", "cache_path", "concurrency", "timeout", "max_retries", "rate_limit",
            "output", "max_num_seqs"}
    d = {k: v for k, v in o.model_dump(mode="json").items() if k not in skip}
    d["input_sha256"] = file_sha256(Path(o.input).expanduser()) if Path(o.input).expanduser().is_file() else None
    return {**d, **(extra or {})}


def _finish(result, o: RunOptions) -> int:
    m = result.manifest
    calls = m["calls"]
    out.print(f"{o.output}  ({m['records_out']:,} records from {m['records_in']:,} inputs; calls: "
              f"{calls['answered_now']} answered, {calls['from_cache']} from cache, {calls['failed']} failed; "
              f"manifest: {o.output}.manifest.json)")
    if result.failed:
        console.print(f"[yellow]{result.failed} model call(s) failed ({next(iter(m['errors']), '')}); "
                      "rerun the same command to retry them: answered calls come from the cache")
        return 1
    return 0


def _sampling(o: ModelOptions):
    from lmsmith.data.synth.generators import SamplingOptions

    if o.max_tokens < 1:
        raise LmsmithError(f"--max-tokens must be >= 1, got {o.max_tokens}")
    return SamplingOptions(temperature=o.temperature, top_p=o.top_p, max_tokens=o.max_tokens, seed=o.seed)


def build_generator(command: str, o: ModelOptions):
    from lmsmith.data.synth import generators as G

    common = dict(sampling=_sampling(o), language=o.language, template_files=o.template)
    if command == "generate":
        if o.n < 1:
            raise LmsmithError(f"--n must be >= 1, got {o.n}")
        return G.Generate(n=o.n, keep_truncated=o.keep_truncated, **common)
    if command == "evolve":
        return G.Evolve(rounds=o.rounds, mutations=o.mutations, **common)
    if command == "transform":
        schema = None
        if o.json_schema:
            p = Path(o.json_schema).expanduser()
            if not p.is_file():
                raise LmsmithError(f"--json-schema file not found: {p}")
            try:
                schema = json.loads(p.read_text(encoding="utf-8"))
            except ValueError as e:
                raise LmsmithError(f"--json-schema {p} is not valid JSON: {e}") from None
        return G.Transform(instruction=o.instruction or "", format=o.format, json_schema=schema,
                           text_field=o.text_field, **common)
    if command == "backtranslate":
        return G.Backtranslate(text_field=o.text_field, clean=o.clean, min_chars=o.min_chars,
                               max_doc_chars=o.max_doc_chars, **common)
    if command == "tools":
        if o.n < 1:
            raise LmsmithError(f"--n must be >= 1, got {o.n}")
        return G.Tools(**common)
    raise LmsmithError(f"unknown synth command {command}")


def cmd_generate(args: argparse.Namespace) -> int:
    from lmsmith.data.synth.generators import tool_items
    from lmsmith.data.synth.runner import Caller, read_items, run_chunks

    o = config_from_args(args.config_cls, args)
    gen = build_generator(args.synth_command, o)  # template and schema errors before loading a model
    items = read_items(o.input, None if args.synth_command == "tools" else o.limit,
                       text_only=args.synth_command == "backtranslate")
    if args.synth_command == "tools":
        items = tool_items(items, o.n)[:o.limit] if o.limit else tool_items(items, o.n)
    backend = make_backend(o.model, o.endpoint, o.api_model, o.api_key, o)
    cache = cache_for(o)
    try:
        result = run_chunks(gen, items, o.output, Caller(backend, cache), chunk_size=o.chunk_size,
                            fingerprint=_fingerprint(o, {"backend": backend.backend_id, "model_id": backend.model}),
                            manifest_extra={"command": getattr(args, "command_line", None), "input": o.input})
    finally:
        cache.close()
        backend.close()
    return _finish(result, o)


def cmd_curate(args: argparse.Namespace) -> int:
    from lmsmith.data.synth.curate import RUBRIC, JudgeStep, prefilter
    from lmsmith.data.synth.curate import CurateOptions as Opts
    from lmsmith.data.synth.runner import Caller, read_items, run_chunks

    o = config_from_args(CurateOptions, args)
    rubric = o.rubric or RUBRIC
    if o.rubric and Path(o.rubric).expanduser().is_file():
        rubric = Path(o.rubric).expanduser().read_text(encoding="utf-8")
    if not 1 <= o.threshold <= 5:
        raise LmsmithError(f"--threshold must be between 1 and 5, got {o.threshold}")
    items = read_items(o.input, o.limit)
    kept, pre = prefilter(items, Opts(min_chars=o.min_chars, max_chars=o.max_chars, language=o.language,
                                      min_lang_prob=o.min_lang_prob, exact_dedup=o.dedup, near_dedup=o.near_dedup,
                                      near_threshold=o.near_threshold, threshold=o.threshold))
    use_judge = bool(o.judge or o.judge_endpoint)
    judge = EvalJudge(rubric, o.judge_json) if use_judge else None
    if use_judge:
        backend = make_backend(o.judge, o.judge_endpoint, o.judge_api_model, o.judge_api_key, o, flag="--judge")
    else:
        backend = _NoModel()
        console.print("[yellow]no --judge / --judge-endpoint: only length, language and duplicate filters run")
    cache = cache_for(o)
    step = JudgeStep(judge, threshold=o.threshold, max_tokens=o.judge_max_tokens, seed=o.seed)
    try:
        result = run_chunks(step, kept, o.output, Caller(backend, cache), chunk_size=o.chunk_size,
                            fingerprint=_fingerprint(o, {"backend": backend.backend_id, "model_id": backend.model}),
                            manifest_extra={"command": getattr(args, "command_line", None), "input": o.input,
                                            "prefilter": {"in": len(items), "kept": len(kept),
                                                          "rejected": len(pre.rejects)}})
    finally:
        cache.close()
        backend.close()
    if pre.rejects:  # prefilter rejects go first in the rejects file and the manifest's step counts
        from collections import Counter

        from lmsmith.data.synth.runner import jsonl_bytes, write_atomic

        outp = Path(o.output).expanduser()
        rejects = pre.rejects + result.rejects
        write_atomic(outp.with_name(outp.name + ".rejects.jsonl"), jsonl_bytes(rejects))
        m = result.manifest
        m["records_in"] = len(items)
        m["steps"] = dict(sorted({**m["steps"], **pre.steps}.items()))
        m["rejects"] = dict(Counter(f"{r['step']}: {r['reason'].split(':')[0].split(' (')[0]}" for r in rejects).most_common())
        write_atomic(outp.with_name(outp.name + ".manifest.json"),
                     (json.dumps(m, indent=1, ensure_ascii=False, default=str) + "\n").encode())
    return _finish(result, o)


class _NoModel:
    backend_id, model = "none", "none"

    def run(self, requests, on_reply) -> None:
        raise LmsmithError("curation without a judge made a model call")

    def close(self) -> None:
        pass


EXAMPLES = {
    "generate": "lmsmith synth generate --model smollm2-135m-instruct --input prompts.jsonl --output answers.jsonl --n 2",
    "evolve": ("lmsmith synth evolve --endpoint http://127.0.0.1:8000/v1 --api-model m --input seeds.jsonl "
               "--output evolved.jsonl --rounds 3 --language cs"),
    "transform": ("lmsmith synth transform --model M --input records.jsonl --output out.jsonl "
                  "--instruction 'Extract the name and age' --json-schema person.json"),
    "backtranslate": "lmsmith synth backtranslate --model M --input docs.jsonl --output sft.jsonl --language cs",
    "tools": "lmsmith synth tools --model M --input tools.json --output tool_chats.jsonl --n 4",
    "curate": "lmsmith synth curate --judge M --input sft.jsonl --output curated.jsonl --threshold 4 --language cs",
}
HELP = {
    "generate": "answers for a list of prompts (N samples each)",
    "evolve": "Evol-Instruct: make seed instructions harder, K rounds, with elimination checks",
    "transform": "rewrite records into a format (JSON under a schema, XML, text), validated",
    "backtranslate": "write the instruction each document answers (instruction backtranslation)",
    "tools": "function-calling conversations from tool schemas (arguments valid under the schema)",
    "curate": "judge-score (1-5) and filter records: length, language, exact and near duplicates",
}
CONFIGS = {"generate": GenerateOptions, "evolve": EvolveOptions, "transform": TransformOptions,
           "backtranslate": BacktranslateOptions, "tools": ToolsOptions, "curate": CurateOptions}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="synthetic data: generate, evolve, transform, backtranslate, tool calls, curate")
    ssub = p.add_subparsers(dest="synth_command", metavar="COMMAND", parser_class=type(p))
    for name, cls in CONFIGS.items():
        q = ssub.add_parser(name, help=HELP[name], description=f"{HELP[name]}. Example: {EXAMPLES[name]}")
        add_config_args(q, cls)
        q.set_defaults(func=cmd_curate if name == "curate" else cmd_generate, config_cls=cls)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
