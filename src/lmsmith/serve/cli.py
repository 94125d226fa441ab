"""`lmsmith generate …` (and, with the engine, `lmsmith serve …`)."""

from __future__ import annotations

import argparse
import sys


def cmd_generate(args: argparse.Namespace) -> int:
    from lmsmith.serve.generate import generate_text, stream_to_stdout

    text = generate_text(args.ref, args.prompt, chat=args.chat, system=args.system, max_tokens=args.max_tokens,
                         temperature=args.temperature, seed=args.seed, dtype=args.dtype, on_text=stream_to_stdout)
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
    p.add_argument("--seed", type=int)
    p.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bfloat16 on GPU), bfloat16, float32, float16")
    p.set_defaults(func=cmd_generate)
