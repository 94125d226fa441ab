"""Load what a resolved model names: the weights (full, adapter on its base, or lmsmith-quantized) and the
tokenizer. Every stage loads through here, so hash checks, dtype rules and error messages are the same."""

from __future__ import annotations

from typing import Any

import torch

from lmsmith.errors import LmsmithError
from lmsmith.models.resolved import ResolvedModel, resolve_model
from lmsmith.quant.format import load_quantized
from lmsmith.quant.lowrank_format import is_lowrank_dir, load_lowrank
from lmsmith.registry import Registry
from lmsmith.runtime import default_device, parse_dtype, quiet_transformers


def load_model(ref: str | ResolvedModel, dtype: str | torch.dtype | None = "auto", device: str | None = None,
               registry: Registry | None = None, merge_adapter: bool = False, **kwargs: Any):
    """Load a causal LM in eval mode on `device` (an adapter is applied to its base). Registry versions are
    hash-checked first (once per process)."""
    model_ref = resolve_model(ref, registry)
    device = device or default_device()
    torch_dtype = parse_dtype(dtype, device)
    quiet_transformers()
    from transformers import AutoModelForCausalLM

    try:
        if model_ref.is_adapter:
            from peft import PeftModel

            model = AutoModelForCausalLM.from_pretrained(model_ref.base.dir, dtype=torch_dtype, **kwargs)
            model = PeftModel.from_pretrained(model, model_ref.dir)
            if merge_adapter:
                model = model.merge_and_unload()
        elif model_ref.quantized:  # lmsmith-quantized weights (lmsmith compress quantize)
            return load_quantized(model_ref.dir, torch_dtype, device)
        elif is_lowrank_dir(model_ref.dir):  # factorized linears (lmsmith compress lowrank)
            return load_lowrank(model_ref.dir, torch_dtype, device)
        else:
            model = AutoModelForCausalLM.from_pretrained(model_ref.dir, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise LmsmithError(f"cannot load model {model_ref.name}: {str(e).splitlines()[0]}") from None
    return model.to(device).eval()


def load_tokenizer(ref: str | ResolvedModel, registry: Registry | None = None):
    """The model's tokenizer (an adapter without one uses its base's); a missing pad token becomes EOS."""
    model_ref = resolve_model(ref, registry, verify=False)
    quiet_transformers()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_ref.tokenizer_dir)
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    return tok
