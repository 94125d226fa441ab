"""torchtitan's own Trainer on the Llama-3.2-1B shape, for a side-by-side tokens/s with `train_throughput.py`.

The peer runs unchanged: torchtitan's `Trainer` (its model, `parallelize_llama` with torch.compile per block and
the loss compiled, its fused AdamW and gradient clipping, bf16 autocast over fp32 weights on one GPU, exactly
what its train_step does). Only its inputs are replaced: the tokenizer and the C4 loader by random token ids
of the same vocabulary (as our benchmark feeds ours), and its tensorboard writer by a no-op (not installed on
the GPU image). The 1B shape is registered as a flavor: dim 2048, 16 layers, 32 heads, 8 KV heads, FFN 8192,
vocab 128,256 (tied embeddings are not a torchtitan option: its output matrix is separate, 263M more
parameters to update than ours; both MFUs use lmsmith.hardware.flops_per_token, with each side's N).

torchtitan is never committed: `pip install --no-deps --target .peers/torchtitan torchtitan==0.2.2 tyro torchdata
einops docstring-parser typeguard shtab` here, carry `.peers`, then on the GPU:

    PYTHONPATH=.peers/torchtitan:src python -m bench.train.torchtitan_peer --steps 8 --warmup 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types


def _stub_tensorboard() -> None:
    m = types.ModuleType("torch.utils.tensorboard")

    class SummaryWriter:  # torchtitan only builds one when tensorboard logging is on (it is off here)
        def __init__(self, *a, **k):
            raise RuntimeError("tensorboard is stubbed out in this benchmark")

    m.SummaryWriter = SummaryWriter
    sys.modules.setdefault("torch.utils.tensorboard", m)


class RandomTokens:
    """Stands in for torchtitan's dataloader: ({"input": ids}, labels) CPU batches, stateful for its checkpointer."""

    def __init__(self, batch: int, seq: int, vocab: int):
        import torch

        self.batch, self.seq, self.vocab = batch, seq, vocab
        self.g = torch.Generator().manual_seed(0)

    def __iter__(self):
        import torch

        while True:
            ids = torch.randint(0, self.vocab, (self.batch, self.seq + 1), generator=self.g)
            yield {"input": ids[:, :-1].contiguous()}, ids[:, 1:].contiguous()

    def state_dict(self):
        return {}

    def load_state_dict(self, sd):
        pass


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--steps", type=int, default=8, help="timed steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--ac", default="none", choices=["none", "selective", "full"])
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--flavor", default="1B", choices=["1B", "debugmodel"])
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--dry-run", action="store_true", help="import, register and parse only (no GPU)")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)

    for k, v in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                     MASTER_PORT=os.environ.get("MASTER_PORT", "29517")).items():
        os.environ.setdefault(k, v)
    _stub_tensorboard()
    import torch
    import torchtitan
    from torchtitan.config import ConfigManager
    from torchtitan.models.llama3 import TransformerModelArgs, llama3_args
    from torchtitan.protocols import train_spec as spec_mod
    from torchtitan.train import Trainer

    llama3_args["1B"] = TransformerModelArgs(dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, vocab_size=128256,
                                             ffn_dim_multiplier=1.5, multiple_of=256, rope_theta=500000)
    vocab = llama3_args[args.flavor].vocab_size
    import dataclasses

    spec = dataclasses.replace(  # get_train_spec builds a fresh spec per call: register the patched one
        spec_mod.get_train_spec("llama3"), model_args=dict(llama3_args), build_tokenizer_fn=None,
        build_dataloader_fn=lambda **kw: RandomTokens(args.batch_size, args.seq_len, vocab), build_validator_fn=None)
    spec_mod.register_train_spec("llama3", spec)  # user specs take priority over the built-in one
    total = args.warmup + args.steps
    cli = ["--model.name", "llama3", "--model.flavor", args.flavor,
           "--training.local_batch_size", str(args.batch_size), "--training.seq_len", str(args.seq_len),
           "--training.steps", str(total), "--lr_scheduler.warmup_steps", "1",
           "--activation_checkpoint.mode", args.ac, "--metrics.log_freq", "1000",
           "--job.dump_folder", "/tmp/torchtitan_peer"]
    if not args.no_compile:
        cli += ["--compile.enable"]  # components default to model and loss
    cfg = ConfigManager().parse_args(cli)
    ffn = int(2 * 4 * 2048 / 3 * 1.5)
    assert (ffn + 255) // 256 * 256 == 8192, "the 1B flavor's FFN must be 8192"
    if args.dry_run:
        assert spec_mod.get_train_spec("llama3").build_tokenizer_fn is None
        print(json.dumps({"torchtitan": getattr(torchtitan, "__version__", "?"), "flavor": args.flavor,
                          "compile": cfg.compile.enable, "ac": cfg.activation_checkpoint.mode}))
        return {}

    times: list[float] = []

    class Timed(Trainer):
        def train_step(self, data_iterator):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            super().train_step(data_iterator)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)

    trainer = Timed(cfg)
    torch.cuda.reset_peak_memory_stats()
    trainer.train()
    model = trainer.model_parts[0]
    n_params = sum(p.numel() for p in model.parameters())
    layers, dim = len(model.layers), llama3_args[args.flavor].dim
    from lmsmith.hardware import flops_per_token  # the same formula as ours: the embedding lookup is no matmul

    matmul = n_params - model.tok_embeddings.weight.numel()
    fpt = flops_per_token(matmul, n_params, layers, dim, args.seq_len)
    step_s = statistics.median(times[args.warmup:])
    tok_s = args.batch_size * args.seq_len / step_s
    out = {"torchtitan_version": getattr(torchtitan, "__version__", "?"),
           "torchtitan_seconds_per_step_full": step_s, "torchtitan_tokens_per_s_full": tok_s,
           "torchtitan_params_full": float(n_params),
           "torchtitan_mfu_full": tok_s * fpt / (args.peak_tflops * 1e12),
           "torchtitan_peak_mem_gib_full": torch.cuda.max_memory_allocated() / 2**30,
           "torchtitan_compile_full": float(not args.no_compile)}
    trainer.close()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    print("RESULT " + json.dumps(out))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(out, f)
    return out


if __name__ == "__main__":
    main()
