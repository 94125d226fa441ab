"""Weight-only quantization: int8 (per output channel), int4 (group-wise, packed) and fp8 (e4m3) linears.

Decoding reads every weight once per token, so it is bound by memory bandwidth: smaller weights decode
faster. The quantized modules are drop-in replacements for `nn.Linear` (same `in_features`, `out_features`,
`bias`, forward on `[..., in_features]`), so `quantize_model_(model, "int8")` works on any torch model:
transformers models and our own engine alike.

Each module keeps one canonical, device-independent state (`qweight`, `scales`, `zeros`) that is what
gets saved, and dispatches to PyTorch's fused kernels where they exist:

    int8  CPU+CUDA  aten._weight_int8pack_mm             (int8 weight, per-channel scale)
    int4  CPU       aten._weight_int4pack_mm_for_cpu     (tinygemm layout, built lazily per device)
    int4  CUDA      aten._weight_int4pack_mm             (tinygemm, bfloat16 activations)
    fp8   CUDA      torch._scaled_mm                     (e4m3 weights and per-token e4m3 activations)

Where a kernel is missing or its shape rules are not met, a plain dequantize-then-matmul does the same
math (`backend="reference"` forces it; the tests compare the two).

Ground floor (below `lmsmith.models`, which loads quantized directories; `lmsmith.compress` runs the
workflow). One idea per module:
    spec.py      QuantSpec: what was quantized and how (the config.json section)
    codecs.py    tensor math: quantize / pack / dequantize
    dispatch.py  kernel choice per device, dtype and batch size
    kernels.py   Triton kernels for CUDA decode sizes
    layers.py    QuantLinear and its int8 / int4 / fp8 subclasses
    passes.py    whole-model passes: quantize_model_, prepare_for_inference, concat_linears, ...
    format.py    the on-disk format: save_quantized, load_quantized, read_spec, swap_in_quantized
"""

from lmsmith.quant.codecs import (
                                  dequantize_fp8,
                                  dequantize_int4,
                                  dequantize_int8,
                                  pack_int4,
                                  quantize_fp8,
                                  quantize_int4,
                                  quantize_int8,
                                  unpack_int4,
)
from lmsmith.quant.dispatch import KERNELS, fp8_cpu_error, fp8_supported, has_kernel
from lmsmith.quant.layers import QUANT_CLASSES, Fp8Linear, Int4Linear, Int8Linear, QuantLinear
from lmsmith.quant.passes import (
                                  concat_linears,
                                  linear_weight_bytes,
                                  plan,
                                  prepare_for_inference,
                                  quantize_model_,
                                  quantized_modules,
                                  set_backend,
)
from lmsmith.quant.spec import GROUP_SIZES, METHODS, QUANT_METHOD, QuantSpec

__all__ = ["GROUP_SIZES", "KERNELS", "METHODS", "QUANT_CLASSES", "QUANT_METHOD", "Fp8Linear", "Int4Linear", "Int8Linear",
           "QuantLinear", "QuantSpec", "concat_linears", "dequantize_fp8", "dequantize_int4", "dequantize_int8",
           "fp8_cpu_error", "fp8_supported", "has_kernel", "linear_weight_bytes", "pack_int4", "plan",
           "prepare_for_inference", "quantize_fp8", "quantize_int4", "quantize_int8", "quantize_model_",
           "quantized_modules", "set_backend", "unpack_int4"]
