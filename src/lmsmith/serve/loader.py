"""Pick and load the runner for a model: native (our Llama-family engine), tensor-parallel over several GPUs,
or the transformers fallback for architectures we don't implement."""

from __future__ import annotations

from typing import Any

import torch

from lmsmith.errors import LmsmithError
from lmsmith.models import ResolvedModel
from lmsmith.runtime import parse_dtype
from lmsmith.serve.llama import spec_from_config, unsupported_reason
from lmsmith.serve.model_runner import HFRunner, NativeRunner
from lmsmith.serve.parallel import TPRunner
from lmsmith.serve.tp_layers import check_tp
from lmsmith.serve.weights import ModelHandle


def load_runner(ref: str | ResolvedModel, dtype: str | torch.dtype, device: str | None, max_model_len: int | None,
                allow_fallback: bool = True, tensor_parallel_size: int = 1,
                load_format: str = "auto") -> tuple[Any, ModelHandle, int]:
    """Pick the native runner when the architecture is supported, else the transformers fallback.
    `tensor_parallel_size` > 1 shards the native runner over that many GPUs (serve/parallel.py)."""
    if load_format not in ("auto", "dummy"):
        raise LmsmithError(f"unknown load_format {load_format!r}", "use 'auto' (the checkpoint) or 'dummy' (random weights)")
    mh = ModelHandle(ref)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch_dtype = parse_dtype(dtype, dev)
    limit = int(getattr(mh.config, "max_position_embeddings", 0) or 4096)
    if max_model_len is not None:
        if max_model_len < 2:
            raise LmsmithError(f"max_model_len must be at least 2, got {max_model_len}")
        if max_model_len > limit:
            raise LmsmithError(f"max_model_len {max_model_len} exceeds the model's context of {limit} tokens",
                               f"use at most {limit}")
        limit = max_model_len
    reason = unsupported_reason(mh.config)
    if mh.quant is not None and mh.is_adapter:
        raise LmsmithError(f"{mh.handle.ref} is an adapter on a quantized base, which cannot be merged",
                           "merge the adapter into the full-precision base, then quantize the merged model")
    if tensor_parallel_size != 1:
        if reason is not None:
            raise LmsmithError(f"tensor parallelism needs the native runner, but {reason}",
                               "drop --tensor-parallel-size (the transformers fallback runs on one device)")
        if tensor_parallel_size > 1 and mh.quant is not None:
            raise LmsmithError("tensor parallelism does not shard quantized weights yet",
                               "drop --tensor-parallel-size, or shard the unquantized model")
        check_tp(spec_from_config(mh.config), tensor_parallel_size, dev)
        if tensor_parallel_size > 1:
            return TPRunner(mh, torch_dtype, dev, limit, tensor_parallel_size, load_format), mh, limit
    if reason is None:
        return NativeRunner(mh, torch_dtype, dev, limit, load_format=load_format), mh, limit
    if load_format == "dummy":
        raise LmsmithError("load_format='dummy' needs the native runner", reason)
    if not allow_fallback:
        raise LmsmithError(reason, "use a Llama/Mistral/Qwen2-family model")
    return HFRunner(mh, torch_dtype, dev, reason), mh, limit
