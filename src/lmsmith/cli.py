"""The `lmsmith` command: parses arguments and dispatches to the stages. No logic lives here.

Each stage module exposes `register(subparsers)` adding its commands; a command's handler takes the
parsed namespace and returns an exit code. User mistakes (LmsmithError) print as one line.
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys

from lmsmith import __version__
from lmsmith.config import Parser
from lmsmith.errors import LmsmithError

# Stage command modules, in help order. A stage adds its commands by appending here.
COMMAND_MODULES = [
    "lmsmith.ops.cli",
    "lmsmith.data.cli",
    "lmsmith.data.synth.cli",
    "lmsmith.train.cli",
    "lmsmith.evaluate.cli",
    "lmsmith.compress.cli",
    "lmsmith.guard.cli",
    "lmsmith.rag.cli",
    "lmsmith.serve.cli",
    "lmsmith.ops.deploy_cli",
    "lmsmith.ops.monitor.cli",
    "lmsmith.ui.cli",
    "lmsmith.align.cli",
    "lmsmith.demo",
]


def build_parser() -> Parser:
    parser = Parser(prog="lmsmith", description="Adapt, train, evaluate, compress, serve and operate LLMs.")
    parser.add_argument("--version", action="version", version=f"lmsmith {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug_flag = "--debug" in argv  # accepted anywhere on the line, not only before the command
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = "lmsmith " + shlex.join(argv)  # recorded in lineage by commands that register models
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = debug_flag or bool(os.environ.get("LMSMITH_DEBUG"))
    try:
        return int(args.func(args) or 0)
    except LmsmithError as e:
        if debug:
            raise
        sys.stderr.write(f"error: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as e:  # an internal bug: still one line unless --debug
        if debug:
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        sys.stderr.write(f"error: {type(e).__name__}: {first} (run with --debug for the traceback)\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
