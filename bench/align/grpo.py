"""GRPO end to end: lmsmith (rollouts on our engine in-process, weights pushed in place) vs TRL's GRPOTrainer
(rollouts with HF generate), same prompts, group size, lengths, LoRA rank and learning rate, in one run.

    python -m bench.align.grpo speed  --shape llama-3.2-1b --out bench/results/grpo-h100.json   # random weights, tokens/s
    python -m bench.align.grpo reward --gguf SmolLM2-135M-Instruct.Q4_1.gguf --merge-into bench/results/grpo-h100.json

`speed`: a random-init model of the shape (a word-level tokenizer over its vocabulary), prompts of random
words, an arithmetic verifier as the reward (it scores ~0 on random text; the point is the work per step).
End-to-end tokens/s = completion tokens generated per second of whole steps (rollout + scoring + update +
weight sync), measured over the steps after `--warmup`. `reward`: the real default model on a verifiable
arithmetic task ("What is a + b?", exact-number reward): the mean sampled reward (and greedy accuracy) on
held-out prompts before and after a short GRPO run.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from bench._result import make_result, write_result
from bench.common import write_wordlevel_tokenizer
from lmsmith.align.verifiers import exact_number


def word_model(shape: str, out: Path, tiny: bool) -> Path:
    """A random-init model of `shape` plus a word-level tokenizer t0..tN over its vocabulary, saved as HF dir."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from lmsmith.ops.planner import SHAPES

    spec = dict(SHAPES[shape])
    if tiny:  # CPU rehearsal of the script
        spec.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=512)
    cfg = AutoConfig.for_model("llama", **spec, max_position_embeddings=4096, rope_theta=500000.0,
                               bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    AutoModelForCausalLM.from_config(cfg, dtype=dtype).save_pretrained(out)
    write_wordlevel_tokenizer(out, cfg.vocab_size)
    return out


def random_prompts(n: int, length: int, vocab: int, path: Path) -> Path:
    rng = random.Random(0)
    rows = [{"prompt": " ".join(f"t{rng.randrange(10, vocab)}" for _ in range(length)), "answer": "7"} for _ in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def arithmetic_prompts(n: int, seed: int, path: Path) -> Path:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randrange(10, 100), rng.randrange(10, 100)
        rows.append({"prompt": [{"role": "user", "content": f"What is {a} + {b}? Answer with the number only."}],
                     "answer": str(a + b)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def ours(model_dir: str, prompts: Path, args, run_dir: Path, full: bool = False, lr: float | None = None,
         steps: int | None = None) -> dict:
    """Our GRPO with a timer around each whole step (rollout start to the end of the weight push)."""
    from lmsmith.align.grpo import GRPOObjective
    from lmsmith.train.config import GRPOConfig
    from lmsmith.train.loop import train

    marks: list[tuple[float, int]] = []  # (time at a step's start, completion tokens so far)

    class Timed(GRPOObjective):
        def prepare(self, micro):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            marks.append((time.perf_counter(), self.timing["rollout_tokens"]))
            return super().prepare(micro)

        def after_update(self, model):
            super().after_update(model)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.end = (time.perf_counter(), self.timing["rollout_tokens"])

    cfg = GRPOConfig(model=model_dir, data=[str(prompts)], reward=["verifier:exact_number"], group_size=args.group,
                     batch_size=args.prompts, max_new_tokens=args.max_new, steps=steps or args.warmup + args.steps,
                     lr=lr or args.lr, warmup_steps=0, schedule="constant", full=full, lora_r=None if full else args.lora_r,
                     temperature=1.0, loss_type="dapo", mlflow=False, plot=False, workers=1, seq_len=512,
                     run_dir=str(run_dir), seed=0)
    obj = Timed(cfg)
    t0 = time.perf_counter()
    res = train(cfg, objective=obj)
    wall = time.perf_counter() - t0
    (ts, tok0), (te, tok1) = marks[min(args.warmup, len(marks) - 1)], obj.end
    t = obj.timing
    return {"result": res, "tokens_per_s": (tok1 - tok0) / (te - ts), "step_s": (te - ts) / max(1, len(marks) - args.warmup),
            "rollout_tokens_per_s": t["rollout_tokens"] / t["rollout_s"], "update_s": t["update_s"], "sync_s": t["sync_s"],
            "wall_s": wall, "completion_tokens": tok1}


def trl_run(model_dir: str, prompts: Path, args) -> dict:
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    rows = [json.loads(x) for x in prompts.read_text().splitlines()]
    ds = Dataset.from_list(rows)
    tok = AutoTokenizer.from_pretrained(model_dir)
    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if cuda else torch.float32,
                                                 attn_implementation="sdpa")
    starts: list[float] = []
    ends: list[float] = []
    lengths: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            starts.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            ends.append(time.perf_counter())

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    n_comp = args.prompts * args.group
    with tempfile.TemporaryDirectory() as out:
        conf = trl.GRPOConfig(output_dir=out, per_device_train_batch_size=n_comp, num_generations=args.group,
                              max_completion_length=args.max_new, learning_rate=args.lr, bf16=cuda, use_cpu=not cuda,
                              beta=0.0, loss_type="dapo", temperature=1.0, logging_steps=1, report_to=[],
                              max_steps=args.warmup + args.steps, save_strategy="no", gradient_checkpointing=False,
                              lr_scheduler_type="constant", seed=0)
        lora = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, target_modules="all-linear",
                          task_type="CAUSAL_LM")
        trainer = trl.GRPOTrainer(model=model, reward_funcs=[exact_number], args=conf, train_dataset=ds,
                                  processing_class=tok, peft_config=lora, callbacks=[Timer()])
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    w = args.warmup
    tokens = sum(lengths[w:len(ends)]) * n_comp
    elapsed = ends[-1] - starts[w]
    return {"trl_tokens_per_s": tokens / elapsed, "trl_step_s": elapsed / max(1, len(ends) - w), "trl_wall_s": wall,
            "trl_version": trl.__version__}


def cmd_speed(args) -> dict:
    tiny = not torch.cuda.is_available() or args.tiny
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = word_model(args.shape, tmp / "model", tiny)
        vocab = 512 if tiny else 128256
        prompts = random_prompts(args.prompts * (args.warmup + args.steps), args.prompt_len, vocab, tmp / "p.jsonl")
        args.settings = {"shape": args.shape + (" (tiny rehearsal)" if tiny else "")}
        m: dict = {"prompts_per_step": args.prompts,
                   "group_size": args.group, "max_new_tokens": args.max_new, "prompt_tokens": args.prompt_len,
                   "lora_r": args.lora_r, "steps_timed": args.steps}
        o = ours(str(model_dir), prompts, args, tmp / "run")
        m.update(tokens_per_s=o["tokens_per_s"], step_s=o["step_s"], rollout_tokens_per_s=o["rollout_tokens_per_s"],
                 weight_sync_s=o["sync_s"] / (args.warmup + args.steps), wall_s=o["wall_s"])
        print(json.dumps(m), flush=True)
        if args.trl:
            try:
                t = trl_run(str(model_dir), prompts, args)
                m.update({k: v for k, v in t.items() if k != "trl_version"})
                m["speedup_vs_trl"] = m["tokens_per_s"] / m["trl_tokens_per_s"]
                args.trl_version = t["trl_version"]
            except Exception as e:  # the peer failing must not lose our numbers
                m["trl_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return m


def eval_reward(ref: str, prompts: Path, n: int, max_new: int) -> tuple[float, float]:
    """(mean reward of n sampled answers per prompt at T=1, greedy accuracy) with the engine."""
    from lmsmith.data.preference import prompt_ids, read_prompts
    from lmsmith.serve.llm import LLM
    from lmsmith.serve.sampling_params import SamplingParams

    rows = read_prompts(prompts)
    with LLM(ref) as llm:
        ids = [prompt_ids(llm.tokenizer, r.prompt) for r in rows]
        answers = [r.columns["answer"] for r in rows]
        sampled = llm.generate(ids, [SamplingParams(n=n, temperature=1.0, max_tokens=max_new, seed=1000 + i)
                                     for i in range(len(ids))], use_tqdm=False)
        greedy = llm.generate(ids, SamplingParams(temperature=0.0, max_tokens=max_new), use_tqdm=False)
    s = [v for c, a in zip(sampled, answers) for v in exact_number(None, [o.text for o in c.outputs], answer=[a] * n)]
    g = exact_number(None, [c.outputs[0].text for c in greedy], answer=answers)
    return sum(s) / len(s), sum(g) / len(g)


def cmd_reward(args) -> dict:
    from lmsmith.registry.importers import import_model
    from lmsmith.registry.registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.gguf:
            ref = import_model(args.gguf, "default", dtype="bfloat16", registry=Registry()).ref
        else:
            ref = args.model
        train_p = arithmetic_prompts(args.train_prompts, 1, tmp / "train.jsonl")
        eval_p = arithmetic_prompts(args.eval_prompts, 2, tmp / "eval.jsonl")
        before, greedy_before = eval_reward(ref, eval_p, args.group, args.max_new)
        print(json.dumps({"reward_before": before, "greedy_accuracy_before": greedy_before}), flush=True)
        o = ours(ref, train_p, args, tmp / "run", full=True, lr=args.reward_lr, steps=args.reward_steps)
        after, greedy_after = eval_reward(str(o["result"].output_dir), eval_p, args.group, args.max_new)
    args.settings = {"reward_model": "SmolLM2-135M-Instruct (default)"}
    return {"reward_before": before,
            "reward_after": after, "greedy_accuracy_before": greedy_before, "greedy_accuracy_after": greedy_after,
            "reward_gain": after / max(before, 1e-9), "reward_steps": args.reward_steps, "reward_lr": args.reward_lr,
            "reward_train_wall_s": o["wall_s"], "reward_run_tokens_per_s": o["tokens_per_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["speed", "reward"])
    ap.add_argument("--shape", default="llama-3.2-1b")
    ap.add_argument("--tiny", action="store_true", help="a tiny model of the shape's family (CPU rehearsal)")
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step")
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=48)
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--trl", action="store_true", help="also run TRL's GRPOTrainer on the same settings")
    ap.add_argument("--gguf", help="(reward) the default model's GGUF file")
    ap.add_argument("--model", default="default", help="(reward) model ref when --gguf is not given")
    ap.add_argument("--train-prompts", type=int, default=256)
    ap.add_argument("--eval-prompts", type=int, default=64)
    ap.add_argument("--reward-steps", type=int, default=30)
    ap.add_argument("--reward-lr", type=float, default=3e-6)
    ap.add_argument("--out", help="write the result JSON here")
    ap.add_argument("--merge-into", help="add the metrics to this existing result JSON")
    args = ap.parse_args()
    args.trl_version, args.settings = None, {}
    m = cmd_speed(args) if args.what == "speed" else cmd_reward(args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.merge_into and Path(args.merge_into).exists():
        res = json.loads(Path(args.merge_into).read_text())
        res["metrics"].update(m)
        res.setdefault("settings", {}).update(args.settings)
        res.setdefault("commands", [res.get("command")]).append(make_result("grpo", {}, device)["command"])
    else:
        res = make_result("grpo", m, device, extra_versions=("trl", "peft"), settings=args.settings)
    path = args.merge_into or args.out
    if path:
        write_result(path, res)
    else:
        print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
