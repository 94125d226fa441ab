"""`lmsmith deploy …`: canary, promote, rollback and status of a served alias."""

from __future__ import annotations

import argparse
import json

from lmsmith.progress import out


def _print(args: argparse.Namespace, d: dict, line: str) -> int:
    out.print(json.dumps(d, indent=2) if args.json else line)
    return 0


def cmd_canary(args: argparse.Namespace) -> int:
    from lmsmith.ops.deploy import canary

    d = canary(args.ref, args.weight, alias=args.alias, seed=args.seed)
    name = args.ref.partition("@")[0]
    return _print(args, d.model_dump(), f"{name}@{args.alias}: {d.weight:g}% of traffic to version {d.canary} "
                                        f"(seed {d.seed}, sticky per `user`); servers following the alias switch within a second")


def cmd_promote(args: argparse.Namespace) -> int:
    from lmsmith.ops.deploy import promote

    d = promote(args.name)
    return _print(args, d.model_dump(), f"{args.name}@{d.alias} -> version {d.history[-1].version} (canary promoted)")


def cmd_rollback(args: argparse.Namespace) -> int:
    from lmsmith.ops.deploy import rollback

    done = rollback(args.name, args.alias)
    line = (f"{done['model']}@{done['alias']}: canary {done['canary']} switched off (0% of traffic)"
            if done["action"] == "canary off" else
            f"{done['model']}@{done['alias']} -> version {done['to']} (was {done['from']})")
    return _print(args, done, line)


def cmd_status(args: argparse.Namespace) -> int:
    from lmsmith.ops.deploy import status

    s = status(args.name)
    line = f"{s['model']}@{s['alias']} -> version {s['target']}" + (
        f", canary version {s['canary']} at {s['weight']:g}%" if s["canary"] is not None and s["weight"] > 0 else "")
    return _print(args, s, line)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="deployments of a served alias: canary, promote, rollback, status")
    dsub = p.add_subparsers(dest="deploy_command", metavar="ACTION", required=True)
    s = dsub.add_parser("canary", help="send a share of NAME@ALIAS's traffic to another version")
    s.add_argument("ref", help="the canary version: NAME@V")
    s.add_argument("--weight", type=float, required=True, help="percent of requests to the canary (0-100)")
    s.add_argument("--alias", default="production", help="the alias being served (default: production)")
    s.add_argument("--seed", type=int, default=0, help="seed of the split (requests without a `user`)")
    s.set_defaults(func=cmd_canary)
    s = dsub.add_parser("promote", help="make the canary the alias target")
    s.add_argument("name")
    s.set_defaults(func=cmd_promote)
    s = dsub.add_parser("rollback", help="undo the latest change: switch a canary off, else restore the alias's previous target")
    s.add_argument("name", nargs="?", help="the model (default: the only one with a deployment)")
    s.add_argument("--alias", help="the alias (default: the deployment's)")
    s.set_defaults(func=cmd_rollback)
    s = dsub.add_parser("status", help="alias target, canary and recent moves")
    s.add_argument("name")
    s.set_defaults(func=cmd_status)
    for action in dsub.choices.values():
        action.add_argument("--json", action="store_true")
