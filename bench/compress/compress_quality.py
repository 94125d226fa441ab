"""Quality, size and speed of every compression method on the default model, in one table.

Variants (int4 at group size 64, since the default model's weights sit on a 4-bit grid of group 32, where
round-to-nearest is lossless and comparisons measure nothing): fp, RTN / GPTQ / AWQ at 4 and 3 bits,
magnitude / Wanda / SparseGPT at 50% and 2:4, low-rank (SVD and ASVD) at rank ratio 0.5. For each:
perplexity on the shipped English and Czech held-out texts, weights on disk, and batch-1 greedy decode
speed through our engine on this machine. `--llmcompressor PYTHON` also runs llm-compressor's GPTQ and
Wanda (in another interpreter that has it installed) with the same calibration windows and scores them
the same way. `--gpu` instead measures GPU decode speed and PyTorch's semi-structured 2:4 kernels.

    python -m bench.compress.compress_quality --samples 16 --seq-len 256
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench._result import make_result, write_result
from bench.common import RESULTS, ROOT

ASSETS = ROOT / "src" / "lmsmith" / "assets" / "compress"
VARIANTS = ["fp", "rtn4", "gptq4", "awq4", "magnitude50", "wanda50", "sparsegpt50", "rtn3", "gptq3", "awq3",
            "magnitude24", "wanda24", "sparsegpt24", "svd50", "asvd50"]


def build(variant: str, src: Path, out: Path, cal: str, samples: int, seq_len: int, group: int) -> Path:
    from lmsmith.compress.lowrank import LowRankConfig, lowrank_to_dir
    from lmsmith.compress.prune import PruneConfig, prune_to_dir
    from lmsmith.compress.ptq import PTQConfig, calibrated_quantize_to_dir

    if variant == "fp":
        return src
    for alg in ("rtn", "gptq", "awq"):
        if variant.startswith(alg):
            calibrated_quantize_to_dir(src, out, PTQConfig(algorithm=alg, bits=int(variant[-1]), group_size=group,
                                                           calibration=cal, samples=samples, seq_len=seq_len))
            return out
    for method in ("magnitude", "wanda", "sparsegpt"):
        if variant.startswith(method):
            pattern = "2:4" if variant.endswith("24") else None
            prune_to_dir(src, out, PruneConfig(method=method, sparsity=0.5, pattern=pattern, calibration=cal,
                                               samples=samples, seq_len=seq_len))
            return out
    method = "asvd" if variant.startswith("asvd") else "svd"
    lowrank_to_dir(src, out, LowRankConfig(rank_ratio=0.5, method=method, calibration=cal, samples=samples,
                                           seq_len=seq_len))
    return out


def engine_tok_s(path: Path, device: str, tokens: int) -> float:
    """Batch-1 greedy decode tokens/s through our engine (prefill excluded)."""
    from lmsmith.serve.llm import LLM
    from lmsmith.serve.sampling_params import SamplingParams

    dtype = "float32" if device == "cpu" else "bfloat16"
    with LLM(str(path), dtype=dtype, device=device) as llm:
        params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
        llm.generate(["The history of the city"], SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
        c = llm.generate(["The history of the city"], params)[0]
    t = c.token_times
    return (len(t) - 1) / (t[-1] - t[0])


def measure(path: Path, texts: dict[str, str], device: str, tokens: int) -> dict[str, float]:
    from lmsmith.compress.perplexity import perplexity
    from lmsmith.models import load_model, load_tokenizer

    tok = load_tokenizer(str(path))
    model = load_model(str(path), dtype="float32", device="cpu")
    row = {f"ppl_{lang}": perplexity(model, tok, text, max_length=512).ppl for lang, text in texts.items()}
    del model
    row["size_mb"] = sum(p.stat().st_size for p in path.glob("*.safetensors")) / 2**20
    if tokens:
        row[f"{device}_tok_s"] = engine_tok_s(path, device, tokens)
    return row


def random_model(config_dir: Path, out: Path) -> str:
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config_dir), dtype=torch.bfloat16)
    model.save_pretrained(out)
    for f in config_dir.iterdir():
        if f.name != "config.json" and not f.name.endswith((".safetensors", ".index.json")):
            shutil.copy2(f, out / f.name)
    return str(out)


def run_llmcompressor(python: str, src: Path, out: Path, scheme: str, cal: str, samples: int, seq_len: int,
                      group: int) -> Path:
    """llm-compressor in its own interpreter; the output is loaded back as a dense HF model (dequantized)."""
    subprocess.run([python, "-m", "bench.compress._llmcompressor_run", str(Path(src).resolve()), str(Path(out).resolve()),
                    scheme, cal, str(samples), str(seq_len), str(group)], check=True, cwd=ROOT)
    return out


def semi_structured(device: str) -> dict[str, float]:
    """fp16 dense vs PyTorch semi-structured 2:4 matmul (microseconds) on SmolLM2 and Llama-3-8B shapes."""
    from torch.sparse import to_sparse_semi_structured

    out: dict[str, float] = {}
    shapes = {"smollm2_mlp_up": (1536, 576), "smollm2_mlp_down": (576, 1536), "llama8b_mlp_up": (14336, 4096),
              "llama8b_mlp_down": (4096, 14336), "llama8b_qkv": (6144, 4096)}
    for name, (n, k) in shapes.items():
        w = torch.randn(n, k, device=device, dtype=torch.float16)
        mask = torch.tensor([0, 0, 1, 1], device=device, dtype=torch.bool).tile(n, k // 4)
        w = w * mask
        try:
            ws = to_sparse_semi_structured(w)
        except Exception as e:  # noqa: BLE001
            out[f"{name}_error"] = 1.0
            print(f"semi-structured unavailable for {name}: {e}", file=sys.stderr)
            continue
        for m in (32, 256, 2048, 8192):  # the sparse kernels need M >= 32: decode batches are padded to it
            x = torch.randn(m, k, device=device, dtype=torch.float16)
            for label, fn in (("dense", lambda: torch.nn.functional.linear(x, w)),
                              ("sparse24", lambda: torch.nn.functional.linear(x, ws))):
                for _ in range(10):
                    fn()
                torch.cuda.synchronize()
                t = time.perf_counter()
                for _ in range(100):
                    fn()
                torch.cuda.synchronize()
                out[f"{name}_m{m}_{label}_us"] = (time.perf_counter() - t) / 100 * 1e6
            out[f"{name}_m{m}_speedup"] = out[f"{name}_m{m}_dense_us"] / out[f"{name}_m{m}_sparse24_us"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model dir (default: pull the default model)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=32, help="decoded tokens per speed measurement (0 = skip)")
    ap.add_argument("--llmcompressor", default=None, metavar="PYTHON", help="interpreter with llmcompressor installed")
    ap.add_argument("--gpu", action="store_true", help="GPU decode speed of the variants and 2:4 kernel timing")
    ap.add_argument("--random-init", default=None, metavar="DIR",
                    help="config.json + tokenizer of the model: random weights of its shapes (speed runs on the GPU)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.random_init:  # GPU machines cannot fetch weights: real shapes, random values (speed only)
        args.model = random_model(Path(args.random_init), Path(tempfile.mkdtemp()) / "random")
    if args.model is None:
        from lmsmith.registry.importers import pull_default

        args.model = pull_default()[0].path
    src = Path(args.model)
    cal = str(ASSETS / "en_calibration.txt")
    texts = {lang: (ASSETS / f"{lang}_heldout.txt").read_text() for lang in ("en", "cs")}
    device = "cuda" if args.gpu else "cpu"
    metrics: dict[str, float] = {}
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in args.variants.split(","):
            t = time.perf_counter()
            path = build(v, src, Path(tmp) / v, cal, args.samples, args.seq_len, args.group_size)
            built_s = time.perf_counter() - t
            row = measure(path, texts, device, args.tokens) if not args.gpu else \
                {f"{device}_tok_s": engine_tok_s(path, device, args.tokens)}
            row["build_s"] = built_s
            table[v] = row
            metrics.update({f"{v}_{k}": round(x, 4) for k, x in row.items()})
            print(v, json.dumps({k: round(x, 3) for k, x in row.items()}), flush=True)
            save(args, metrics, device, echo=False)  # partial results survive an interrupted run
        if args.llmcompressor and not args.gpu:
            for scheme in ("gptq", "wanda"):
                path = run_llmcompressor(args.llmcompressor, src, Path(tmp) / f"llmc_{scheme}", scheme, cal,
                                         args.samples, args.seq_len, args.group_size)
                row = measure(path, texts, device, 0)
                metrics.update({f"llmcompressor_{scheme}_{k}": round(x, 4) for k, x in row.items() if k.startswith("ppl")})
                print("llmcompressor", scheme, json.dumps(row), flush=True)
    if args.gpu and torch.cuda.is_available():
        metrics.update({f"semi24_{k}": round(x, 3) for k, x in semi_structured("cuda").items()})
    save(args, metrics, device)
    return 0


def save(args: argparse.Namespace, metrics: dict[str, float], device: str, echo: bool = True) -> None:
    name = "compress_quality-gpu" if args.gpu else "compress_quality"
    result = make_result("compress_quality", metrics, device=device,
                         notes=f"int4 group size {args.group_size}; calibration {args.samples}x{args.seq_len} tokens of "
                               "en_calibration.txt; perplexity on en/cs_heldout.txt (512-token windows); decode speed: "
                               "our engine, batch 1, greedy; pruned models are stored and run dense; low-rank "
                               "models run dense in the engine (factors multiplied at load)")
    write_result(args.out or RESULTS / f"{name}.json", result, echo=echo)


if __name__ == "__main__":
    raise SystemExit(main())
