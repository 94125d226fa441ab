"""Kernel choice for quantized linears: which fused kernel runs for a device, dtype and batch size."""

from __future__ import annotations

import torch

from lmsmith.errors import LmsmithError

# PyTorch's CPU int8/int4 kernels are vectorized for 16-bit activations only (fp32 input runs ~10x slower
# than a plain fp32 matmul on AVX2), so float32 activations are fed to them in bfloat16 and the result cast
# back. Set to None to use the kernels' (exact but slow) float32 path.
CPU_FP32_COMPUTE_DTYPE: torch.dtype | None = torch.bfloat16
CPU_ALIGN = 64  # bytes: the alignment PyTorch's CPU allocator gives, which its vectorized int8 kernel assumes


def cpu_compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The activation dtype PyTorch's CPU int8/int4 kernels get for activations of `dtype`."""
    return CPU_FP32_COMPUTE_DTYPE if dtype == torch.float32 and CPU_FP32_COMPUTE_DTYPE is not None else dtype


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    return cpu_compute_dtype(x.dtype) if x.device.type == "cpu" else x.dtype


KERNELS: dict[tuple[str, str], bool] = {}  # (op, device type) -> usable; plain dict so torch.compile reads it


def has_kernel(op: str, device: torch.device) -> bool:
    """Does this torch build have `aten::op` for the device? False after the kernel once failed at run time."""
    key = (op, device.type)
    if key not in KERNELS:
        try:
            KERNELS[key] = hasattr(torch.ops.aten, op) and torch._C._dispatch_has_kernel_for_dispatch_key(
                f"aten::{op}", "CUDA" if device.type == "cuda" else "CPU")
        except Exception:  # pragma: no cover - very old or exotic builds
            KERNELS[key] = False
    return KERNELS[key]


def kernel_failed(op: str, device: torch.device, error: Exception) -> None:
    """A kernel that exists but rejects our inputs (shape rules of some build): warn once, then fall back."""
    import warnings

    KERNELS[(op, device.type)] = False
    warnings.warn(f"{op} failed on {device.type} ({str(error).splitlines()[0]}); using dequantize + matmul instead")


def fp8_supported(device: torch.device) -> bool:
    key = ("fp8_device", device.type)
    if key not in KERNELS:
        KERNELS[key] = (device.type == "cuda" and hasattr(torch, "_scaled_mm")
                         and torch.cuda.get_device_capability(device) >= (8, 9))
    return KERNELS[key]


def fp8_cpu_error() -> LmsmithError:
    return LmsmithError("fp8 weights need a CUDA GPU with compute capability >= 8.9 (Hopper or Ada)",
                        "use --method int8 or int4 on CPU")


# ------------------------------------------------------------------------------------- modules
# CUDA dispatch, from bench/compress/quant_kernels.py on an H100 (torch 2.11, Triton 3.6; microseconds per
# Llama-3.2-1B projection, bench/results/quant_kernels-h100.json):
# - int8: our Triton GEMV up to 64 rows (gate_up at M=1: 11.5 us vs bf16 25.3); beyond it a one-launch Triton
#   dequantize + cuBLAS ("triton"), since aten._weight_int8pack_mm is a slow generic kernel on CUDA
#   (65 us at M=1 for qkv, 1.2 ms for the lm_head).
# - int4: tinygemm up to TINYGEMM_MAX_M rows (M=1: 3.4-11 us per projection, 3-4x faster than our Triton int4
#   GEMV, which only runs where tinygemm cannot); beyond, our Triton dequantize (whole groups per tile, ~2.5 TB/s)
#   + cuBLAS ("triton"): tinygemm's time grows with M (gate_up: 40 us at M=16, 152 at 64, 586 at 256) while
#   dequantize + cuBLAS stays ~61-66 us (PyTorch's dequantize ops, "torch": 379-386 us). Interpolated between the
#   measured M=16 and M=64, the two cross at 19-27 rows depending on the projection (summed over a layer: ~24).
# - fp8: Triton GEMV (fp8 weights, 16-bit activations) up to 16 rows; beyond, per-token e4m3 activations and
#   `_scaled_mm` (w8a8 on the fp8 tensor cores: 10-25 us even at M=256, faster than bf16 there).
#   FP8_SMALL_M = "scaled_mm" keeps w8a8 at every M.
CUDA_LARGE_M: dict[str, str] = {"int8": "triton", "int4": "triton"}
TRITON_MAX_M: dict[str, int] = {"int8": 64, "int4": 16, "fp8": 16}
TINYGEMM_MAX_M = 24
FP8_SMALL_M = "triton"


def use_triton(x2d: torch.Tensor, method: str) -> bool:
    from lmsmith.quant import (
        kernels,  # Triton: imported on first use, never on CPU-only paths
    )

    return (x2d.shape[0] <= TRITON_MAX_M.get(method, 0) and kernels.available(x2d)
            and KERNELS.get(("triton_wq", method), True))
