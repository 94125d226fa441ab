"""Alignment: reward scoring, rejection sampling and GRPO rollouts on lmsmith's own engine.

Sits after `serve` in the flow (it samples with the engine and scores with the evaluate stage's judge);
DPO and reward-model training are loop objectives in `lmsmith.train`.
"""
