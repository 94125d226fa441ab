"""Calibration for post-training compression: read the user's text, cut token windows, and walk the model
one decoder layer at a time.

GPTQ, AWQ, Wanda, SparseGPT and activation-aware SVD all look at what each linear layer actually sees.
`layerwise` feeds the calibration windows through the decoder layer by layer: a method collects the
statistics it needs from one layer's linears (hooks), rewrites that layer, and the rewritten layer's
outputs become the next layer's inputs, so later layers are calibrated on the errors of earlier ones
(as GPTQ does). Only one layer's activations are held at a time.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from lmsmith.errors import LmsmithError

TEXT_FIELDS = ("text", "content", "prompt", "completion", "response", "output")


@dataclass
class CalibrationSpec:
    path: str
    samples: int = 128
    seq_len: int = 512
    seed: int = 0


def read_documents(path: str | Path) -> list[str]:
    """Documents from plain text (one document), JSONL or JSON (`text`/`messages`/`prompt`+`completion`)."""
    p = Path(path)
    if not p.is_file():
        raise LmsmithError(f"calibration file not found: {p}", "pass --calibration FILE (plain text or JSONL)")
    raw = p.read_text(encoding="utf-8", errors="replace")
    if p.suffix in (".jsonl", ".json"):
        try:
            rows = json.loads(raw) if p.suffix == ".json" else [json.loads(l) for l in raw.splitlines() if l.strip()]
        except json.JSONDecodeError as e:
            raise LmsmithError(f"{p} is not valid {p.suffix[1:].upper()} ({e.msg} at line {e.lineno})",
                               "fix the file or pass plain text") from None
        docs = [doc_text(r) for r in (rows if isinstance(rows, list) else [rows])]
    else:
        docs = [raw]
    docs = [d.strip() for d in docs if d and d.strip()]
    if not docs:
        raise LmsmithError(f"{p} holds no text", "pass a file with text in the language the model will serve")
    return docs


def doc_text(row: Any) -> str:
    if isinstance(row, str):
        return row
    if not isinstance(row, dict):
        return ""
    if isinstance(row.get("messages"), list):
        return "\n".join(str(m.get("content") or "") for m in row["messages"] if isinstance(m, dict))
    return "\n".join(str(row[k]) for k in TEXT_FIELDS if isinstance(row.get(k), str))


def calibration_ids(tokenizer, spec: CalibrationSpec) -> torch.Tensor:
    """[samples, seq_len] token windows cut at random (seeded) offsets from the documents joined by EOS.

    A text shorter than samples x seq_len gives overlapping windows (still useful, but say so)."""
    docs = read_documents(spec.path)
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for d in docs:
        ids.extend(tokenizer(d, add_special_tokens=False).input_ids)
        if eos is not None:
            ids.append(eos)
    if len(ids) < spec.seq_len + 1:
        raise LmsmithError(f"calibration text {spec.path} has {len(ids)} tokens, fewer than --seq-len {spec.seq_len}",
                           "pass more text or a smaller --seq-len")
    rng = random.Random(spec.seed)
    n_windows = len(ids) - spec.seq_len + 1
    if n_windows >= spec.samples and len(ids) >= spec.samples * spec.seq_len:
        # disjoint windows where the text allows: shuffle the aligned chunks
        starts = list(range(0, len(ids) - spec.seq_len + 1, spec.seq_len))
        rng.shuffle(starts)
        starts = starts[:spec.samples]
    else:
        starts = [rng.randrange(n_windows) for _ in range(spec.samples)]
    return torch.tensor([ids[s:s + spec.seq_len] for s in starts], dtype=torch.long)


# ------------------------------------------------------------------------------------ layer walk
def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks of a transformers causal LM (Llama, Qwen2, Mistral, Gemma, ...)."""
    base = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise LmsmithError(f"cannot find the decoder layers of this {type(model).__name__}",
                           "calibrated compression supports transformers decoder models with `model.layers`")
    return layers


class _Recorder(nn.Module):
    """Stands in for a decoder layer during capture: records its call and passes the hidden state on."""

    def __init__(self, store: list):
        super().__init__()
        self.store = store

    def forward(self, hidden_states, *args, **kwargs):
        self.store.append((hidden_states, args, kwargs))
        return hidden_states


@torch.no_grad()
def capture_layer_inputs(model: nn.Module, ids: torch.Tensor, batch_size: int
                         ) -> tuple[list[torch.Tensor], list[list[tuple[tuple, dict]]]]:
    """Run embeddings/masks/rotary once per batch with every decoder layer replaced by a recorder.

    Returns the first layer's hidden states per batch and, per layer and batch, the extra (args, kwargs)
    the model passes to that layer (masks and position embeddings; per layer since e.g. Gemma alternates
    sliding and global masks)."""
    layers = decoder_layers(model)
    base = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    stores: list[list] = [[] for _ in layers]
    originals = list(layers)
    for i in range(len(layers)):
        layers[i] = _Recorder(stores[i])
    device = next(model.parameters()).device
    try:
        for b in range(0, ids.shape[0], batch_size):
            base(input_ids=ids[b:b + batch_size].to(device), use_cache=False)
    finally:
        for i, layer in enumerate(originals):
            layers[i] = layer
    hidden = [h for h, _, _ in stores[0]]
    extras = [[(a, kw) for _, a, kw in store] for store in stores]
    return hidden, extras


