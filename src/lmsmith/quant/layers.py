"""The quantized linears: drop-in `nn.Linear` replacements holding int8, int4 or fp8 weights."""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from lmsmith.errors import LmsmithError
from lmsmith.quant.codecs import (
    dequantize_fp8,
    dequantize_int4,
    dequantize_int8,
    int4_zero_points,
    quantize_activations_fp8,
    quantize_fp8,
    quantize_int4,
    quantize_int8,
    unpack_int4,
)
from lmsmith.quant.dispatch import (
    CPU_ALIGN,
    CUDA_LARGE_M,
    FP8_SMALL_M,
    KERNELS,
    TINYGEMM_MAX_M,
    TRITON_MAX_M,
    compute_dtype,
    cpu_compute_dtype,
    fp8_cpu_error,
    fp8_supported,
    has_kernel,
    kernel_failed,
    use_triton,
)


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
        from lmsmith.quant import kernels

        if not kernels.available(x2d) or not KERNELS.get(("triton_dq", self.method), True):
            return None
        st = self.layouts(x2d)
        try:
            if self.method == "int4":
                return kernels.dequantize(self.qweight, st["s32"], st["m32"], self.in_features, x2d.dtype, "int4",
                                          self.group_size)
            return kernels.dequantize(self.qweight, st["scales32"], None, self.in_features, x2d.dtype, self.method)
        except Exception as e:  # pragma: no cover - depends on the Triton build
            import warnings

            KERNELS[("triton_dq", self.method)] = False
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

        KERNELS[("triton_wq", method)] = False
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
        from lmsmith.quant.kernels import wq_matmul

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
        from lmsmith.quant.kernels import wq_matmul

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
        from lmsmith.quant.kernels import wq_matmul

        bias = None if self.bias is None else self.bias.to(x2d.dtype)
        return _triton_call("fp8", wq_matmul, x2d, self.qweight, self.layouts(x2d)["scales32"], None, bias, kind="fp8")

    def fast_matmul(self, x2d: torch.Tensor) -> torch.Tensor | None:
        if (not fp8_supported(x2d.device) or not KERNELS.get(("_scaled_mm_fp8", x2d.device.type), True)
                or self.in_features % 16 or self.out_features % 16):
            return None
        from lmsmith.quant import kernels

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
