"""Weight-only quantization: int8 (per output channel), int4 (group-wise, packed) and fp8 (e4m3) linears.

Decoding reads every weight once per token, so it is bound by memory bandwidth: smaller weights decode
faster. The quantized modules here are drop-in replacements for `nn.Linear` (same `in_features`,
`out_features`, `bias`, forward on `[..., in_features]`), so `quantize_model_(model, "int8")` works on
any torch model: transformers models and our own engine alike.

Each module keeps one canonical, device-independent state (`qweight`, `scales`, `zeros`) that is what
gets saved, and dispatches to PyTorch's fused kernels where they exist:

    int8  CPU+CUDA  aten._weight_int8pack_mm             (int8 weight, per-channel scale)
    int4  CPU       aten._weight_int4pack_mm_for_cpu     (tinygemm layout, built lazily per device)
    int4  CUDA      aten._weight_int4pack_mm             (tinygemm, bfloat16 activations)
    fp8   CUDA      torch._scaled_mm                     (e4m3 weights and per-token e4m3 activations)

Where a kernel is missing or its shape rules are not met, a plain dequantize-then-matmul does the same
math (`backend="reference"` forces it; the tests compare the two).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from lmsmith.errors import LmsmithError

METHODS = ("int8", "int4", "fp8")
GROUP_SIZES = (32, 64, 128)
FP8_MAX = 448.0  # largest finite float8_e4m3fn
QUANT_METHOD = "lmsmith"  # the `quant_method` we write into config.json


# --------------------------------------------------------------------------------------------- spec
@dataclass
class QuantSpec:
    """What was quantized and how; stored as the `quantization` section of config.json."""

    method: str
    group_size: int | None = None  # int4 only
    symmetric: bool = False  # int4 only (int8 and fp8 are always symmetric)
    include_lm_head: bool = False
    lm_head_method: str | None = None  # with include_lm_head: the lm_head's method (None: the same as `method`)
    skip: list[str] = field(default_factory=list)
    quant_method: str = QUANT_METHOD
    bits: int | None = None  # int4 storage holding a coarser grid (3 or 2 bits; lmsmith.compress.grid); None: 4
    algorithm: str = "rtn"  # how the values were chosen: rtn, gptq, awq, qat (storage is the same)
    modules: list[str] = field(default_factory=list)  # filled in: the linears that were swapped

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QuantSpec":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def for_module(self, name: str, heads: set[str]) -> "QuantSpec":
        """The spec of one module: the lm_head may use its own method (int8 logits beside int4 layers)."""
        if name in heads and self.lm_head_method and self.lm_head_method != self.method:
            group = self.group_size if self.lm_head_method == "int4" else None
            return QuantSpec(method=self.lm_head_method, group_size=group, symmetric=self.symmetric)
        return self


def check_method(method: str) -> str:
    if method not in METHODS:
        raise LmsmithError(f"unknown quantization method '{method}'", f"use one of: {', '.join(METHODS)}")
    return method


def check_group_size(group_size: int) -> int:
    if group_size not in GROUP_SIZES:
        raise LmsmithError(f"int4 group size {group_size} is not supported",
                           f"use one of: {', '.join(map(str, GROUP_SIZES))}")
    return group_size


# ------------------------------------------------------------------------------------ tensor math
def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: w ≈ q * scale[:, None], q in [-127, 127]."""
    w = w.float()
    scales = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-10)
    q = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scales


