"""Tiny random-init models of real architectures, with a small real tokenizer, built in about a second.

Tests and examples use these instead of downloading anything: same code paths as a real model
(config, safetensors, tokenizer with a chat template), a few hundred thousand parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmsmith.data.chat import CHAT_TEMPLATE
from lmsmith.runtime import quiet_transformers

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>",
                  "<tool_response>", "</tool_response>"]

_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Praha je hlavní město České republiky. "
    "Warszawa jest stolicą Polski. Ljubljana je glavno mesto Slovenije. Paris is the capital of France. "
    "Language models predict the next token. Příliš žluťoučký kůň úpěl ďábelské ódy. "
    "Zażółć gęślą jaźń. 0123456789 {\"name\": \"calculate\", \"arguments\": {\"expression\": \"27*33\"}} "
    "user assistant system tool The answer is 42."
)

ARCH_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {"model_type": "llama"},
    "mistral": {"model_type": "mistral", "sliding_window": None},
    "qwen2": {"model_type": "qwen2"},  # q/k/v biases
    "gemma2": {"model_type": "gemma2", "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 64,
               "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0},
}


def tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE trained on a built-in multilingual snippet, with ChatML and tool tokens."""
    quiet_transformers()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|im_end|>", unk_token="<|endoftext|>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_config(arch: str = "llama", vocab_size: int = 512, **overrides: Any):
    quiet_transformers()
    from transformers import AutoConfig

    if arch not in ARCH_CONFIGS:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose from {sorted(ARCH_CONFIGS)}")
    spec = dict(ARCH_CONFIGS[arch])
    model_type = spec.pop("model_type")
    kw: dict[str, Any] = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=arch in ("gemma2", "qwen2"),
        rms_norm_eps=1e-6,
    )
    kw.update(spec)
    kw.update(overrides)
    return AutoConfig.for_model(model_type, **kw)


def tiny_model(arch: str = "llama", seed: int = 0, vocab_size: int = 512, **overrides: Any):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_config(arch, vocab_size, **overrides)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    return model.eval()


def build_tiny(path: str | Path, arch: str = "llama", seed: int = 0, **overrides: Any) -> Path:
    """Write a tiny model + tokenizer + generation config as a HF directory at `path`."""
    from transformers import GenerationConfig

    path = Path(path)
    tok = tiny_tokenizer()
    model = tiny_model(arch, seed=seed, vocab_size=len(tok), **overrides)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2).save_pretrained(path)
    return path
