"""What a quantization is: the method, group size and layers, as stored in config.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from lmsmith.errors import LmsmithError

METHODS = ("int8", "int4", "fp8")
GROUP_SIZES = (32, 64, 128)
QUANT_METHOD = "lmsmith"  # the `quant_method` we write into config.json


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
