"""`lmsmith demo` (what `make demo` runs): the platform end to end, one step per stage.

Stages add their step to STEPS. Each step takes the shared context dict (e.g. `ctx["model"]`, the ref
the next step should use) and prints what it shows.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Callable

from lmsmith.errors import LmsmithError
from lmsmith.progress import console

QUESTION = "What is the capital of France? Answer in one word."


@dataclass
class Step:
    key: str  # short name for `lmsmith demo --only KEY,KEY`
    name: str
    run: Callable[[dict], None]


def step_pull(ctx: dict) -> None:
    from lmsmith.ops.importers import pull_default

    mv, created = pull_default()
    ctx["base"] = ctx["model"] = mv.ref
    console.print(f"{'pulled' if created else 'already in the registry:'} {mv.ref}")


def step_show(ctx: dict) -> None:
    from lmsmith.cli import main

    main(["models", "show", ctx["model"]])
    sys.stdout.flush()


def step_chat(ctx: dict) -> None:
    from lmsmith.serve.generate import generate_text, stream_to_stdout

    console.print(f"[bold]user:[/] {QUESTION}\n[bold]assistant:[/] ", end="")
    ctx["answer"] = generate_text(ctx["model"], QUESTION, chat=True, max_tokens=32, on_text=stream_to_stdout)
    print()


STEPS: list[Step] = [
    Step("pull", "pull the default model", step_pull),
    Step("show", "show its registry entry", step_show),
    Step("chat", "chat with it", step_chat),
]


def run(only: list[str] | None = None) -> dict:
    ctx: dict = {}
    for i, step in enumerate(STEPS, 1):
        if only and step.key not in only:
            continue
        console.rule(f"[bold]demo {i}/{len(STEPS)}: {step.name}")
        t = time.time()
        step.run(ctx)
        console.print(f"[dim]({time.time() - t:.1f} s)")
    return ctx


def cmd_demo(args: argparse.Namespace) -> int:
    only = [k for k in (args.only or "").split(",") if k]
    unknown = sorted(set(only) - {s.key for s in STEPS})
    if unknown:
        raise LmsmithError(f"unknown demo step(s): {', '.join(unknown)}", f"steps: {', '.join(s.key for s in STEPS)}")
    run(only or None)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the end-to-end demo (what `make demo` runs)")
    p.add_argument("--only", help="comma-separated step keys to run (default: all): " + ", ".join(s.key for s in STEPS))
    p.set_defaults(func=cmd_demo)
