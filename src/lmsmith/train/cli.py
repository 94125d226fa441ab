"""`lmsmith train pretrain|sft|resume`: thin wrappers over `lmsmith.train.loop.train`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from lmsmith.config import POSITIVE_INT, add_config_args, build, config_from_args
from lmsmith.errors import LmsmithError
from lmsmith.progress import out
from lmsmith.train.config import DistillConfig, DPOConfig, GRPOConfig, PretrainConfig, RMConfig, SFTConfig, TrainConfig

EXAMPLES = {
    "pretrain": "lmsmith train pretrain --model tiny --data corpus/ --seq-len 512 --steps 1000 --output-name tiny-cs",
    "sft": "lmsmith train sft --model smollm2-135m-instruct --data chat.jsonl --lora-r 16 --epochs 3 --output-name my-sft",
    "dpo": "lmsmith train dpo --model my-sft --data pairs.jsonl --beta 0.1 --loss sigmoid --lora-r 16 --output-name my-dpo",
    "rm": "lmsmith train rm --model smollm2-135m-instruct --data pairs.jsonl --output-name my-rm",
    "grpo": "lmsmith train grpo --model my-sft --prompts tasks.jsonl --reward verifier:exact_number --group-size 8 "
            "--output-name my-grpo",
    "distill": "lmsmith train distill --teacher big --student small --data corpus.txt --kd forward --alpha 0.5 "
               "--steps 500 --output-name small-kd",
}


def _report(result, seconds: float) -> int:
    if result.interrupted:
        return 130
    from lmsmith.progress import console
    from lmsmith.train.tracking import read_metrics

    m = result.metrics
    evals = [r["loss"] for r in read_metrics(result.run_dir / "metrics.jsonl") if r.get("split") == "eval"]
    parts = [f"{m.get('steps', result.step)} steps", f"{int(m.get('tokens', 0)):,} tokens", f"{seconds:.0f} s",
             f"final train loss {m['train_loss']:.4f}" if m.get("train_loss") is not None else "",
             f"best eval loss {min(evals):.4f}" if evals else ""]
    console.print("done: " + ", ".join(p for p in parts if p) + f"; run {result.run_dir}")
    if result.ref:
        console.print(f"registered {result.ref}: try `lmsmith generate {result.ref} --prompt ...`")
    out.print(result.ref or str(result.output_dir))
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    import shlex

    return shlex.split(getattr(args, "command_line", "lmsmith"))[1:]


def cmd_train(args: argparse.Namespace) -> int:
    from lmsmith.train.launch import needs_relaunch, relaunch
    from lmsmith.train.loop import train

    cfg = config_from_args(args.config_cls, args)
    if needs_relaunch(cfg.nproc):  # --nproc N: the same command again, under torchrun
        return relaunch(int(cfg.nproc or 1), _argv(args))
    t0 = time.time()
    return _report(train(cfg, getattr(args, "command_line", None), _objective(cfg)), time.time() - t0)


def _objective(cfg: TrainConfig):
    """GRPO's objective needs the engine, so it lives in the align stage; this command module (the composition
    root, imported by nobody) wires it in. The loop itself never imports align or serve."""
    if cfg.task != "grpo":
        return None
    from lmsmith.align.grpo import GRPOObjective

    return GRPOObjective(cfg)


def cmd_resume(args: argparse.Namespace) -> int:
    from lmsmith.train.loop import config_class, train

    run_dir = Path(args.run_dir)
    cfg_file = run_dir / "config.yaml"
    if not cfg_file.is_file():
        raise LmsmithError(f"{run_dir} is not a training run directory (no config.yaml)",
                           "pass the run directory printed when the run started")
    saved = yaml.safe_load(cfg_file.read_text()) or {}
    saved.pop("_run_id", None)
    cls = config_class(saved.get("task", "pretrain"))
    override = {"resume": True, "run_dir": str(run_dir)}
    if args.nproc is not None:  # resume on a different number of processes (distributed checkpoints)
        override["nproc"] = args.nproc
    cfg = build(cls, saved, override, source=str(cfg_file))
    from lmsmith.train.launch import needs_relaunch, relaunch

    if needs_relaunch(cfg.nproc):
        return relaunch(int(cfg.nproc or 1), _argv(args))
    t0 = time.time()
    return _report(train(cfg, getattr(args, "command_line", None), _objective(cfg)), time.time() - t0)


def _tune(parser: argparse.ArgumentParser) -> None:
    """`--data` takes several values; `--model-config` is the short name of `--model-config-file`."""
    for action in parser._actions:
        if action.dest in ("data", "eval_data"):
            action.nargs = "+"
        if action.dest == "task":
            action.help = argparse.SUPPRESS
        if action.dest == "model_config_file":
            action.option_strings.append("--model-config")
            parser._option_string_actions["--model-config"] = action
        if action.dest == "reward":
            action.nargs = "+"
        if action.dest == "data" and parser.get_default("config_cls") is GRPOConfig:
            action.option_strings.append("--prompts")  # GRPO data are prompts: --prompts reads better
            parser._option_string_actions["--prompts"] = action


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="pretrain, continue pretraining or fine-tune (SFT, LoRA, QLoRA) a model")
    tsub = p.add_subparsers(dest="train_command", metavar="COMMAND", parser_class=type(p))
    for name, cls, help_text in (("pretrain", PretrainConfig, "(continued) pretraining on text corpora, packed"),
                                 ("sft", SFTConfig, "supervised fine-tuning on chat JSONL (LoRA by default)"),
                                 ("dpo", DPOConfig, "preference tuning on chosen/rejected pairs (DPO, IPO, hinge, "
                                                    "SimPO, ORPO)"),
                                 ("rm", RMConfig, "a Bradley-Terry reward model (scalar head) on preference pairs"),
                                 ("grpo", GRPOConfig, "online RL with verifiable rewards (GRPO), rollouts from "
                                                      "lmsmith's engine"),
                                 ("distill", DistillConfig, "knowledge distillation: a student learns a teacher's "
                                                            "token distributions (same tokenizer)")):
        q = tsub.add_parser(name, help=help_text, description=f"{help_text}. Example: {EXAMPLES[name]}")
        add_config_args(q, cls)
        q.set_defaults(func=cmd_train, config_cls=cls)
        _tune(q)
    r = tsub.add_parser("resume", help="continue a run from its last checkpoint (exactly)")
    r.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    r.add_argument("--nproc", type=POSITIVE_INT, default=None, help="processes to resume on (default: as the run was started)")
    r.set_defaults(func=cmd_resume)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


__all__ = ["register", "TrainConfig"]
