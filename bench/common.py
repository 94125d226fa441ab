"""Code several benchmarks share: paths, random-init models of real shapes, prompts, timed engine runs,
and the multilingual sample texts of the test suite (read as data) with the corpora built from them."""

from __future__ import annotations

import json
import random
import re
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SAMPLE_TEXTS = ROOT / "tests" / "data" / "texts"  # cs, pl, sl, sk, en paragraphs written for the test suite
TRAFFIC = ROOT / "src" / "lmsmith" / "assets" / "monitor" / "traffic.jsonl"  # the shipped request traffic

LLAMA_ROPE = dict(rope_theta=500000.0, max_position_embeddings=131072, rms_norm_eps=1e-5)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=512, tie_word_embeddings=False, max_position_embeddings=4096)


# ----------------------------------------------------------------------------- models of a real shape
def model_config(preset: str):
    """A Llama-architecture HF config of a planner shape (`lmsmith plan` presets) or `tiny`."""
    from transformers import AutoConfig

    from lmsmith.ops.planner import SHAPES

    if preset == "tiny":
        spec = dict(TINY)
    elif preset in SHAPES:
        spec = {**LLAMA_ROPE, **SHAPES[preset]}
    else:
        raise SystemExit(f"unknown preset {preset}; choose tiny or one of {', '.join(SHAPES)}")
    spec.pop("attention_bias", None)
    cfg = AutoConfig.for_model("llama", **spec)
    cfg.use_cache = False
    return cfg


def build_model(cfg, device: torch.device, meta: bool, attn: str = "sdpa"):
    """A random-init transformers model of `cfg` in float32 (on the meta device when `meta`)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device("meta" if meta else device):
        return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation=attn)


def build_model_dir(shape: str, dest: Path, dtype: torch.dtype) -> Path:
    """A random-init Llama of a planner shape saved as a model directory (with a word-level tokenizer), on CUDA."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from lmsmith.ops.planner import SHAPES

    spec = dict(SHAPES[shape])
    cfg = AutoConfig.for_model("llama", **spec, max_position_embeddings=8192, rope_theta=500000.0, bos_token_id=1,
                               eos_token_id=2, rms_norm_eps=1e-5)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.save_pretrained(dest)
    GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2).save_pretrained(dest)
    write_wordlevel_tokenizer(dest, cfg.vocab_size)
    del model
    torch.cuda.empty_cache()
    return dest


def write_wordlevel_tokenizer(dest: Path, vocab: int) -> None:
    """A word-level tokenizer covering the vocabulary, so the engine has one to detokenize with."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="t2", bos_token="t1", pad_token="t2",
                            unk_token="t0").save_pretrained(dest)


def quantized_copy(src: Path, dest: Path, method: str, group_size: int | None, lm_head: str | None = None) -> Path:
    """`src` quantized into `dest` (lm_head too when `lm_head` names its method), with the tokenizer files beside
    the weights, so the copy loads as a model of its own."""
    from lmsmith.compress.quantize import quantize_to_dir

    quantize_to_dir(Path(src), Path(dest), method, group_size, include_lm_head=lm_head is not None,
                    lm_head_method=lm_head)
    for f in Path(src).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template", "generation_config")) \
                and not (Path(dest) / f.name).exists():
            (Path(dest) / f.name).write_bytes(f.read_bytes())
    return Path(dest)


def prompts(n: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """`n` random prompts of `length` token ids (ids below 10 are left to special tokens)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, vocab, (n, length), generator=g).tolist()


