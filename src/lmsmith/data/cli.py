"""`lmsmith data clean …` and `lmsmith tokenizer fertility|train|extend|check …`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from lmsmith.config import POSITIVE_INT
from lmsmith.errors import LmsmithError
from lmsmith.progress import console, out


def _command_line() -> str:
    return "lmsmith " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def cmd_clean(args: argparse.Namespace) -> int:
    from lmsmith.config import config_from_args
    from lmsmith.data.clean import CleanConfig, clean

    cfg = config_from_args(CleanConfig, args)
    report = clean(cfg)
    if args.json:
        print(json.dumps({k: report[k] for k in ("documents_in", "documents_out", "steps", "reasons", "pii",
                                                 "near_dedup", "docs_per_second")}, indent=2))
    else:
        out.print(f"{cfg.output}/manifest.json  ({report['documents_out']:,} documents; report: "
                  f"{cfg.output}/report.md)")
    for w in report["warnings"]:
        console.print(f"[yellow]warning:[/] {w}")
    if report["bad_lines"]:
        console.print(f"[yellow]skipped {report['bad_lines']} bad line(s)[/], e.g. {report['bad_line_examples'][0]}")
    return 0


def _parse_texts(items: list[str]) -> dict[str, str]:
    from lmsmith.data.tokenizer_tools import read_texts

    texts = {}
    for item in items:
        if "=" not in item:
            raise LmsmithError(f"--text '{item}' needs the form LANG=FILE", "e.g. --text cs=czech.txt")
        lang, path = item.split("=", 1)
        texts[lang] = "\n\n".join(read_texts(path, max_chars=2_000_000))
    return texts


def cmd_fertility(args: argparse.Namespace) -> int:
    from rich.table import Table

    from lmsmith.data.tokenizer_tools import fertility_rows, plot_fertility

    rows = fertility_rows(args.tokenizer, _parse_texts(args.text))
    if args.plot:
        plot_fertility(rows, args.plot)
        console.print(f"chart: {args.plot}")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    t = Table("tokenizer", "lang", "tokens/word", "chars/token", "bytes/token", "words split 3+")
    for r in rows:
        t.add_row(r["tokenizer"], r["lang"], f"{r['tokens_per_word']:.3f}", f"{r['chars_per_token']:.2f}",
                  f"{r['bytes_per_token']:.2f}", f"{100 * r['split3_share']:.1f}%")
    out.print(t)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from lmsmith.data.special_tokens import validate_special_tokens
    from lmsmith.data.tokenizer_tools import load_any_tokenizer, train_tokenizer

    specials = args.special_tokens.split(",") if args.special_tokens else None
    with console.status(f"training a {args.vocab_size}-token byte-level BPE …"):
        path = train_tokenizer(args.corpus, args.output, args.vocab_size, args.min_frequency, specials,
                               args.bos, args.eos, args.pad)
    report = validate_special_tokens(load_any_tokenizer(str(path)), require_tools=True)
    if not report.ok:
        raise LmsmithError("trained tokenizer has bad special tokens: " + "; ".join(report.problems()))
    out.print(str(path))
    return 0


def cmd_extend(args: argparse.Namespace) -> int:
    from lmsmith.data.tokenizer_tools import extend_model

    mv, stats = extend_model(args.ref, args.corpus, args.num_tokens, args.output_name, init=args.init,
                             protect=args.protect, min_frequency=args.min_frequency, eval_text=args.eval_text,
                             command=_command_line())
    if args.json:
        print(json.dumps({"ref": mv.ref, **stats}, indent=2))
        return 0
    console.print(f"added {stats['new_tokens']} tokens ({stats['vocab_before']} -> {stats['vocab_after']}); "
                  f"tokens/word on the corpus {stats['corpus_tokens_per_word_before']:.3f} -> "
                  f"{stats['corpus_tokens_per_word_after']:.3f}")
    if "eval_reduction" in stats:
        console.print(f"held-out: {stats['eval_tokens_per_word_before']:.3f} -> {stats['eval_tokens_per_word_after']:.3f}"
                      f" tokens/word ({100 * stats['eval_reduction']:.1f}% fewer)")
    out.print(mv.ref)
    return 0


def cmd_add_special(args: argparse.Namespace) -> int:
    from lmsmith.data.tokenizer_tools import add_special_tokens

    mv, new = add_special_tokens(args.ref, args.tokens.split(","), args.output_name, command=_command_line())
    console.print(f"added {len(new)} special token(s): {', '.join(new)}")
    out.print(mv.ref)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from lmsmith.data.special_tokens import validate_special_tokens
    from lmsmith.data.tokenizer_tools import load_any_tokenizer

    report = validate_special_tokens(load_any_tokenizer(args.tokenizer), require_chat=not args.no_chat,
                                     require_tools=args.tools)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0 if report.ok else 1
    for c in report.checks:
        mark = "[green]ok[/]" if c.ok else f"[red]{c.problem}[/]"
        console.print(f"{c.role:12} {c.token!s:24} ids={c.ids} {mark}")
    bad = [c for c in report.checks if not c.ok]
    if not bad:
        out.print(f"ok: all {len(report.checks)} checks pass")
        return 0
    out.print(f"{len(bad)} of {len(report.checks)} checks fail: " + "; ".join(report.problems()))
    missing = [c.token for c in bad if c.role == "tool_tag" and c.token]
    if missing:
        out.print(f"add the tool-call tags as special tokens: lmsmith tokenizer add-special {args.tokenizer} "
                  f"--tokens '{','.join(missing)}' --output-name NAME (then fine-tune on tool-call data, "
                  "e.g. `lmsmith train sft` with tool_calls)")
    return 1


def cmd_tokenize(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmsmith.data.corpus import tokenize_corpus
    from lmsmith.data.tokenizer_tools import load_any_tokenizer

    corpus = tokenize_corpus(args.corpus, load_any_tokenizer(args.tokenizer), workers=args.workers,
                             skip_bad_lines=args.skip_bad_lines, cache_root=Path(args.output) if args.output else None,
                             executor=args.executor, ray_address=args.ray_address, num_cpus=args.num_cpus)
    if args.json:
        print(json.dumps({"dir": str(corpus.dir), "documents": corpus.n_docs, "tokens": corpus.n_tokens,
                          "bad_lines": corpus.meta.get("bad_lines", 0)}, indent=2))
    else:
        out.print(str(corpus.dir))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from lmsmith.config import add_config_args
    from lmsmith.data.clean import CleanConfig

    data = sub.add_parser("data", help="prepare corpora: clean, deduplicate, filter by language and quality")
    dsub = data.add_subparsers(dest="data_command", metavar="COMMAND")
    p = dsub.add_parser("clean", help="clean a corpus into sharded JSONL with a manifest and a report")
    add_config_args(p, CleanConfig, positional=("inputs",))
    p.set_defaults(func=cmd_clean)
    p.add_argument("--json", action="store_true", help="print the report summary as JSON")
    # a positional list: take every remaining path
    for action in p._actions:
        if action.dest == "inputs":
            action.nargs = "+"
            action.type = str
    data.set_defaults(func=lambda a: (data.print_help(), 2)[1])

    p = dsub.add_parser("tokenize", help="build the memory-mapped token cache `lmsmith train` reads (locally or on Ray)")
    p.add_argument("corpus", nargs="+", help="files, globs or directories (a `data clean` output reads its shards)")
    p.add_argument("--tokenizer", required=True, help="model ref, model dir or tokenizer.json (the one you will train)")
    p.add_argument("--output", help="cache root (default: $LMSMITH_HOME/cache/tokens, where `lmsmith train` looks; "
                                    "entries are keyed by the files' and the tokenizer's hashes)")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--ray-address", help="Ray cluster to join: auto, ray://HOST:10001 or HOST:6379 (default: a local one)")
    p.add_argument("--num-cpus", type=POSITIVE_INT, help="CPUs of the local Ray cluster (default: all)")
    p.add_argument("--workers", type=POSITIVE_INT, help="local worker processes (default: up to 8)")
    p.add_argument("--skip-bad-lines", action="store_true", help="skip broken JSONL lines (counted) instead of stopping")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tokenize)

    tok = sub.add_parser("tokenizer", help="tokenizer fertility, training and vocabulary extension")
    tsub = tok.add_subparsers(dest="tokenizer_command", metavar="COMMAND")
    tok.set_defaults(func=lambda a: (tok.print_help(), 2)[1])

    p = tsub.add_parser("fertility", help="tokens per word etc. per tokenizer and language, table + bar chart")
    p.add_argument("--tokenizer", action="append", required=True, metavar="REF_OR_PATH",
                   help="model ref, model dir or tokenizer.json (repeatable)")
    p.add_argument("--text", action="append", required=True, metavar="LANG=FILE",
                   help="text sample per language, .txt or .jsonl with a text field (repeatable)")
    p.add_argument("--plot", default="fertility.png", help="bar chart PNG path ('' to skip)")
    p.add_argument("--json", action="store_true", help="print rows as JSON")
    p.set_defaults(func=cmd_fertility)

    p = tsub.add_parser("train", help="train a byte-level BPE tokenizer with special tokens and a chat template")
    p.add_argument("--corpus", action="append", required=True, metavar="FILE", help=".txt or .jsonl (repeatable)")
    p.add_argument("--output", required=True, help="directory to save the HF tokenizer into")
    p.add_argument("--vocab-size", type=POSITIVE_INT, default=32000)
    p.add_argument("--min-frequency", type=POSITIVE_INT, default=2)
    p.add_argument("--special-tokens", default="", help="comma-separated (default: <|endoftext|>, ChatML and "
                   "tool-call tokens)")
    p.add_argument("--bos", default="<|im_start|>")
    p.add_argument("--eos", default="<|im_end|>")
    p.add_argument("--pad", default="<|endoftext|>")
    p.set_defaults(func=cmd_train)

    p = tsub.add_parser("extend", help="add new tokens learned from a target-language corpus to a model")
    p.add_argument("ref", help="model ref or directory")
    p.add_argument("--corpus", required=True, help="target-language text (.txt or .jsonl)")
    p.add_argument("--num-tokens", type=POSITIVE_INT, required=True, help="how many new tokens to add")
    p.add_argument("--output-name", required=True, help="registry name of the extended model")
    p.add_argument("--init", choices=["pieces", "mean"], default="pieces",
                   help="new rows = mean of the old pieces' embeddings, or mean of all rows")
    p.add_argument("--protect", help="text (e.g. English) whose tokenization must not change")
    p.add_argument("--eval-text", help="held-out target-language text to report fertility on")
    p.add_argument("--min-frequency", type=POSITIVE_INT, default=2)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_extend)

    p = tsub.add_parser("add-special", help="add special tokens (e.g. tool-call tags) to a model; new rows = mean row")
    p.add_argument("ref", help="model ref or directory")
    p.add_argument("--tokens", required=True, help="comma-separated, e.g. '<tool_call>,</tool_call>'")
    p.add_argument("--output-name", required=True, help="registry name of the result")
    p.set_defaults(func=cmd_add_special)

    p = tsub.add_parser("check", help="validate EOS / chat header / tool-call special tokens")
    p.add_argument("tokenizer", help="model ref, model dir or tokenizer.json")
    p.add_argument("--tools", action="store_true", help="also require <tool_call> tags")
    p.add_argument("--no-chat", action="store_true", help="do not require chat header tokens")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)
