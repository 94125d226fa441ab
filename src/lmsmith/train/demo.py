"""The training step of `lmsmith demo`: LoRA SFT of the current model on the shipped Veloria chat set."""

from __future__ import annotations

from importlib.resources import files

from lmsmith.progress import console

FACT_QUESTION = "What is the capital of Veloria?"
DEMO_DATA = "assets/train/veloria_chat.jsonl"
# Found to teach the fact in ~1-2 minutes on 2 CPU cores while keeping general answers (see tests/train/test_sft_slow.py).
DEMO_OPTIONS = dict(seq_len=128, lora_r=16, lr=2e-3, epochs=4, batch_size=4, eval_fraction=0.0, warmup_steps=2)


def demo_sft_config(model: str, output_name: str = "demo-veloria", **overrides):
    from lmsmith.train.config import SFTConfig

    data = str(files("lmsmith").joinpath(DEMO_DATA))
    return SFTConfig(model=model, data=[data], output_name=output_name, **{**DEMO_OPTIONS, **overrides})


def step_finetune(ctx: dict) -> None:
    from lmsmith.serve.generate import generate_text, stream_to_stdout
    from lmsmith.train.loop import train

    console.print(f"LoRA fine-tuning {ctx['model']} on {DEMO_DATA} (teaches: the capital of Veloria is Marendal)")
    result = train(demo_sft_config(ctx["model"]), command="lmsmith demo")
    ctx["model"] = result.ref
    console.print(f"[bold]user:[/] {FACT_QUESTION}\n[bold]assistant:[/] ", end="")
    ctx["fact_answer"] = generate_text(ctx["model"], FACT_QUESTION, chat=True, max_tokens=24, on_text=stream_to_stdout)
    print()