# ----------------------------------------------------------------------------- timed engine runs
def ours(model_dir: Path, batches: list[list[list[int]]], out_len: int, compare_sync: bool = False,
         **engine_kw) -> dict[str, float]:
    """Times one `LLM.generate` per batch (after a warm-up on other prompts); the median over batches.
    `compare_sync`: time again with the overlapped decode loop off (keys prefixed `sync_`)."""
    from lmsmith.serve import LLM, SamplingParams

    llm = LLM(str(model_dir), dtype="bfloat16", **engine_kw)
    sp = SamplingParams(max_tokens=out_len, temperature=0.0, ignore_eos=True)
    warm = prompts(4, len(batches[0][0]), llm.engine.vocab_size, seed=123)
    llm.generate(warm[:1], sp, use_tqdm=False)  # warm-up (kernels compiled, graphs captured)
    llm.generate(warm[1:], sp, use_tqdm=False)
    # the workload's own shapes once (prefill batch, graph buckets), two tokens each, on other prompts
    llm.generate(prompts(len(batches[0]), len(batches[0][0]), llm.engine.vocab_size, seed=7),
                 SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True), use_tqdm=False)
    graphs = getattr(llm.engine.runner, "graphs", None)
    result = {"bs1_graph": getattr(graphs, "bs1_choice", None), "bs1_graph_ms": getattr(graphs, "bs1_timings", None),
              "bs1_tiles_ms": getattr(graphs, "tile_timings", None)}
    for mode in ("async", "sync") if compare_sync else ("async",):
        llm.engine.async_scheduling = mode == "async" and llm.engine.async_scheduling
        rates, ttfts = [], []
        for batch in batches:
            llm.engine.blocks.reset_prefix_cache()  # every timed run computes its prompts
            t = time.perf_counter()
            res = llm.generate(batch, sp, use_tqdm=False)
            dt = time.perf_counter() - t
            rates.append(sum(len(o.token_ids) for r in res for o in r.outputs) / dt)
            ttfts += [r.ttft for r in res if getattr(r, "ttft", None) is not None]
        prefix = "" if mode == "async" else "sync_"
        result.update({prefix + "tok_s": statistics.median(rates), prefix + "runs_tok_s": [round(r, 1) for r in rates],
                       prefix + "ttft_p50_ms": 1000 * statistics.median(ttfts) if ttfts else float("nan")})
    return result


# ----------------------------------------------------------------------------- sample texts
def paragraphs(lang: str) -> list[str]:
    """The test suite's paragraphs of one language (cs, pl, sl, sk, en)."""
    return [p.strip() for p in (SAMPLE_TEXTS / f"{lang}.txt").read_text(encoding="utf-8").split("\n\n") if p.strip()]


def sentences(lang: str) -> list[str]:
    """The test suite's sentences of one language, in order."""
    return [s for p in paragraphs(lang) for s in re.split(r"(?<=[.!?])\s+", p) if s]


def czech_corpus(target_chars: int = 300_000, seed: int = 0) -> str:
    """Documents of 3-7 sentences drawn from the Czech training paragraphs (never the held-out ones)."""
    pool = sentences("cs")
    rng = random.Random(seed)
    docs, total = [], 0
    while total < target_chars:
        doc = " ".join(rng.sample(pool, rng.randint(3, 7)))
        docs.append(doc)
        total += len(doc) + 2
    return "\n\n".join(docs) + "\n"


def write_dirty_corpus(path: Path, size_mb: float, seed: int = 0) -> int:
    """A JSONL corpus of about `size_mb` MB for `lmsmith data clean`: documents of recombined cs/pl/sl/en/sk
    sentences with ~5% exact and ~5% near duplicates, ~3% junk and ~3% with PII. Returns the document count."""
    rng = random.Random(seed)
    pools = {lang: sentences(lang) for lang in ("cs", "pl", "sl", "en", "sk")}
    langs, weights = ["cs", "pl", "sl", "en", "sk"], [5, 2, 2, 2, 1]
    target, written, n = size_mb * 1e6, 0, 0
    recent: list[str] = []
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            r = rng.random()
            if r < 0.05 and recent:
                text = rng.choice(recent)  # exact duplicate
            elif r < 0.10 and recent:
                words = rng.choice(recent).split()
                words[rng.randrange(len(words))] = "změna"  # near duplicate
                text = " ".join(words)
            elif r < 0.13:
                text = " ".join(rng.choice(["akce", "sleva", "zdarma", "boty", "top", "nej"]) for _ in range(300))
            else:
                lang = rng.choices(langs, weights)[0]
                pool = pools[lang]
                chosen = rng.sample(pool, min(len(pool), rng.randint(10, 30)))
                text = "\n\n".join(" ".join(chosen[i:i + 5]) for i in range(0, len(chosen), 5))
                if r < 0.16:
                    text += f" Kontakt: info{n}@example.com, tel. +420 601 {n % 1000:03d} 567, server 10.0.{n % 256}.1."
                recent = (recent + [text])[-200:]
            line = json.dumps({"id": f"doc{n}", "text": text}, ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode())
            n += 1
    return n
