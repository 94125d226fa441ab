"""Typed configuration: a pydantic model per command, loadable from YAML, overridden by CLI flags.

Each field of a config model becomes a `--flag` (underscores become dashes), so every option is
settable both ways. Precedence: model defaults < `--config FILE.yaml` < flags given on the command line.
"""

from __future__ import annotations

import argparse
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from lmsmith.errors import LmsmithError, did_you_mean

C = TypeVar("C", bound="Config")


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


class Config(BaseModel):
    """Base for command configs: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @classmethod
    def from_yaml(cls: type[C], path: str | Path, **overrides: Any) -> C:
        return build(cls, load_yaml(path), overrides, source=str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise LmsmithError(f"config file not found: {p}", "check the path given to --config")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise LmsmithError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise LmsmithError(f"config file {p} must be a mapping of option: value, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build(cls: type[C], base: dict[str, Any], overrides: dict[str, Any], source: str = "config") -> C:
    """Validate `base` updated by `overrides` into `cls`, turning pydantic errors into one clear line."""
    data = {**base, **overrides}
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        parts = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(root)"
            if err["type"] == "extra_forbidden":
                hint = did_you_mean(loc, list(cls.model_fields))
                parts.append(f"unknown option '{loc}'" + (f" ({hint})" if hint else ""))
            elif err["type"] == "missing":
                parts.append(f"missing required option '--{loc.replace('_', '-')}'")
            else:
                parts.append(f"option '{loc}': {err['msg']}")
        raise LmsmithError(f"invalid {source}: " + "; ".join(parts)) from None


def _flag_type(annotation: Any) -> tuple[Any, dict[str, Any]]:
    """Map a field annotation to argparse keyword arguments."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _flag_type(non_none[0])
        return None, {"type": str}
    if origin is Literal:
        return None, {"choices": list(args), "type": type(args[0])}
    if annotation is bool:
        return bool, {"action": argparse.BooleanOptionalAction}
    if origin in (list, tuple):
        inner = args[0] if args else str
        return list, {"type": _csv(inner)}
    if annotation in (int, float, str):
        return annotation, {"type": annotation}
    if annotation is Path:
        return Path, {"type": str}
    return None, {"type": str}


def number(kind: type, lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    """An argparse type for a bounded number: `--limit 0` is one clear usage error, not a silent 'all'."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, "
                                             f"got '{text}'") from None
        if lo is not None and (v <= lo if lo_open else v < lo) or hi is not None and v > hi:
            bound = " and ".join(b for b in ((f"> {lo:g}" if lo_open else f">= {lo:g}") if lo is not None else "",
                                             f"<= {hi:g}" if hi is not None else "") if b)
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return v

    parse.__name__ = kind.__name__
    return parse


POSITIVE_INT = number(int, 1)
NONNEGATIVE_INT = number(int, 0)
POSITIVE_FLOAT = number(float, 0, lo_open=True)
NONNEGATIVE_FLOAT = number(float, 0)
PORT = number(int, 1, 65535)


def _csv(inner: Any):
    def parse(text: str) -> list[Any]:
        return [inner(x) if inner in (int, float) else x for x in text.split(",") if x != ""]

    parse.__name__ = f"comma-separated {getattr(inner, '__name__', 'values')}"
    return parse


def add_config_args(parser: argparse.ArgumentParser, cls: type[Config], positional: tuple[str, ...] = ()) -> None:
    """Add one flag per field of `cls` (and `--config`). Unset flags stay absent from the namespace."""
    parser.add_argument("--config", metavar="FILE.yaml", default=argparse.SUPPRESS,
                        help="read options from a YAML file; flags on the command line win")
    for name, field in cls.model_fields.items():
        help_text = (field.description or "").replace("%", "%%")
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        if default not in (None, "", [], ()) and not isinstance(default, bool):
            shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
            help_text += f" (default: {shown})".replace("%", "%%")
        _, kwargs = _flag_type(field.annotation)
        if name in positional:
            kwargs.pop("action", None)
            parser.add_argument(name, help=help_text, nargs="?" if not field.is_required() else None,
                                default=argparse.SUPPRESS, **kwargs)
            continue
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS,
                            help=help_text, **kwargs)


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    ns = vars(args)
    base = load_yaml(ns["config"]) if ns.get("config") else {}
    overrides = {k: v for k, v in ns.items() if k in cls.model_fields}
    return build(cls, base, overrides, source=f"options (from {ns['config']} and flags)" if ns.get("config") else "options")
