"""The train stage: one loop (`loop.train`) for pretraining, continued pretraining and SFT.

The loop in pieces: `loop` (`train`, the step loop), `setup` (checks; builds a `run.Run`), `step` (one optimizer
step, one evaluation), `hooks` (resume, logging, evaluation, checkpoints), `finish` (save and register).
Around it: `config` (options), `data` (formats -> deterministic loaders), `objectives` (losses),
`model` (model/LoRA/QLoRA/optimizer construction), `nf4` (4-bit NormalFloat frozen linears),
`checkpoint` (atomic, exact resume), `tracking` (metrics.jsonl, MLflow, curves), `cli`.
"""
