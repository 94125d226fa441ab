"""`lmsmith align score|sample`: reward-model scoring and rejection sampling (best-of-N / preference pairs).

Training commands for alignment (`train rm|dpo|grpo`) live with the other training commands."""

from __future__ import annotations

import argparse
import json
import sys

from lmsmith.config import POSITIVE_INT, add_config_args, config_from_args
from lmsmith.progress import out


def cmd_score(args: argparse.Namespace) -> int:
    from lmsmith.align.score import score_file

    res = score_file(args.reward_model, args.data, args.device, args.batch_size)
    if args.output:
        with open(args.output, "w") as f:
            for r in res["records"]:
                f.write(json.dumps(r) + "\n")
    if args.json:
        sys.stdout.write(json.dumps(res if args.records else res["summary"], indent=2) + "\n")
        return 0
    s = res["summary"]
    out.print(f"{s['records']} records scored by {s['reward_model']}: mean reward {s['mean_reward']:.4f} "
              f"(min {s['min_reward']:.4f}, max {s['max_reward']:.4f})")
    if s["pairs"]:
        out.print(f"pairs: {s['pairs']}, accuracy {s['accuracy']:.3f}, mean margin {s['margin']:.4f}, "
                  f"ties {s['ties']}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from lmsmith.align.sample import SampleConfig, sample_pairs

    stats = sample_pairs(config_from_args(SampleConfig, args))
    if args.json:
        sys.stdout.write(json.dumps(stats, indent=2) + "\n")
    else:
        out.print(stats["output"])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from lmsmith.align.sample import SampleConfig

    p = sub.add_parser("align", help="score answers with a reward model; sample best-of-N / preference pairs")
    asub = p.add_subparsers(dest="align_command", metavar="COMMAND", parser_class=type(p))
    s = asub.add_parser("score", help="score preference pairs or single answers with a reward model",
                        description="Example: lmsmith align score --reward-model my-rm --data pairs.jsonl --json")
    s.add_argument("--reward-model", required=True, metavar="NAME", help="reward model ref (from `train rm`)")
    s.add_argument("--data", required=True, metavar="FILE", help="JSONL of pairs (TRL formats) or single answers")
    s.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    s.add_argument("--records", action="store_true", help="with --json: include every record's scores")
    s.add_argument("--output", metavar="FILE", help="write every record's scores as JSONL")
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    s.add_argument("--batch-size", type=POSITIVE_INT, default=16)
    s.set_defaults(func=cmd_score)
    q = asub.add_parser("sample", help="sample N answers per prompt, score them, write best/worst pairs (or best-of-N)",
                        description="Example: lmsmith align sample --model my-sft --prompts prompts.jsonl --n 8 "
                                    "--scorer rm:my-rm --output pairs.jsonl")
    add_config_args(q, SampleConfig)
    q.add_argument("--json", action="store_true", help="print the statistics as JSON on stdout")
    q.set_defaults(func=cmd_sample)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
