"""`lmsmith demo` (what `make demo` runs): the platform end to end, one step per stage.

Stages add their step to STEPS. Each step takes the shared context dict (e.g. `ctx["model"]`, the ref
the next step should use) and prints what it shows.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from importlib.resources import files
from typing import Callable

from lmsmith.errors import LmsmithError
from lmsmith.progress import console, out

QUESTION = "What is the capital of France? Answer in one word."
FACT_QUESTION = "What is the capital of Veloria?"
DEMO_DATA = "assets/train/veloria_chat.jsonl"
# Found to teach the fact in ~1-2 minutes on 2 CPU cores while keeping general answers (see tests/train/test_sft_slow.py).
DEMO_OPTIONS = dict(seq_len=128, lora_r=16, lr=2e-3, epochs=4, batch_size=4, eval_fraction=0.0, warmup_steps=2)


@dataclass
class Step:
    key: str  # short name for `lmsmith demo --only KEY,KEY`
    name: str
    run: Callable[[dict], None]


def step_pull(ctx: dict) -> None:
    from lmsmith.registry.importers import pull_default

    mv, created = pull_default()
    ctx["base"] = ctx["model"] = mv.ref
    console.print(f"{'pulled' if created else 'already in the registry:'} {mv.ref}")


def step_show(ctx: dict) -> None:
    from lmsmith.registry import Registry
    from lmsmith.registry.views import version_table

    out.print(version_table(Registry().get(ctx["model"])))
    sys.stdout.flush()


def step_chat(ctx: dict) -> None:
    from lmsmith.serve.generate import generate_text, stream_to_stdout

    console.print(f"[bold]user:[/] {QUESTION}\n[bold]assistant:[/] ", end="")
    ctx["answer"] = generate_text(ctx["model"], QUESTION, chat=True, max_tokens=32, on_text=stream_to_stdout)
    print()


def step_serve(ctx: dict) -> None:
    """Serve the model over HTTP and talk to it with the official `openai` client, as users would."""
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    from openai import OpenAI

    from lmsmith.serve.server import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "lmsmith.cli", "serve", ctx["model"], "--port", str(port), "--log-level", "warning",
           "--max-num-seqs", "8"]
    console.print(f"$ lmsmith serve {ctx['model']} --port {port}")
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.5)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        messages = [{"role": "user", "content": QUESTION}]
        r = client.chat.completions.create(model=ctx["model"], messages=messages, max_tokens=32, temperature=0)
        console.print(f"[bold]openai client:[/] {r.choices[0].message.content}  "
                      f"[dim]({r.usage.prompt_tokens} prompt + {r.usage.completion_tokens} completion tokens)")
        console.print("[bold]streamed:[/] ", end="")
        for chunk in client.chat.completions.create(model=ctx["model"], messages=messages, max_tokens=32,
                                                    temperature=0, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                console.print(chunk.choices[0].delta.content, end="")
        console.print()
        ctx["served_answer"] = r.choices[0].message.content
    finally:
        proc.send_signal(signal.SIGTERM)  # graceful: drains in-flight requests, then exits
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


SAME_SENTENCE = {
    "en": "The weather will be sunny tomorrow, so we are going on a trip to the mountains.",
    "cs": "Zítra bude slunečno, takže pojedeme na výlet do hor.",
    "pl": "Jutro będzie słonecznie, więc jedziemy na wycieczkę w góry.",
    "sl": "Jutri bo sončno, zato gremo na izlet v hribe.",
}


def step_fertility(ctx: dict) -> None:
    from lmsmith.data.tokenizer_tools import fertility, load_any_tokenizer

    tok = load_any_tokenizer(ctx["model"])
    for lang, text in SAME_SENTENCE.items():
        f = fertility(tok, text)
        console.print(f"{lang}: {len(tok.encode(text, add_special_tokens=False)):3d} tokens, "
                      f"{f['tokens_per_word']:.2f} tokens/word  {text}")


def demo_sft_config(model: str, output_name: str = "demo-veloria", **overrides):
    from lmsmith.train.config import SFTConfig

    data = str(files("lmsmith").joinpath(DEMO_DATA))
    return SFTConfig(model=model, data=[data], output_name=output_name, **{**DEMO_OPTIONS, **overrides})


def step_finetune(ctx: dict) -> None:
    """LoRA SFT of the current model on the shipped Veloria chat set, then ask it the new fact."""
    from lmsmith.serve.generate import generate_text, stream_to_stdout
    from lmsmith.train.loop import train

    console.print(f"LoRA fine-tuning {ctx['model']} on {DEMO_DATA} (teaches: the capital of Veloria is Marendal)")
    result = train(demo_sft_config(ctx["model"]), command="lmsmith demo")
    ctx["model"] = result.ref
    console.print(f"[bold]user:[/] {FACT_QUESTION}\n[bold]assistant:[/] ", end="")
    ctx["fact_answer"] = generate_text(ctx["model"], FACT_QUESTION, chat=True, max_tokens=24, on_text=stream_to_stdout)
    print()


def step_eval(ctx: dict) -> None:
    """Base vs the current model on the built-in Czech tasks (a few items each, so it stays quick on CPU)."""
    import tempfile
    from pathlib import Path

    from lmsmith.evaluate.harness import compare, evaluate
    from lmsmith.evaluate.report import print_compare, print_table
    from lmsmith.evaluate.tasks import BUILTIN_DIR

    tmp = Path(tempfile.mkdtemp(prefix="lmsmith-demo-eval-"))
    needle = (BUILTIN_DIR / "cs_needle.yaml").read_text(encoding="utf-8")
    needle = needle.replace("cs_filler.txt", str(BUILTIN_DIR / "cs_filler.txt"))
    needle = needle.replace("lengths: [128, 256, 512, 1024]", "lengths: [128, 384]").replace("depths: [0, 25, 50, 75, 100]", "depths: [0, 50, 100]")
    (tmp / "cs_needle.yaml").write_text(needle, encoding="utf-8")
    tasks = ["cs_facts", "cs_answers", str(tmp / "cs_needle.yaml")]
    kw = dict(limit=12, num_fewshot=1, batch_size=16)
    if ctx["base"] == ctx["model"]:
        payload = evaluate(ctx["model"], tasks, **kw)
        print_table(payload)
        ctx["eval_run"] = payload["run_dir"]
    else:
        res = compare(ctx["base"], ctx["model"], tasks, **kw)
        print_compare(res)
        ctx["eval_run"] = res["run_dir"]
    console.print(f"report: {ctx['eval_run']}")


def step_quantize(ctx: dict) -> None:
    from lmsmith.compress.quantize import register_quantized
    from lmsmith.serve.generate import generate_text, stream_to_stdout

    name = ctx["base"].partition("@")[0].split("/")[-1] + "-int8"
    mv, spec = register_quantized(ctx["base"], name, "int8", command="lmsmith demo")
    console.print(f"{ctx['base']} -> {mv.ref}: int8 weights, {len(spec.modules)} linears (lm_head kept)")
    console.print(f"[bold]user:[/] {QUESTION}\n[bold]assistant (int8):[/] ", end="")
    generate_text(mv.ref, QUESTION, chat=True, max_tokens=32, on_text=stream_to_stdout)
    print()


STEPS: list[Step] = [
    Step("pull", "pull the default model", step_pull),
    Step("show", "show its registry entry", step_show),
    Step("chat", "chat with it", step_chat),
    Step("tokens", "tokenizer fertility: the same sentence in 4 languages", step_fertility),
    Step("finetune", "fine-tune it with LoRA (teach a new fact)", step_finetune),
    Step("eval", "evaluate: base vs fine-tuned on the Czech tasks", step_eval),
    Step("quantize", "quantize the base model to int8 and chat with it", step_quantize),
    Step("serve", "serve the fine-tuned model over the OpenAI API", step_serve),
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
