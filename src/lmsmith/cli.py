"""The `lmsmith` command: parses arguments and dispatches to the stages. No logic lives here.

Each stage module exposes `register(subparsers)` adding its commands; a command's handler takes the
parsed namespace and returns an exit code. User mistakes (LmsmithError) print as one line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shlex
import sys

from lmsmith import __version__
from lmsmith.errors import LmsmithError, did_you_mean

# Stage command modules, in help order. A stage adds its commands by appending here.
COMMAND_MODULES = [
    "lmsmith.ops.cli",
    "lmsmith.data.cli",
    "lmsmith.train.cli",
    "lmsmith.evaluate.cli",
    "lmsmith.compress.cli",
    "lmsmith.guard.cli",
    "lmsmith.serve.cli",
    "lmsmith.ops.deploy_cli",
    "lmsmith.ops.monitor.cli",
    "lmsmith.ui.cli",
    "lmsmith.align.cli",
    "lmsmith.demo",
]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the problem and where to look; no silent prefix
    matching (`--step` is not `--steps`); a misspelled flag gets the closest real one."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        args = self._negative_values(list(sys.argv[1:] if args is None else args))
        if not self._subparsers:  # a leaf command: name a misspelled flag before "missing --x" errors
            flags = {o for a in self._actions for o in a.option_strings}
            before_dashdash = args[: args.index("--")] if "--" in args else args
            unknown = [a for a in before_dashdash if a.startswith("--") and a.split("=")[0] not in flags]
            if unknown:
                self.unknown(unknown)
        ns, extras = super().parse_known_args(args, namespace)
        if not hasattr(ns, "_parser") or getattr(ns, "_parser_depth", 0) <= self.prog.count(" "):
            ns._parser, ns._parser_depth = self, self.prog.count(" ")  # the deepest (sub)command parsed
        return ns, extras

    @staticmethod
    def _negative_values(args: list[str]) -> list[str]:
        """`--lr -1e-3`: argparse takes '-1e-3' for an option; glue it to its flag as `--lr=-1e-3`."""
        out: list[str] = []
        for a in args:
            if (out and NEGATIVE_NUMBER.match(a) and out[-1].startswith("--") and "=" not in out[-1]
                    and out[-1] != "--"):
                out[-1] = f"{out[-1]}={a}"
            else:
                out.append(a)
        return out

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            ns._parser.unknown(extras)
        return ns

    def unknown(self, extras: list[str]) -> None:
        flags = [o for a in self._actions for o in a.option_strings]
        hints = [did_you_mean(x.split("=")[0], flags) for x in extras if x.startswith("-")]
        hint = next((h for h in hints if h), "")
        self.error(f"unrecognized arguments: {' '.join(extras)}" + (f"; {hint}" if hint else ""))

    def error(self, message: str) -> None:  # type: ignore[override]
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            hint = did_you_mean(m.group(1), re.findall(r"'([^']*)'", m.group(2)) or m.group(2).split(", "))
            message += f"; {hint}" if hint else ""
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


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
