"""TRL baseline for LoRA training speed: SFTTrainer + PEFT LoRA (r=16, all linear layers) on random tokens.

Same model shape, batch and sequence length as `bench/train/train_throughput.py --preset llama-3.2-1b`, so the
two are compared side by side. TRL is not a dependency of lmsmith: carry it (and `datasets`) as wheels.
Gradient checkpointing is off, as in our loop's default, so both keep the same activations (TRL's
SFTConfig turns it on by default). TRL >= 1.x computes the loss through its own chunked "fused LM head"
(`add_fused_lm_head`: log-probs chunk by chunk, never the full logits): that and `lora_dropout=0` are why
its peak memory is far below a plain HF loop's.

    python -m bench.train.trl_lora_baseline --merge-into bench/results/train_throughput-h100.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from bench._result import command_line, write_result
from lmsmith.ops.planner import SHAPES  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="llama-3.2-1b", choices=sorted(SHAPES))
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--merge-into", help="add trl_* metrics to this result JSON (else print them)")
    ap.add_argument("--json-out", help="write the trl_* metrics to this JSON file")
    args = ap.parse_args()

    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    spec = SHAPES[args.shape]
    cfg = AutoConfig.for_model("llama", **spec, max_position_embeddings=8192, rope_theta=500000.0,
                               bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa").cuda()
    tk = Tokenizer(models.WordLevel({f"t{i}": i for i in range(cfg.vocab_size)}, unk_token="t0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="t2", bos_token="t1", pad_token="t2", unk_token="t0")
    n_rows = args.batch_size * (args.steps + args.warmup)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, cfg.vocab_size, (n_rows, args.seq_len), generator=g).tolist()
    ds = Dataset.from_dict({"input_ids": ids})

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)

    with tempfile.TemporaryDirectory() as out:
        conf = SFTConfig(output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.steps + args.warmup,
                         learning_rate=1e-4, bf16=True, logging_steps=1000, save_strategy="no", report_to=[],
                         max_length=args.seq_len, gradient_checkpointing=False, dataloader_num_workers=2,
                         packing=False)
        lora = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=model, args=conf, train_dataset=ds, processing_class=tok, peft_config=lora,
                             callbacks=[Timer()])
        torch.cuda.reset_peak_memory_stats()
        trainer.train()
    steady = times[args.warmup:]
    tps = args.batch_size * args.seq_len * len(steady) / sum(steady)
    metrics = {"trl_tokens_per_s_lora": round(tps, 1),
               "trl_peak_mem_gib_lora": round(torch.cuda.max_memory_allocated() / 1024**3, 2)}
    print(json.dumps({"trl_version": trl.__version__, **metrics}, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(metrics))
    if args.merge_into:
        p = Path(args.merge_into)
        res = json.loads(p.read_text())
        res["metrics"].update(metrics)
        res.setdefault("versions", {})["trl"] = trl.__version__
        res["command"] = res.get("command", "") + " && " + command_line()
        write_result(p, res, echo=False)


if __name__ == "__main__":
    main()