def dequantize_int8(q: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (q.to(dtype) * scales.to(dtype)[:, None])


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """[N, K] values 0..15 -> [N, K/2] uint8; element 2j in the low nibble, 2j+1 in the high one."""
    q = q.to(torch.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_int4`: [N, K/2] uint8 -> [N, K] uint8 values 0..15."""
    low, high = packed & 0x0F, packed >> 4
    return torch.stack([low, high], dim=-1).reshape(packed.shape[0], -1)


def quantize_int4(w: torch.Tensor, group_size: int, symmetric: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Group-wise 4-bit: w ≈ (q - zero) * scale per group of `group_size` input features, q in 0..15.

    Asymmetric: each group's min..max maps onto 0..15 with a float zero point (the grid of llama.cpp's
    Q4_1 and of tinygemm; an integer zero point would shift the grid by up to half a step). Symmetric:
    the zero point is 8 for every group (not stored) and scale = absmax / 7.
    Returns (packed uint8 [N, K/2], scales float32 [N, K/g], zeros float32 [N, K/g] or None)."""
    n, k = w.shape
    wg = w.float().reshape(n, k // group_size, group_size)
    if symmetric:
        scales = (wg.abs().amax(dim=-1) / 7.0).clamp(min=1e-10)
        q = (torch.round(wg / scales[..., None]) + 8).clamp_(0, 15)
        zeros = None
    else:
        lo, hi = wg.amin(dim=-1), wg.amax(dim=-1)
        scales = ((hi - lo) / 15.0).clamp(min=1e-10)
        q = torch.round((wg - lo[..., None]) / scales[..., None]).clamp_(0, 15)
        zeros = -lo / scales
    return pack_int4(q.reshape(n, k)), scales, zeros


def int4_zero_points(scales: torch.Tensor, zeros: torch.Tensor | None) -> torch.Tensor:
    return torch.full_like(scales, 8.0) if zeros is None else zeros.to(scales.dtype)


def dequantize_int4(packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, group_size: int,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    n = packed.shape[0]
    q = unpack_int4(packed).to(dtype).reshape(n, -1, group_size)
    s = scales.to(dtype)
    z = int4_zero_points(s, zeros)
    return ((q - z[..., None]) * s[..., None]).reshape(n, -1)


def quantize_fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel scaled float8_e4m3fn: w ≈ q.float() * scale[:, None]."""
    w = w.float()
    scales = (w.abs().amax(dim=1) / FP8_MAX).clamp(min=1e-12)
    q = (w / scales[:, None]).clamp_(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scales


def dequantize_fp8(q: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (q.float() * scales.float()[:, None]).to(dtype)


def quantize_activations_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per-token (per-row) e4m3 scaling of a [M, K] activation."""
    xf = x.float()
    scale = (xf.abs().amax(dim=-1, keepdim=True) / FP8_MAX).clamp(min=1e-12)
    return (xf / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale


# ------------------------------------------------------------------------------------- kernels
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


_KERNELS: dict[tuple[str, str], bool] = {}  # (op, device type) -> usable; plain dict so torch.compile reads it


def has_kernel(op: str, device: torch.device) -> bool:
    """Does this torch build have `aten::op` for the device? False after the kernel once failed at run time."""
    key = (op, device.type)
    if key not in _KERNELS:
        try:
            _KERNELS[key] = hasattr(torch.ops.aten, op) and torch._C._dispatch_has_kernel_for_dispatch_key(
                f"aten::{op}", "CUDA" if device.type == "cuda" else "CPU")
        except Exception:  # pragma: no cover - very old or exotic builds
            _KERNELS[key] = False
    return _KERNELS[key]


def kernel_failed(op: str, device: torch.device, error: Exception) -> None:
    """A kernel that exists but rejects our inputs (shape rules of some build): warn once, then fall back."""
    import warnings

    _KERNELS[(op, device.type)] = False
    warnings.warn(f"{op} failed on {device.type} ({str(error).splitlines()[0]}); using dequantize + matmul instead")


def fp8_supported(device: torch.device) -> bool:
    key = ("fp8_device", device.type)
    if key not in _KERNELS:
        _KERNELS[key] = (device.type == "cuda" and hasattr(torch, "_scaled_mm")
                         and torch.cuda.get_device_capability(device) >= (8, 9))
    return _KERNELS[key]


def fp8_cpu_error() -> LmsmithError:
    return LmsmithError("fp8 weights need a CUDA GPU with compute capability >= 8.9 (Hopper or Ada)",
                        "use --method int8 or int4 on CPU")


# ------------------------------------------------------------------------------------- modules
# CUDA dispatch, from bench/quant_kernels.py on an H100 (torch 2.11, Triton 3.6; microseconds per
# Llama-3.2-1B projection, bench/results/quant_kernels-h100.json):
# - int8: our Triton GEMV up to 64 rows (gate_up at M=1: 11.5 us vs bf16 25.3); beyond it a one-launch Triton
#   dequantize + cuBLAS ("triton"), since aten._weight_int8pack_mm is a slow generic kernel on CUDA
#   (65 us at M=1 for qkv, 1.2 ms for the lm_head).
# - int4: tinygemm up to TINYGEMM_MAX_M rows (M=1: 3.4-11 us per projection, 3-4x faster than our Triton int4
#   GEMV, which only runs where tinygemm cannot); beyond, PyTorch dequantize + cuBLAS ("torch": tinygemm at
#   M=256 is 5-18x slower than bf16, and our Triton int4 dequantize kernel measured slower than PyTorch's ops).
# - fp8: Triton GEMV (fp8 weights, 16-bit activations) up to 16 rows; beyond, per-token e4m3 activations and
#   `_scaled_mm` (w8a8 on the fp8 tensor cores: 10-25 us even at M=256, faster than bf16 there).
#   FP8_SMALL_M = "scaled_mm" keeps w8a8 at every M.
CUDA_LARGE_M: dict[str, str] = {"int8": "triton", "int4": "torch"}
TRITON_MAX_M: dict[str, int] = {"int8": 64, "int4": 16, "fp8": 16}
TINYGEMM_MAX_M = 128
FP8_SMALL_M = "triton"


def use_triton(x2d: torch.Tensor, method: str) -> bool:
    from lmsmith.compress import kernels

    return (x2d.shape[0] <= TRITON_MAX_M.get(method, 0) and kernels.available(x2d)
            and _KERNELS.get(("triton_wq", method), True))


class QuantLinear(nn.Module):
    """Base of the quantized linears: nn.Linear's interface, quantized storage, kernel dispatch.

    Kernel layouts derived from the stored state (tinygemm packing, scales in the activation dtype) are built
    by `prepare(device, dtype)`: engines call it at load time, so nothing is created inside a CUDA graph
    capture; elsewhere they are built on first use. Moving the module or loading a state drops them."""

    method = ""

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.backend = "auto"  # "auto": fused kernels where possible; "reference": dequantize + matmul
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device), requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self._packed: tuple[Any, dict[str, torch.Tensor]] | None = None  # ((device, dtype), derived tensors)
        self._register_load_state_dict_pre_hook(self._drop_packed)

    def _drop_packed(self, *args: Any, **kwargs: Any) -> None:
        self._packed = None

    def _apply(self, fn, recurse=True):  # .to()/.cuda() invalidate the derived layouts
        self._packed = None
        return super()._apply(fn, recurse)

    @property
    def weight_dtype(self) -> torch.dtype:
        return self.scales.dtype

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        raise NotImplementedError

    def build_layouts(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The tensors the kernels want for activations of `dtype` on `device` (subclasses)."""
        return {}

    @torch.no_grad()
    def prepare(self, device: torch.device | None = None, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        device = torch.device(device) if device is not None else self.qweight.device
        if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" must key the same layouts
            device = torch.device("cuda", torch.cuda.current_device())
        dtype = dtype or self.scales.dtype
        key = (device, dtype)
        if self._packed is None or self._packed[0] != key:
            self._packed = (key, self.build_layouts(device, dtype))
        return self._packed[1]

    def layouts(self, x2d: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.prepare(x2d.device, compute_dtype(x2d))

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantize(x.dtype), self.bias)

    def cpu_kernel(self, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """`x2d -> y2d` (bias added) calling PyTorch's CPU kernel directly on the prepared layouts, or None.

        `forward` re-checks backend, device, dtype and layouts on every call (~35 us of Python per call on a
        CPU, longer than the int4 kernel itself at batch 1); a decode loop binds this once instead."""
        cpu = torch.device("cpu")
        if self.backend != "auto" or self.qweight.device != cpu or dtype not in (torch.float32, torch.bfloat16):
            return None
        cdt, bias = cpu_compute_dtype(dtype), self.bias
        call = self._cpu_call(cdt)
        if call is None:
            return None
        op, args = call

        def run(x: torch.Tensor) -> torch.Tensor:
            y = op(x.to(cdt), *args).to(dtype)
            return y if bias is None else y.add_(bias)
        return run

    def _cpu_call(self, cdt: torch.dtype) -> tuple[Any, tuple] | None:
        """(CPU op, its arguments after the activation) for activations in `cdt`, or None (subclasses)."""
        return None

    def fast_matmul(self, x2d: torch.Tensor) -> torch.Tensor | None:
        """[M, K] -> [M, N] with a fused kernel (bias not added), or None when none applies."""
        return None

    def triton_matmul(self, x2d: torch.Tensor) -> torch.Tensor | None:
        """[M, K] -> [M, N] with bias, one Triton launch at decode sizes, or None."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "auto":
            shape = x.shape
            x2d = x.reshape(-1, self.in_features)
            if use_triton(x2d, self.method):
                y = self.triton_matmul(x2d)
                if y is not None:
                    return y.reshape(*shape[:-1], self.out_features)
            large_path = CUDA_LARGE_M.get(self.method) if x.device.type == "cuda" else None
            limit = TINYGEMM_MAX_M if self.method == "int4" else TRITON_MAX_M.get(self.method, 0)
            if large_path is not None and x2d.shape[0] > limit:
                w = self.fast_dequantize(x2d) if large_path == "triton" else None
                if w is not None:
                    return F.linear(x, w, self.bias)
            else:
                y = self.fast_matmul(x2d)
                if y is not None:
                    y = y.reshape(*shape[:-1], self.out_features)
                    return y if self.bias is None else y + self.bias
        return self.reference_forward(x)

    def fast_dequantize(self, x2d: torch.Tensor) -> torch.Tensor | None:
        """The weight in the activation dtype in one Triton launch (large-M CUDA path), or None."""
        from lmsmith.compress import kernels

        if not kernels.available(x2d) or not _KERNELS.get(("triton_dq", self.method), True):
            return None
        st = self.layouts(x2d)
        try:
            if self.method == "int4":
                return kernels.dequantize(self.qweight, st["s32"], st["m32"], self.in_features, x2d.dtype, "int4",
                                          self.group_size)
            return kernels.dequantize(self.qweight, st["scales32"], None, self.in_features, x2d.dtype, self.method)
        except Exception as e:  # pragma: no cover - depends on the Triton build
            import warnings

            _KERNELS[("triton_dq", self.method)] = False
            warnings.warn(f"Triton {self.method} dequantize failed ({str(e).splitlines()[0]}); using PyTorch ops instead")
            return None

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    @property
    def weight_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for n, b in self.named_buffers() if not n.startswith("_"))


def _triton_call(method: str, fn, *args, **kwargs) -> torch.Tensor | None:
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # a Triton build that rejects the kernel: warn once, use PyTorch's kernels
        import warnings

        _KERNELS[("triton_wq", method)] = False
        warnings.warn(f"Triton {method} kernel failed ({str(e).splitlines()[0]}); using PyTorch's kernels instead")
        return None


class Int8Linear(QuantLinear):
    """int8 weight [N, K] with one scale per output channel; activations stay in float."""

    method = "int8"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: torch.dtype = torch.float32,
                 device=None):
        super().__init__(in_features, out_features, bias, dtype, device)
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.ones(out_features, dtype=dtype, device=device))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, linear.weight.dtype,
                linear.weight.device)
        q, s = quantize_int8(linear.weight.detach())
        m.qweight.copy_(q)
        m.scales.copy_(s)
        if linear.bias is not None:
            m.bias.data.copy_(linear.bias.detach())
        return m

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return dequantize_int8(self.qweight, self.scales, dtype or self.scales.dtype)

    def build_layouts(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        if device.type == "cpu" and self.qweight.device.type == "cpu" and self.qweight.data_ptr() % CPU_ALIGN:
            # PyTorch's AVX-512 int8 kernel reads the weight with aligned loads and crashes (SIGSEGV) on a
            # tensor that safetensors placed at an odd offset: keep an aligned copy (the allocator aligns to 64)
            self.qweight = self.qweight.contiguous().clone()
        s = self.scales.to(device)
        return {"scales": s.to(dtype).contiguous(), "scales32": s.float().contiguous()}

    def triton_matmul(self, x2d: torch.Tensor) -> torch.Tensor | None:
        from lmsmith.compress.kernels import wq_matmul

        bias = None if self.bias is None else self.bias.to(x2d.dtype)
        return _triton_call("int8", wq_matmul, x2d, self.qweight, self.layouts(x2d)["scales32"], None, bias)

    def _cpu_call(self, cdt: torch.dtype) -> tuple[Any, tuple] | None:
        cpu = torch.device("cpu")
        if not has_kernel("_weight_int8pack_mm", cpu):
            return None
        st = self.prepare(cpu, cdt)  # first: it may swap in an aligned qweight
        return torch.ops.aten._weight_int8pack_mm, (self.qweight, st["scales"])

    def fast_matmul(self, x2d: torch.Tensor) -> torch.Tensor | None:
        if x2d.dtype not in (torch.float32, torch.bfloat16, torch.float16) or not has_kernel("_weight_int8pack_mm", x2d.device):
            return None
        if x2d.device.type == "cuda" and x2d.dtype == torch.float32:
            return None  # the CUDA kernel takes 16-bit activations only
        dt = compute_dtype(x2d)
        try:
            y = torch.ops.aten._weight_int8pack_mm(x2d.to(dt).contiguous(), self.qweight, self.layouts(x2d)["scales"])
        except RuntimeError as e:
            kernel_failed("_weight_int8pack_mm", x2d.device, e)
            return None
        return y.to(x2d.dtype)


class Int4Linear(QuantLinear):
    """Group-wise 4-bit weight, two values per byte; scales (and zero points if asymmetric) per group.

    Saved state: `qweight` uint8 [N, K/2], `scales` [N, K/g], float `zeros` [N, K/g] (asymmetric only).
    The kernels' layouts (tinygemm packing; scale/offset pairs) are derived from it by `prepare`."""

    method = "int4"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: torch.dtype = torch.float32,
                 device=None, group_size: int = 128, symmetric: bool = False):
        super().__init__(in_features, out_features, bias, dtype, device)
        if in_features % group_size:
            raise LmsmithError(f"int4 group size {group_size} does not divide in_features={in_features}",
                               "pick a group size that divides it (32, 64 or 128)")
        self.group_size, self.symmetric = group_size, symmetric
        groups = in_features // group_size
        self.register_buffer("qweight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8, device=device))
        self.register_buffer("scales", torch.ones(out_features, groups, dtype=dtype, device=device))
        if symmetric:
            self.zeros = None
        else:
            self.register_buffer("zeros", torch.full((out_features, groups), 8.0, dtype=dtype, device=device))

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 128, symmetric: bool = False) -> "Int4Linear":
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, linear.weight.dtype,
                linear.weight.device, group_size=group_size, symmetric=symmetric)
        q, s, z = quantize_int4(linear.weight.detach(), group_size, symmetric)
        m.qweight.copy_(q)
        m.scales.copy_(s)
        if z is not None:
            m.zeros.copy_(z)
        if linear.bias is not None:
            m.bias.data.copy_(linear.bias.detach())
        return m

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return dequantize_int4(self.qweight, self.scales, self.zeros, self.group_size, dtype or self.scales.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_size={self.group_size}, symmetric={self.symmetric}"

    def _inner_k_tiles(self) -> int | None:
        for tiles in (8, 4, 2):
            if self.in_features % (tiles * 16) == 0:
                return tiles
        return None

    def build_layouts(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """tinygemm: the weight in its layout and [K/g, N, 2] scales-and-offsets; Triton: float32 s and m
        with w = q * s + m (m = -zero * s)."""
        out: dict[str, torch.Tensor] = {}
        s = self.scales.to(device).float()
        z = int4_zero_points(s, None if self.zeros is None else self.zeros.to(device))
        if device.type == "cuda":
            out["s32"] = s.contiguous()
            out["m32"] = (-z * s).contiguous()
        weight = self._tinygemm_weight(device, dtype)
        if weight is not None:
            # ours: w = (q - z) * s;  tinygemm: w = (q - 8) * s + m  =>  m = (8 - z) * s
            sz = torch.stack([s, (8.0 - z) * s], dim=-1).transpose(0, 1).contiguous().to(dtype)
            out["weight"], out["sz"] = weight, sz
        return out

    def _tinygemm_weight(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        q = unpack_int4(self.qweight.to(device)).to(torch.int32)
        if device.type == "cuda":
            tiles = self._inner_k_tiles()
            if (dtype != torch.bfloat16 or tiles is None or self.out_features % 8
                    or not has_kernel("_weight_int4pack_mm", device)):
                return None
            try:
                return torch.ops.aten._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), tiles)
            except RuntimeError as e:
                kernel_failed("_weight_int4pack_mm", device, e)
                return None
        if dtype not in (torch.float32, torch.bfloat16, torch.float16) or not has_kernel("_weight_int4pack_mm_for_cpu", device):
            return None
        return torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)

    def _kernel_state(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
        st = self.prepare(device, dtype)
        return (st["weight"], st["sz"]) if "weight" in st else None

    def triton_matmul(self, x2d: torch.Tensor, force_triton: bool = False) -> torch.Tensor | None:
        from lmsmith.compress.kernels import wq_matmul

        st = self.layouts(x2d)
        if "weight" in st and not force_triton:
            return None  # tinygemm is faster at every M (see CUDA_LARGE_M)
        bias = None if self.bias is None else self.bias.to(x2d.dtype)
        return _triton_call("int4", wq_matmul, x2d, self.qweight, st["s32"], st["m32"], bias, self.group_size)

    def _cpu_call(self, cdt: torch.dtype) -> tuple[Any, tuple] | None:
        state = self._kernel_state(torch.device("cpu"), cdt)
        if state is None:
            return None
        return torch.ops.aten._weight_int4pack_mm_for_cpu, (state[0], self.group_size, state[1])

    def fast_matmul(self, x2d: torch.Tensor) -> torch.Tensor | None:
        dt = compute_dtype(x2d)
        state = self._kernel_state(x2d.device, dt)
        if state is None:
            return None
        weight, sz = state
        x = x2d.to(dt).contiguous()
        op = "_weight_int4pack_mm" if x2d.device.type == "cuda" else "_weight_int4pack_mm_for_cpu"
        try:
            y = getattr(torch.ops.aten, op)(x, weight, self.group_size, sz)
        except RuntimeError as e:
            kernel_failed(op, x2d.device, e)
            return None
        return y.to(x2d.dtype)


class Fp8Linear(QuantLinear):
    """float8_e4m3fn weight with per-output-channel scales; activations quantized per token at run time.

    The weight is held as its raw bytes (uint8) so that `model.to(dtype)` cannot cast it away. The matmul is
    `torch._scaled_mm` (row-wise scales, M padded to 16, activation scaling fused into one Triton launch) on
    GPUs with fp8 tensor cores; at decode sizes (M <= 16) by default a Triton GEMV that reads the fp8 weight
    and keeps the activation in 16 bits (`FP8_SMALL_M`)."""

    method = "fp8"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: torch.dtype = torch.bfloat16,
                 device=None):
        super().__init__(in_features, out_features, bias, dtype, device)
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.uint8, device=device))
        self.register_buffer("scales", torch.ones(out_features, dtype=torch.float32, device=device))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Fp8Linear":
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, linear.weight.dtype,
                linear.weight.device)
        q, s = quantize_fp8(linear.weight.detach())
        m.qweight.copy_(q.view(torch.uint8))
        m.scales.copy_(s)
        if linear.bias is not None:
            m.bias.data.copy_(linear.bias.detach())
        return m

    @property
    def weight_fp8(self) -> torch.Tensor:
        return self.qweight.view(torch.float8_e4m3fn)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return dequantize_fp8(self.weight_fp8, self.scales, dtype or torch.float32)

    def build_layouts(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        s = self.scales.to(device).float()
        return {"scales32": s.contiguous(), "scale_b": s[None, :].contiguous()}

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same math as the kernel: per-token fp8 activations times fp8 weights, accumulated in float32."""
        xq, xs = quantize_activations_fp8(x.reshape(-1, self.in_features))
        y = (xq.float() @ self.weight_fp8.float().t()) * xs * self.scales.float()[None, :]
        y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cuda" and self.backend == "auto":
            raise fp8_cpu_error()
        return super().forward(x)

    def triton_matmul(self, x2d: torch.Tensor) -> torch.Tensor | None:
        if FP8_SMALL_M != "triton" or not fp8_supported(x2d.device):
            return None
        from lmsmith.compress.kernels import wq_matmul

        bias = None if self.bias is None else self.bias.to(x2d.dtype)
        return _triton_call("fp8", wq_matmul, x2d, self.qweight, self.layouts(x2d)["scales32"], None, bias, kind="fp8")

    def fast_matmul(self, x2d: torch.Tensor) -> torch.Tensor | None:
        if (not fp8_supported(x2d.device) or not _KERNELS.get(("_scaled_mm_fp8", x2d.device.type), True)
                or self.in_features % 16 or self.out_features % 16):
            return None
        from lmsmith.compress import kernels

        m = x2d.shape[0]
        if kernels.available(x2d):
            xq, xs = kernels.fp8_quantize_rows(x2d)  # one launch, rows padded to 16 (cuBLASLt's fp8 rule)
        else:
            xq, xs = quantize_activations_fp8(x2d)
            if m % 16:
                xq, xs = F.pad(xq.view(torch.uint8), (0, 0, 0, 16 - m % 16)).view(torch.float8_e4m3fn), F.pad(xs, (0, 0, 0, 16 - m % 16), value=1.0)
        try:
            y = torch._scaled_mm(xq, self.weight_fp8.t(), scale_a=xs, scale_b=self.layouts(x2d)["scale_b"],
                                 out_dtype=torch.bfloat16)
        except RuntimeError as e:
            kernel_failed("_scaled_mm_fp8", x2d.device, e)
            return None
        return y[:m].to(x2d.dtype)


QUANT_CLASSES: dict[str, type[QuantLinear]] = {"int8": Int8Linear, "int4": Int4Linear, "fp8": Fp8Linear}


# ----------------------------------------------------------------------------------- model level
def output_linear_names(model: nn.Module) -> set[str]:
    """Names of the linears that produce logits (lm_head), kept in full precision by default."""
    names = {n for n, m in model.named_modules() if n.split(".")[-1] in ("lm_head", "output", "embed_out")}
    get_out = getattr(model, "get_output_embeddings", None)
    out = get_out() if callable(get_out) else None
    if out is not None:
        names |= {n for n, m in model.named_modules() if m is out}
    return names


def target_linears(model: nn.Module, include_lm_head: bool = False, skip: list[str] | tuple[str, ...] = ()
                   ) -> Iterator[tuple[str, nn.Linear]]:
    """The nn.Linear modules `quantize_model_` replaces, by qualified name."""
    heads = set() if include_lm_head else output_linear_names(model)
    for name, module in model.named_modules():
        if type(module) is nn.Linear and name not in heads and not any(s and s in name for s in skip):
            yield name, module


def auto_group_size(in_features: list[int]) -> int:
    """128 where it divides every layer (most Llama shapes: fast kernels, small scale overhead), else 32
    (finest: the best quality; SmolLM2's 576-wide layers, whose weights ship on a Q4_1 grid of 32)."""
    for g in (128, 32):
        if all(k % g == 0 for k in in_features):
            return g
    raise LmsmithError(f"no int4 group size in {GROUP_SIZES} divides every layer width {sorted(set(in_features))}",
                       "quantize this model with --method int8")


def plan(model: nn.Module, method: str, group_size: int | None = None, symmetric: bool = False,
         include_lm_head: bool = False, skip: list[str] | tuple[str, ...] = (), lm_head_method: str | None = None
         ) -> QuantSpec:
    """Validate the request against the model and fill in the spec (group size, module list)."""
    check_method(method)
    if lm_head_method is not None:
        check_method(lm_head_method)
        include_lm_head = True
    targets = list(target_linears(model, include_lm_head, skip))
    if not targets:
        raise LmsmithError("the model has no nn.Linear layers to quantize")
    heads = output_linear_names(model)
    spec = QuantSpec(method=method, symmetric=symmetric if method == "int4" else True,
                     include_lm_head=include_lm_head, skip=list(skip), modules=[n for n, _ in targets],
                     lm_head_method=lm_head_method if lm_head_method != method else None)
    int4_targets = [(n, m) for n, m in targets if spec.for_module(n, heads).method == "int4"]
    if int4_targets:
        if group_size is None:
            group_size = auto_group_size([m.in_features for _, m in int4_targets])
        check_group_size(group_size)
        bad = [(n, m.in_features) for n, m in int4_targets if m.in_features % group_size]
        if bad:
            name, k = bad[0]
            fits = [g for g in GROUP_SIZES if all(m.in_features % g == 0 for _, m in int4_targets)]
            raise LmsmithError(f"int4 group size {group_size} does not divide in_features={k} of {name}",
                               f"use --group-size {max(fits)}" if fits else "use --method int8 for this model")
        spec.group_size = group_size
    if "int4" not in (method, lm_head_method):
        spec.symmetric = True  # int8 and fp8 are always symmetric
    return spec


def make_module(linear: nn.Linear, spec: QuantSpec) -> QuantLinear:
    if spec.method == "int8":
        return Int8Linear.from_linear(linear)
    if spec.method == "int4":
        return Int4Linear.from_linear(linear, spec.group_size or 128, spec.symmetric)
    return Fp8Linear.from_linear(linear)


def empty_module(linear: nn.Linear, spec: QuantSpec, dtype: torch.dtype) -> QuantLinear:
    """A quantized linear of the right shapes with no values yet (to load a saved state into)."""
    args = (linear.in_features, linear.out_features, linear.bias is not None, dtype, linear.weight.device)
    if spec.method == "int4":
        return Int4Linear(*args, group_size=spec.group_size or 128, symmetric=spec.symmetric)
    return QUANT_CLASSES[spec.method](*args)


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def quantize_model_(model: nn.Module, method: str, group_size: int | None = None, symmetric: bool = False,
                    include_lm_head: bool = False, skip: list[str] | tuple[str, ...] = (),
                    allow_cpu_fp8: bool = False, empty: bool = False, progress: bool = False,
                    lm_head_method: str | None = None) -> QuantSpec:
    """Replace the model's nn.Linear layers in place with quantized ones; returns the spec it applied.

    lm_head (and anything whose name contains a `skip` entry) stays in full precision unless
    `include_lm_head` (or `lm_head_method` names its own method: int8 logits beside int4 layers keep the
    quality while the biggest matrix of a small model still shrinks). `empty=True` only swaps in modules of
    the right shapes (loading a saved model). fp8 runs on CUDA only; `allow_cpu_fp8` lets an offline
    conversion quantize on the CPU anyway."""
    spec = plan(model, method, group_size, symmetric, include_lm_head, skip, lm_head_method)
    if "fp8" in (method, lm_head_method) and not allow_cpu_fp8 and not fp8_supported(model_device(model)):
        raise fp8_cpu_error()
    heads = output_linear_names(model)
    targets = [(n, m) for n, m in model.named_modules() if n in set(spec.modules)]
    if progress:
        from lmsmith.progress import task

        ctx: Any = task(f"quantizing to {method}", total=len(targets))
    else:
        ctx = contextlib.nullcontext()
    with ctx as tick, torch.no_grad():
        for name, linear in targets:
            dtype = linear.weight.dtype
            mspec = spec.for_module(name, heads)
            new = empty_module(linear, mspec, dtype) if empty else make_module(linear, mspec)
            model.set_submodule(name, new)
            if tick is not None:
                tick(1, info=name)
    config = getattr(model, "config", None)
    if config is not None:
        config.quantization = spec.to_dict()
    model._lmsmith_quant = spec  # type: ignore[attr-defined]
    return spec


def quantized_modules(model: nn.Module) -> list[tuple[str, QuantLinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLinear)]


def set_backend(model: nn.Module, backend: str) -> None:
    """'auto' (fused kernels where they apply) or 'reference' (dequantize then matmul)."""
    if backend not in ("auto", "reference"):
        raise LmsmithError(f"unknown backend '{backend}'", "use auto or reference")
    for _, m in quantized_modules(model):
        m.backend = backend


@torch.no_grad()
def prepare_for_inference(model: nn.Module, dtype: torch.dtype | None = None) -> None:
    """Build the kernels' weight layouts for activations of `dtype` now (not inside the first decode step
    or a CUDA graph capture). Default dtype: the model's floating parameters'."""
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    for _, m in quantized_modules(model):
        device = m.qweight.device
        cdt = cpu_compute_dtype(dtype) if device.type == "cpu" else dtype
        if m.backend == "auto":
            m.prepare(device, cdt)


@torch.no_grad()
def concat_linears(linears: list[nn.Module]) -> nn.Module:
    """One linear computing `cat([l(x) for l in linears], -1)`: fused QKV / gate-up projections.

    Works for nn.Linear and for quantized linears of one method: every stored tensor is laid out per
    output channel (int8, fp8) or per output channel and input group (int4), so concatenating along the
    output dimension is exact. Engines fuse after `quantize_model_` with this instead of `torch.cat` on
    `.weight`."""
    first = linears[0]
    if any(type(m) is not type(first) for m in linears) or any(m.in_features != first.in_features for m in linears):
        raise LmsmithError("only linears of one type and input size can be concatenated")
    has_bias = [m.bias is not None for m in linears]
    if any(has_bias) and not all(has_bias):
        raise LmsmithError("cannot concatenate linears where only some have a bias")
    out = sum(m.out_features for m in linears)
    bias = torch.cat([m.bias for m in linears]) if all(has_bias) else None
    if type(first) is nn.Linear:
        fused = nn.Linear(first.in_features, out, bias=bias is not None, device=first.weight.device,
                          dtype=first.weight.dtype)
        fused.weight.copy_(torch.cat([m.weight for m in linears]))
    else:
        args = (first.in_features, out, bias is not None, first.scales.dtype, first.scales.device)
        if isinstance(first, Int4Linear):
            if any(m.group_size != first.group_size or m.symmetric != first.symmetric for m in linears):
                raise LmsmithError("cannot concatenate int4 linears with different group sizes or symmetry")
            fused = Int4Linear(*args, group_size=first.group_size, symmetric=first.symmetric)
        else:
            fused = type(first)(*args)
        fused.backend = first.backend
        for name, _ in fused.named_buffers(recurse=False):
            getattr(fused, name).copy_(torch.cat([getattr(m, name) for m in linears]))
    if bias is not None:
        fused.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)  # keeps the parts' dtype
    return fused


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes of the linear layers' weights, quantized or not, without the output embedding (lm_head): what a
    weight-only quantization shrinks (reported by the quantization benchmarks)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    total = 0
    for m in model.modules():
        if isinstance(m, QuantLinear):
            total += m.weight_bytes
        elif type(m) is nn.Linear and m is not head:
            total += m.weight.numel() * m.weight.element_size()
    return total
