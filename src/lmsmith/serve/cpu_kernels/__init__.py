"""Owned CPU kernels for batch-1 decode (`qgemv.cpp`): int4 / int8 GEMV on int16-quantized activations with
RMSNorm / SiLU*up folded into their input and bias + residual into their output, and one decode-attention op per
layer (RoPE, the K/V write, softmax(qK^T)V over the paged cache).

PyTorch's CPU int4 kernel takes bf16 activations and dequantizes every weight to float; llama.cpp instead
quantizes the activation row per block and runs integer dot products (VNNI), which at batch 1 is the difference
between being bound by arithmetic and by the weight stream. These kernels do the same with int16 activations
(llama.cpp's int8 ones cost ~6% perplexity on SmolLM2's outlier channels; int16 costs nothing measurable),
compiled for this machine (`-march=native`: AVX-512 VNNI, else AVX2, else portable C++) with
`torch.utils.cpp_extension` at first use into a cache directory ($LMSMITH_KERNEL_CACHE, default
~/.cache/lmsmith/cpu_kernels), keyed by the source, the torch version and the CPU's flags.

On by default; `LMSMITH_CPU_KERNELS=0` turns them off. Where no compiler (or ninja) is found, or the build fails,
`available()` is False and the engine keeps PyTorch's kernels (`LMSMITH_CPU_KERNELS_MARCH=x86-64-v3` or `x86-64`
builds the AVX2 or portable path instead of `-march=native`). The activation quantization changes the numerics
very slightly, so only the decode step uses them; prefill and perplexity keep the exact path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("qgemv.cpp")
MAX_ROWS = 16  # beyond a few rows the weights are reused across rows: PyTorch's kernels do better
_STATE: dict[str, object] = {}
_LOCK = threading.Lock()


def enabled() -> bool:
    """On unless LMSMITH_CPU_KERNELS is 0 / false / off / no."""
    return os.environ.get("LMSMITH_CPU_KERNELS", "1").lower() not in ("0", "false", "off", "no")


def cache_dir() -> Path:
    base = os.environ.get("LMSMITH_KERNEL_CACHE")
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "lmsmith" / "cpu_kernels"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _march() -> str:
    """-march for x86: native, or e.g. x86-64-v3 (AVX2) / x86-64 (portable) to build and test the other paths."""
    return os.environ.get("LMSMITH_CPU_KERNELS_MARCH", "native")


def build_key() -> str:
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), torch.__version__.encode(), _cpu_flags().encode(), platform.machine().encode(),
                 _march().encode()):
        h.update(part)
    return h.hexdigest()[:16]


def unavailable_reason() -> str | None:
    """Why the kernels cannot be used here (None: they can), building them on the first call."""
    if not enabled():
        return "turned off (LMSMITH_CPU_KERNELS=0)"
    with _LOCK:
        if "reason" not in _STATE:
            _STATE["reason"] = _build()
    return _STATE["reason"]  # type: ignore[return-value]


def available() -> bool:
    return unavailable_reason() is None


def isa() -> str | None:
    """The instruction set the kernels were compiled for ('avx512-vnni', 'avx2', 'portable'), or None."""
    return torch.ops.lmsmith_cpu.isa() if available() else None


def _build() -> str | None:
    from torch.utils import cpp_extension

    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return f"no C++ compiler ({cxx}) on PATH"
    if shutil.which("ninja") is None:  # the `ninja` wheel (a dependency) outside an activated venv: not on PATH
        try:
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except (ImportError, AttributeError):
            pass
    if not cpp_extension.is_ninja_available():
        return "ninja is not installed (pip install ninja)"
    if platform.machine().lower() not in ("x86_64", "amd64", "aarch64", "arm64"):
        return f"unsupported machine {platform.machine()}"
    flags = ["-O3", "-fopenmp", "-fno-math-errno"] + (["-march=" + _march()] if platform.machine().lower() in ("x86_64", "amd64") else
                                   ["-mcpu=native"])
    out = cache_dir() / build_key()
    out.mkdir(parents=True, exist_ok=True)
    try:
        cpp_extension.load(name="lmsmith_cpu_kernels", sources=[str(SOURCE)], extra_cflags=flags,
                           extra_ldflags=["-fopenmp"], build_directory=str(out), is_python_module=False,
                           verbose=False)
        torch.ops.lmsmith_cpu.isa()
    except Exception as e:  # a broken toolchain: keep PyTorch's kernels
        msg = str(e).strip().splitlines()
        reason = f"building the CPU kernels failed ({msg[-1][:200] if msg else type(e).__name__})"
        log.warning("%s; using PyTorch's kernels", reason)
        return reason
    return None


# ------------------------------------------------------------------------------------------------ layouts
def pack_int4(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, group_size: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Int4Linear's state (packed uint8 [N, K/2], scales/zeros [N, K/g]; w = (q - z) * s) -> the kernel's
    16-row interleaved layout: (qpack [N/16, K/8, 64] u8, s [N/16, K/g, 16] fp16, m [N/16, K/g, 16] fp16)
    with w = q * s + m; the 4 bytes of a row hold its 8 nibbles as (q0|q2<<4, q4|q6<<4, q1|q3<<4, q5|q7<<4)
    (one shift + mask of the 32-bit lane gives an int16 pair, see qgemv.cpp). N is padded to 16 rows of zeros."""
    from lmsmith.quant.codecs import int4_zero_points, unpack_int4

    q = unpack_int4(qweight.cpu())
    n, k = q.shape
    nb = -(-n // 16)
    s = scales.cpu().float()
    m = -int4_zero_points(s, None if zeros is None else zeros.cpu().float()) * s
    pad = nb * 16 - n
    if pad:
        q = torch.cat([q, q.new_zeros(pad, k)])
        s = torch.cat([s, s.new_zeros(pad, s.shape[1])])
        m = torch.cat([m, m.new_zeros(pad, m.shape[1])])
    qr = q.view(nb, 16, k // 8, 8).transpose(1, 2)  # [nb, k/8, row, j]
    qpack = (qr[..., [0, 4, 1, 5]] | (qr[..., [2, 6, 3, 7]] << 4)).contiguous().view(nb, k // 8, 64)
    g = s.shape[1]
    def to16(t):
        return t.view(nb, 16, g).transpose(1, 2).contiguous().half()
    return qpack, to16(s), to16(m)


def pack_int8(qweight: torch.Tensor) -> torch.Tensor:
    """int8 weight [N, K] -> [N/16, K/4, 64] (int8 bits as u8), 16 rows interleaved, each row's 4 bytes as
    (w0, w2, w1, w3); N padded with zero weights."""
    w = qweight.cpu().to(torch.int8)
    n, k = w.shape
    nb = -(-n // 16)
    if nb * 16 != n:
        w = torch.cat([w, w.new_zeros(nb * 16 - n, k)])
    w = w.view(nb, 16, k // 4, 4).transpose(1, 2)[..., [0, 2, 1, 3]]
    return w.contiguous().view(torch.uint8).view(nb, k // 4, 64)


def int4_supported(mod) -> bool:
    k = mod.in_features
    return mod.group_size % 8 == 0 and k % mod.group_size == 0


def int8_supported(mod) -> bool:
    return mod.in_features % 32 == 0


# ------------------------------------------------------------------------------------------------ binding
def bind(mod: torch.nn.Module, dtype: torch.dtype, fallback: Callable[[torch.Tensor], torch.Tensor] | None
         ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """`x2d -> y2d` running an Int4Linear / Int8Linear through the owned kernels (rows <= MAX_ROWS; larger
    batches go to `fallback`), or None when they do not apply (kernels unavailable, other module types,
    not on the CPU, a shape the layout cannot hold)."""
    from lmsmith.quant import Int4Linear, Int8Linear

    if dtype not in (torch.float32, torch.bfloat16) or getattr(mod, "backend", "auto") != "auto":
        return None
    if not isinstance(mod, (Int4Linear, Int8Linear)) or mod.qweight.device.type != "cpu":
        return None
    if isinstance(mod, Int4Linear) and not int4_supported(mod) or isinstance(mod, Int8Linear) and not int8_supported(mod):
        return None
    if not available():
        return None
    n = mod.out_features
    bias = None if mod.bias is None else mod.bias.detach().float().contiguous()
    if isinstance(mod, Int4Linear):
        qpack, s, m = pack_int4(mod.qweight, mod.scales, mod.zeros, mod.group_size)
        op, args = torch.ops.lmsmith_cpu.int4_gemv.default, (qpack, s, m, bias, n, mod.group_size)
        spec = (4, [qpack, s, m], n, mod.group_size)
    else:
        wpack = pack_int8(mod.qweight)
        scale = torch.zeros(wpack.shape[0] * 16)
        scale[:n] = mod.scales.detach().cpu().float()
        op, args = torch.ops.lmsmith_cpu.int8_gemv.default, (wpack, scale, bias, n)
        spec = (8, [wpack, scale, torch.empty(0)], n, 0)
    spec[1].append(torch.empty(0) if bias is None else bias)

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > MAX_ROWS and fallback is not None:
            return fallback(x)
        if x.dtype == torch.float32:
            return op(x, *args)
        return op(x.float(), *args).to(x.dtype)

    def fused(x: torch.Tensor, norm: torch.Tensor | None = None, eps: float = 0.0, act: int = 0,
              residual: torch.Tensor | None = None) -> torch.Tensor:
        """fp32 x (rows <= MAX_ROWS): `residual + linear(pre(x))`, pre = silu(gate) * up of x = [gate | up]
        when act=1, then RMSNorm with weight `norm` when given."""
        return op(x, *args, norm, eps, act, residual)
    run.kernel = op  # type: ignore[attr-defined]
    run.fused = fused  # type: ignore[attr-defined]
    run.spec = spec  # type: ignore[attr-defined]  # (kind 4 / 8, its 4 tensors, N, group): for `decode_forward`
    return run


def decode_attention(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                     v_cache: torch.Tensor, slots: torch.Tensor, tables: torch.Tensor, lens: torch.Tensor, heads: int,
                     kv_heads: int, head_dim: int, scale: float, window: int | None, block_size: int) -> torch.Tensor:
    """One decode layer's attention, fp32: qkv [M, (heads + 2 kv_heads) head_dim] -> o [M, heads * head_dim].
    RoPE (cos/sin [M, head_dim], the rows' positions) of q and k, the new k/v written to the caches at `slots`,
    then each row attends to its `lens[r]` cached positions (the last `window`) through `tables` [M, blocks]."""
    return torch.ops.lmsmith_cpu.decode_attention(qkv, cos, sin, k_cache, v_cache, slots, tables, lens, heads,
                                                  kv_heads, head_dim, scale, window or 0, block_size)


class DecodePlan:
    """A Llama-family decode step as one `decode_forward` call: every layer's bound projections (qkv, o, gate_up,
    down; `bind`'s `spec`), its two RMSNorm weights, the final norm and the lm_head when it is bound too."""

    def __init__(self, layers: list[tuple], norms: list[tuple[torch.Tensor, float]], head: Callable | None):
        fns = [fn for layer in layers for fn in layer] + ([head] if head is not None else [])
        self.proj = [t for fn in fns for t in fn.spec[1]]
        self.kind = [fn.spec[0] for fn in fns]
        self.n_out = [fn.spec[2] for fn in fns]
        self.group = [fn.spec[3] for fn in fns]
        self.norms = [w.detach().float().contiguous() for w, _ in norms]
        self.eps = [float(e) for _, e in norms]
        self.head = head is not None

    def __call__(self, x: torch.Tensor, caches: list[torch.Tensor], cos: torch.Tensor, sin: torch.Tensor,
                 slots: torch.Tensor, tables: torch.Tensor, lens: torch.Tensor, heads: int, kv_heads: int,
                 head_dim: int, scale: float, window: int | None, block_size: int) -> torch.Tensor:
        """Logits [M, vocab] (the final-normed hidden states when the lm_head is not bound)."""
        return torch.ops.lmsmith_cpu.decode_forward.default(
            x, self.proj, self.kind, self.n_out, self.group, self.norms, self.eps, caches, cos, sin, slots, tables,
            lens, heads, kv_heads, head_dim, scale, window or 0, block_size, self.head)
