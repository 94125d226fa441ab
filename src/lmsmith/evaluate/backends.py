"""Where model outputs come from: a local model (transformers, batched) or an OpenAI-compatible endpoint.

Tasks talk only to the `Backend` interface, so the inference engine can plug in later as one more class.
Log-likelihood follows lm-evaluation-harness exactly: the pair (context, continuation) is encoded whole,
the context alone, and the continuation is the whole encoding's tokens past the context's length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

from lmsmith.data.chat import chat_ids
from lmsmith.errors import LmsmithError

Progress = Callable[[int], None] | None


@dataclass
class GenParams:
    max_tokens: int = 256
    until: list[str] = field(default_factory=list)
    temperature: float = 0.0
    seed: int = 0


@dataclass
class ModelInfo:
    """What a KV-cache estimate needs; None where the backend cannot know it."""

    name: str
    layers: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    dtype_bytes: int | None = None
    max_length: int | None = None

    def kv_cache_bytes(self, tokens: int) -> int | None:
        """2 (K and V) x layers x KV heads x head dim x bytes x tokens."""
        if None in (self.layers, self.kv_heads, self.head_dim, self.dtype_bytes):
            return None
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes * tokens


@runtime_checkable
class Backend(Protocol):
    info: ModelInfo
    supports_loglikelihood: bool

    def loglikelihood(self, requests: list[tuple[str, str]], progress: Progress = None) -> list[tuple[float, bool]]:
        """Sum of log P(continuation | context) and whether greedy decoding would produce it."""

    def loglikelihood_rolling(self, texts: list[str], progress: Progress = None) -> list[tuple[float, int]]:
        """Total log-likelihood of each text and the number of tokens scored."""

    def generate(self, prompts: list[str], params: GenParams, progress: Progress = None) -> list[str]:
        """One completion per prompt, cut at the first stop sequence."""

    def count_tokens(self, text: str) -> int: ...


def cut_at_stops(text: str, until: list[str]) -> str:
    for s in until:
        if s and s in text:
            text = text[:text.index(s)]
    return text


# ----------------------------------------------------------------------------- local (transformers)
class HFBackend:
    """A registered model (or model dir) run through transformers, batched; fp32 on CPU by default."""

    supports_loglikelihood = True

    def __init__(self, ref: str, dtype: str = "auto", device: str | None = None, batch_size: int = 16,
                 chat: bool | None = False, max_length: int | None = None):
        """`chat=None`: use the model's chat template when it has one (what a judge wants)."""
        import torch

        from lmsmith.models import default_device, load_model, load_tokenizer, resolve_model  # torch: only here

        self.ref, self.batch_size, self.chat = ref, max(1, batch_size), chat
        self.device = device or default_device()
        model = resolve_model(ref)  # once: weights and tokenizer come from the same resolution
        self.tok = load_tokenizer(model)
        self.model = load_model(model, dtype=dtype, device=self.device)
        self.torch = torch
        cfg = self.model.config
        cfg = getattr(cfg, "text_config", None) or cfg
        heads = getattr(cfg, "num_attention_heads", None)
        head_dim = getattr(cfg, "head_dim", None) or (cfg.hidden_size // heads if heads else None)
        self.max_length = max_length or getattr(cfg, "max_position_embeddings", None) or 2048
        self.info = ModelInfo(name=ref, layers=getattr(cfg, "num_hidden_layers", None),
                              kv_heads=getattr(cfg, "num_key_value_heads", None) or heads, head_dim=head_dim,
                              dtype_bytes=next(self.model.parameters()).element_size(), max_length=self.max_length)
        if chat is None:
            self.chat = bool(self.tok.chat_template)
        elif chat and not self.tok.chat_template:
            raise LmsmithError(f"model {ref} has no chat template", "drop --chat")

    # ---- tokenization as lm-eval's hf backend does it
    def encode(self, text: str, special: bool | None = None) -> list[int]:
        """The tokenizer's own default for special tokens (a BOS where it adds one), none if the text
        already starts with the prefix token: lm-eval's `tok_encode`."""
        if special is None:
            special = not text.startswith(self.tok.decode([self.prefix_token_id]))
        return self.tok.encode(text, add_special_tokens=special)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text, special=False))

    @property
    def prefix_token_id(self) -> int:
        """What an empty context is replaced by (lm-eval: BOS if the tokenizer has one, else EOS)."""
        tid = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
        return int(tid)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Trailing spaces of the context move to the continuation; the context's tokens are a prefix split."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx):]

    def loglikelihood(self, requests: list[tuple[str, str]], progress: Progress = None) -> list[tuple[float, bool]]:
        encoded = []
        for context, continuation in requests:
            if context == "":
                cont = self.encode(continuation, special=False)
                ctx, cont = ([self.prefix_token_id], cont) if cont[0] != self.prefix_token_id else (cont[:1], cont[1:])
            else:
                ctx, cont = self.encode_pair(context, continuation)
            encoded.append((ctx, cont))
        return self._score(encoded, progress)

    def _score(self, encoded: list[tuple[list[int], list[int]]], progress: Progress) -> list[tuple[float, bool]]:
        torch = self.torch
        results: list[tuple[float, bool] | None] = [None] * len(encoded)
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]) - len(encoded[i][1]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            seqs, conts = [], []
            for i in batch:
                ctx, cont = encoded[i]
                if not cont:
                    raise LmsmithError("a continuation is empty after tokenization", "check doc_to_choice / doc_to_target")
                seqs.append((ctx + cont)[-(self.max_length + 1):][:-1])
                conts.append(cont)
            width = max(len(s) for s in seqs)
            pad = self.tok.pad_token_id or 0
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, :len(s)] = torch.tensor(s)
                mask[r, :len(s)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            for r, i in enumerate(batch):
                n, cont = len(seqs[r]), conts[r]
                # normalize only the continuation's positions: a full-vocabulary log_softmax over the batch is GBs
                lp = torch.log_softmax(logits[r, n - len(cont):n].float(), dim=-1).cpu()
                target = torch.tensor(cont)
                ll = lp.gather(-1, target[:, None]).squeeze(-1).sum().item()
                greedy = bool((lp.argmax(-1) == target).all())
                results[i] = (float(ll), greedy)
            if progress:
                progress(len(batch))
        return results  # type: ignore[return-value]

    def loglikelihood_rolling(self, texts: list[str], progress: Progress = None) -> list[tuple[float, int]]:
        """Disjoint windows of max_length tokens, the first one conditioned on the prefix token."""
        out = []
        for text in texts:
            tokens = self.encode(text, special=False)
            total, n = 0.0, 0
            prev = [self.prefix_token_id]
            for start in range(0, len(tokens), self.max_length):
                window = tokens[start:start + self.max_length]
                context = (prev + tokens[:start])[-1:] if start else prev
                (ll, _), = self._score([(context, window)], None)
                total, n = total + ll, n + len(window)
            out.append((total, n))
            if progress:
                progress(1)
        return out

    def apply_chat(self, prompt: str) -> list[int]:
        return chat_ids(self.tok, [{"role": "user", "content": prompt}], add_generation_prompt=True)

    def generate(self, prompts: list[str], params: GenParams, progress: Progress = None) -> list[str]:
        torch = self.torch
        outs: list[str | None] = [None] * len(prompts)
        encoded = [self.apply_chat(p) if self.chat else self.encode(p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            seqs = [encoded[i][-(self.max_length - params.max_tokens):] or [self.prefix_token_id] for i in batch]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, s in enumerate(seqs):  # left padding so every row ends at the prompt's end
                ids[r, width - len(s):] = torch.tensor(s)
                mask[r, width - len(s):] = 1
            kwargs: dict[str, Any] = dict(max_new_tokens=params.max_tokens, pad_token_id=pad)
            if params.until:
                kwargs.update(stop_strings=list(params.until), tokenizer=self.tok)
            if params.temperature > 0:
                torch.manual_seed(params.seed)
                kwargs.update(do_sample=True, temperature=params.temperature, top_k=0, top_p=1.0)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.inference_mode():
                gen = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)
            for r, i in enumerate(batch):
                text = self.tok.decode(gen[r, width:], skip_special_tokens=True)
                outs[i] = cut_at_stops(text, params.until)
            if progress:
                progress(len(batch))
        return outs  # type: ignore[return-value]


# ----------------------------------------------------------------------------- OpenAI-compatible endpoint
class OpenAIBackend:
    """Any server speaking the OpenAI API (vLLM, lmsmith serve, llama.cpp, hosted APIs).

    Log-likelihood needs the completions endpoint to echo the prompt with per-token logprobs
    (`echo: true, logprobs: 1`); servers that do not are reported as such, never silently scored.
    """

    def __init__(self, endpoint: str, model: str, api_key: str | None = None, chat: bool = True,
                 timeout: float = 120.0, concurrency: int = 4, max_retries: int = 4):
        from lmsmith.endpoint import EndpointClient

        self.client = EndpointClient(endpoint, api_key, concurrency=max(1, concurrency), timeout=timeout,
                                     max_retries=max_retries)
        self.base = self.client.base
        self.model, self.chat, self.concurrency = model, chat, max(1, concurrency)
        self.info = ModelInfo(name=f"{model} @ {endpoint}")
        self._ll_checked: bool | None = None

    @property
    def supports_loglikelihood(self) -> bool:
        return self._ll_checked is not False

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Retries on 429/5xx/dropped connections (honouring Retry-After) and a total deadline per attempt
        live in the shared client (`lmsmith.endpoint`)."""
        return self.client.post(path, body)

    def count_tokens(self, text: str) -> int:
        return max(1, round(len(text.encode()) / 4))  # the API hides its tokenizer: ~4 bytes a token

    def complete(self, prompt: str, params: GenParams, chat: bool | None = None) -> str:
        chat = self.chat if chat is None else chat
        body: dict[str, Any] = {"model": self.model, "max_tokens": params.max_tokens, "temperature": params.temperature,
                                "seed": params.seed}
        if params.until:
            body["stop"] = params.until[:4]
        if chat:
            data = self._post("/chat/completions", {**body, "messages": [{"role": "user", "content": prompt}]})
            try:
                text = data["choices"][0]["message"]["content"] or ""
            except (KeyError, IndexError, TypeError):
                raise LmsmithError(f"unexpected chat completion from {self.base}: {str(data)[:160]}") from None
        else:
            data = self._post("/completions", {**body, "prompt": prompt})
            try:
                text = data["choices"][0]["text"]
            except (KeyError, IndexError, TypeError):
                raise LmsmithError(f"unexpected completion from {self.base}: {str(data)[:160]}") from None
        return cut_at_stops(text, params.until)

    def generate(self, prompts: list[str], params: GenParams, progress: Progress = None) -> list[str]:
        def one(p: str) -> str:
            text = self.complete(p, params)
            if progress:
                progress(1)
            return text

        return self.client.map(one, prompts)

    def _prompt_logprobs(self, text: str) -> tuple[list[float | None], list[int]]:
        data = self._post("/completions", {"model": self.model, "prompt": text, "max_tokens": 1, "temperature": 0,
                                           "echo": True, "logprobs": 1})
        lp = ((data.get("choices") or [{}])[0] or {}).get("logprobs") or {}
        if not lp.get("token_logprobs") or not lp.get("text_offset"):
            self._ll_checked = False
            raise LmsmithError(
                f"the endpoint {self.base} does not return prompt logprobs, so log-likelihood tasks "
                "(multiple_choice, perplexity) cannot run against it",
                "use a local model (lmsmith eval MODEL) or a server supporting `echo` + `logprobs` on /v1/completions, e.g. vLLM")
        self._ll_checked = True
        return lp["token_logprobs"], lp["text_offset"]

    def loglikelihood(self, requests: list[tuple[str, str]], progress: Progress = None) -> list[tuple[float, bool]]:
        out = []
        for context, continuation in requests:
            whole = context + continuation
            logprobs, offsets = self._prompt_logprobs(whole)
            ll = 0.0
            for lp, off in zip(logprobs, offsets):
                if len(context) <= off < len(whole):
                    ll += lp if lp is not None else -math.inf
            out.append((ll, False))
            if progress:
                progress(1)
        return out

    def loglikelihood_rolling(self, texts: list[str], progress: Progress = None) -> list[tuple[float, int]]:
        out = []
        for text in texts:
            logprobs, offsets = self._prompt_logprobs(text)
            scored = [lp for lp, off in zip(logprobs, offsets) if lp is not None and off < len(text)]
            out.append((float(sum(scored)), len(scored)))
            if progress:
                progress(1)
        return out


def make_backend(model: str | None = None, endpoint: str | None = None, api_model: str | None = None,
                 api_key: str | None = None, dtype: str = "auto", device: str | None = None, batch_size: int = 16,
                 chat: bool | None = False, endpoint_options: dict[str, Any] | None = None) -> Backend:
    """`chat=None`: chat format where the model has one (an endpoint: always)."""
    if endpoint:
        if not api_model:
            raise LmsmithError("--endpoint needs --api-model NAME", "the model name the server serves")
        return OpenAIBackend(endpoint, api_model, api_key=api_key, chat=chat is not False, **(endpoint_options or {}))
    if not model:
        raise LmsmithError("no model given", "pass a model ref, or --endpoint URL --api-model NAME")
    return HFBackend(model, dtype=dtype, device=device, batch_size=batch_size, chat=chat)
