"""`lmsmith generate …` (and, with the engine, `lmsmith serve …`)."""

from __future__ import annotations

import argparse
import sys


def cmd_generate(args: argparse.Namespace) -> int:
    from lmsmith.serve.generate import generate_text, stream_to_stdout

    schema = None
    if args.json_schema:
        import json
        from pathlib import Path

        src = Path(args.json_schema)
        try:
            schema = json.loads(src.read_text() if src.exists() else args.json_schema)
        except json.JSONDecodeError as e:
            from lmsmith.errors import LmsmithError

            raise LmsmithError(f"--json-schema is not valid JSON: {e}", "pass a JSON object or a path to a .json file") from None
    text = generate_text(args.ref, args.prompt, chat=args.chat, system=args.system, max_tokens=args.max_tokens,
                         temperature=args.temperature, seed=args.seed, dtype=args.dtype, on_text=stream_to_stdout,
                         top_p=args.top_p, top_k=args.top_k, stop=args.stop, json_schema=schema)
    if not text.endswith("\n"):
        sys.stdout.write("\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="complete a prompt (streams tokens as they arrive)")
    p.add_argument("ref", help="model reference: NAME, NAME@VERSION, NAME@ALIAS or a path")
    p.add_argument("--prompt", required=True)
    p.add_argument("--chat", action="store_true", help="apply the model's chat template")
    p.add_argument("--system", help="system message (with --chat)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--stop", action="append", help="stop string (repeatable); it is not printed")
    p.add_argument("--json-schema", help="constrain the output to this JSON schema (inline JSON or a .json file)")
    p.add_argument("--seed", type=int)
    p.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bfloat16 on GPU), bfloat16, float32, float16")
    p.set_defaults(func=cmd_generate)
