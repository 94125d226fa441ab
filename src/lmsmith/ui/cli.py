"""`lmsmith ui`: the web UI for the registry, runs and reports, without serving a model."""

from __future__ import annotations

import argparse
import os


def cmd_ui(args: argparse.Namespace) -> int:
    import uvicorn

    from lmsmith.progress import console
    from lmsmith.ui.app import create_app

    app = create_app(api_key=args.api_key or os.environ.get("LMSMITH_API_KEY"))
    console.print(f"lmsmith UI at http://{args.host}:{args.port}/ui/models (Ctrl-C stops); "
                  "chat with a model: `lmsmith serve MODEL` and open its /ui")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="web UI for models, runs and reports (the playground comes with `lmsmith serve`)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--api-key", help="require this bearer key for the UI's data (default: $LMSMITH_API_KEY)")
    p.set_defaults(func=cmd_ui)
