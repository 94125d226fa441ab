"""Accelerator figures and the training FLOPs formula, one place for every stage (train's MFU, ops' planner,
benchmarks). Peaks are dense bf16 tensor-core FLOP/s from the vendors' spec sheets; bandwidths were measured on
the lent machines (device-to-device copy) where we had them, else spec sheets."""

from __future__ import annotations

GPU_PEAK_TFLOPS = {"h100": 989.0, "h200": 989.0, "a100": 312.0, "l40s": 362.0, "a10": 125.0, "cpu": 1.0}
GPU_BANDWIDTH_TBS = {"h100": 3.0, "h200": 4.3, "a100": 1.9, "l40s": 0.86, "cpu": 0.05}
GPU_MEM_GIB = {"h100": 79.0, "h200": 139.0, "a100": 79.0, "l40s": 44.0, "cpu": 64.0}


def gpu_key(device_name: str) -> str | None:
    """`NVIDIA H100 80GB HBM3` -> `h100` (None for a device we have no figures for)."""
    name = device_name.lower()
    return next((k for k in sorted(GPU_PEAK_TFLOPS, key=len, reverse=True) if k != "cpu" and k in name), None)


def peak_flops(device) -> float | None:
    """Peak dense bf16 FLOP/s of a CUDA device (None on CPU or an unknown GPU)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    key = gpu_key(torch.cuda.get_device_name(device))
    return GPU_PEAK_TFLOPS[key] * 1e12 if key else None


def flops_per_token(matmul_params: int, trainable_params: int, layers: int, attn_dim: int, seq_len: int) -> float:
    """Training matmul FLOPs per token: 2N forward + 2N input gradients + 2N_trainable weight gradients, plus
    attention's 12 * layers * (heads * head_dim) * seq_len (PaLM, appendix B).

    N counts the weights used in matmuls (the input embedding lookup excluded, the output head included); full
    training gives the usual 6N, LoRA about 4N."""
    trainable = min(trainable_params, matmul_params)
    return 4 * matmul_params + 2 * trainable + 12 * layers * attn_dim * seq_len
