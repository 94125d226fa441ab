"""Deployments: move an alias with history, start/stop a canary, promote it, roll back.

The state lives next to the model in the registry (`registry/models/NAME/deploy.json`, schema in
serve.routing) and servers following `NAME@ALIAS` pick changes up within a second. Rollback undoes the
latest change: an active canary is switched off (0% of traffic); otherwise the alias goes back to the
version it pointed at before its last move.
"""

from __future__ import annotations

from typing import Any

from lmsmith.errors import LmsmithError
from lmsmith.registry.registry import Registry, parse_ref
from lmsmith.serve.routing import AliasMove, DeployState, deploy_path, read_deploy, write_deploy


def _alias_version(reg: Registry, name: str, alias: str) -> int | None:
    try:
        return reg.get(f"{name}@{alias}").version
    except LmsmithError:
        return None


def move_alias(ref: str, alias: str, registry: Registry | None = None) -> Any:
    """`lmsmith models alias NAME@V ALIAS`, remembering where the alias pointed for `deploy rollback`."""
    reg = registry or Registry()
    name, _ = parse_ref(ref)
    previous = _alias_version(reg, name, alias)
    mv = reg.set_alias(ref, alias)
    if previous != mv.version:
        d = read_deploy(reg, name)
        d.history.append(AliasMove(alias=alias, previous=previous, version=mv.version))
        d.history = d.history[-100:]
        write_deploy(reg, name, d)
    return mv


def canary(ref: str, weight: float, alias: str = "production", seed: int = 0,
           registry: Registry | None = None) -> DeployState:
    """Send `weight` percent of NAME@ALIAS's traffic to the version `ref` names."""
    reg = registry or Registry()
    if not 0 <= weight <= 100:
        raise LmsmithError(f"--weight must be a percentage between 0 and 100, got {weight:g}", "e.g. --weight 10")
    name, sel = parse_ref(ref)
    if sel is None:
        raise LmsmithError(f"'{ref}' names no version", "name the canary version: NAME@4")
    mv = reg.get(ref)
    stable = _alias_version(reg, name, alias)
    if stable is None:
        raise LmsmithError(f"model '{name}' has no alias '{alias}' to put a canary next to",
                           f"point it at the stable version first: lmsmith models alias {name}@N {alias}")
    if stable == mv.version:
        raise LmsmithError(f"{name}@{alias} already is version {mv.version}", "a canary is another version")
    d = read_deploy(reg, name)
    d.alias, d.canary, d.weight, d.seed = alias, mv.version, float(weight), seed
    write_deploy(reg, name, d)
    return d


def promote(name: str, registry: Registry | None = None) -> DeployState:
    """Make the canary the alias target (all traffic), keeping the move in the history."""
    reg = registry or Registry()
    d = read_deploy(reg, name)
    if d.canary is None:
        raise LmsmithError(f"model '{name}' has no canary to promote", "start one: lmsmith deploy canary NAME@V --weight 10")
    version = d.canary
    d.canary, d.weight = None, 0.0
    write_deploy(reg, name, d)
    move_alias(f"{name}@{version}", d.alias, reg)
    return read_deploy(reg, name)


def rollback(name: str | None = None, alias: str | None = None, registry: Registry | None = None) -> dict[str, Any]:
    """Undo the latest change of NAME's deployment; returns what was done."""
    reg = registry or Registry()
    name = name or _only_deployed(reg)
    d = read_deploy(reg, name)
    alias = alias or d.alias
    if d.canary is not None and d.weight > 0 and d.alias == alias:
        done = {"model": name, "alias": alias, "action": "canary off", "canary": d.canary, "weight": 0.0}
        d.canary, d.weight = None, 0.0
        write_deploy(reg, name, d)
        return done
    moves = [m for m in d.history if m.alias == alias]
    if not moves:
        raise LmsmithError(f"nothing to roll back for {name}@{alias}: no canary and no earlier alias target",
                           "see `lmsmith deploy status`")
    last = moves[-1]
    if last.previous is None:
        raise LmsmithError(f"{name}@{alias} had no earlier target (it was created by its last move)",
                           f"point it somewhere explicitly: lmsmith models alias {name}@N {alias}")
    reg.set_alias(f"{name}@{last.previous}", alias)
    d.history.remove(last)
    write_deploy(reg, name, d)
    return {"model": name, "alias": alias, "action": "alias restored", "from": last.version, "to": last.previous}


def _only_deployed(reg: Registry) -> str:
    names = [n for n in reg.names() if deploy_path(reg, n).exists()]
    if len(names) != 1:
        raise LmsmithError("name the model to roll back" if names else "no model has a deployment to roll back",
                           f"lmsmith deploy rollback NAME (deployed: {', '.join(names) or 'none'})")
    return names[0]


def status(name: str, registry: Registry | None = None) -> dict[str, Any]:
    reg = registry or Registry()
    d = read_deploy(reg, name)
    aliases = {mv.version: mv.aliases for mv in reg.list(name)}
    return {"model": name, "alias": d.alias, "target": _alias_version(reg, name, d.alias), "canary": d.canary,
            "weight": d.weight, "seed": d.seed, "aliases": {a: v for v, al in aliases.items() for a in al},
            "history": [m.model_dump() for m in d.history[-10:]]}
