"""Typed configuration: a pydantic model per command, loadable from YAML, overridden by CLI flags.

Each field of a config model becomes a `--flag` (underscores become dashes), so every option is
settable both ways. Precedence: model defaults < `--config FILE.yaml` < flags given on the command line.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from lmsmith.errors import LmsmithError

C = TypeVar("C", bound="Config")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the problem and where to look."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


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
                parts.append(f"unknown option '{loc}'")
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
        if not field.is_required() and field.default is not None and not isinstance(field.default, bool):
            help_text += f" (default: {field.default})"
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
