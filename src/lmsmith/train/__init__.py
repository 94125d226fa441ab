"""The train stage: one loop (`loop.train`) for pretraining, continued pretraining and SFT.

Pieces: `config` (options), `data` (formats -> deterministic loaders), `objectives` (losses),
`model` (model/LoRA/QLoRA/optimizer construction), `nf4` (4-bit NormalFloat frozen linears),
`checkpoint` (atomic, exact resume), `tracking` (metrics.jsonl, MLflow, curves), `cli`.
"""