def run_layer(layer: nn.Module, hidden: list[torch.Tensor], extras: list[tuple[tuple, dict]]) -> list[torch.Tensor]:
    outs = []
    for h, (a, kw) in zip(hidden, extras):
        o = layer(h, *a, **kw)
        outs.append(o[0] if isinstance(o, tuple) else o)
    return outs


def linears_of(layer: nn.Module, skip: tuple[str, ...] = ()) -> dict[str, nn.Linear]:
    return {n: m for n, m in layer.named_modules() if type(m) is nn.Linear and not any(s and s in n for s in skip)}


@torch.no_grad()
def layerwise(model: nn.Module, ids: torch.Tensor, process: Callable[[int, nn.Module, Callable[[], None]], None],
              label: str, batch_size: int = 4) -> None:
    """Call `process(index, layer, forward)` for each decoder layer in order, then feed the calibration
    batches through the (possibly rewritten) layer to produce the next layer's inputs.

    `forward()` runs the current layer on its inputs (hooks installed by `process` see every linear's
    input); `process` modifies the layer in place."""
    from lmsmith.progress import task

    hidden, extras = capture_layer_inputs(model, ids, batch_size)
    layers = decoder_layers(model)
    with task(label, total=len(layers)) as tick:
        for i, layer in enumerate(layers):
            process(i, layer, lambda: run_layer(layer, hidden, extras[i]))
            hidden = run_layer(layer, hidden, extras[i])
            tick(1, info=f"layer {i}")


class InputStats:
    """Hooks on linears that accumulate statistics of their inputs over all calibration tokens.

    `hessian`: X^T X / n (GPTQ, SparseGPT); `sq_norm`: sum of x_j^2 per input feature (Wanda);
    `abs_mean`: mean |x_j| (AWQ, ASVD); `keep_inputs`: the raw inputs themselves (AWQ's search)."""

    def __init__(self, linears: dict[str, nn.Linear], hessian: bool = False, keep_inputs: bool = False):
        self.linears, self.want_h, self.keep = linears, hessian, keep_inputs
        self.n: dict[str, int] = {}
        self.h: dict[str, torch.Tensor] = {}
        self.sq: dict[str, torch.Tensor] = {}
        self.abs: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, list[torch.Tensor]] = {}
        self.handles: list[Any] = []
        self.alias: dict[str, str] = {}  # linears fed the very same input tensor (q/k/v, gate/up) share stats
        self._last: tuple[Any, str] | None = None

    def __enter__(self) -> "InputStats":
        for name, lin in self.linears.items():
            self.handles.append(lin.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _hook(self, name: str):
        def hook(module, args):
            if self._last is not None and args[0] is self._last[0] and self._last[1] != name:
                self.alias[name] = self._last[1]
                return
            self._last = (args[0], name)
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            n = x.shape[0]
            if name not in self.n:
                k = x.shape[1]
                self.n[name] = 0
                self.sq[name] = torch.zeros(k, device=x.device)
                self.abs[name] = torch.zeros(k, device=x.device)
                if self.want_h:
                    self.h[name] = torch.zeros(k, k, device=x.device)
                self.inputs[name] = []
            self.n[name] += n
            self.sq[name] += x.pow(2).sum(0)
            self.abs[name] += x.abs().sum(0)
            if self.want_h:
                self.h[name].addmm_(x.t(), x)
            if self.keep:
                self.inputs[name].append(x)
        return hook

    def source(self, name: str) -> str:
        return self.alias.get(name, name)

    def hessian(self, name: str) -> torch.Tensor:
        name = self.source(name)
        return self.h[name] / max(self.n[name], 1)

    def abs_mean(self, name: str) -> torch.Tensor:
        name = self.source(name)
        return self.abs[name] / max(self.n[name], 1)

    def col_norm(self, name: str) -> torch.Tensor:
        """||X_j||_2 over all calibration tokens (Wanda's activation norm)."""
        return self.sq[self.source(name)].sqrt()

    def input_matrix(self, name: str) -> torch.Tensor:
        return torch.cat(self.inputs[self.source(name)])

    def groups(self, names: list[str]) -> list[list[str]]:
        """`names` grouped by shared input, in order (q/k/v together, gate/up together)."""
        out: dict[str, list[str]] = {}
        for n in names:
            out.setdefault(self.source(n), []).append(n)
        return list(out.values())


def iter_layer_linears(layer: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    yield from linears_of(layer).items()
