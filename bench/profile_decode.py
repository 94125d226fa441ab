"""Where a decode step's time goes: torch profiler over engine steps (batch 1 and a large batch), plus a
cProfile of the host side of the offline run. Writes the tables as text files.

    python bench/profile_decode.py --out-dir /tmp/prof
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from serve_gpu import build_model_dir, prompts  # noqa: E402

from lmsmith.ops.planner import SHAPES  # noqa: E402


def profile_steps(engine, batch, out_len, path: Path, steps: int = 20) -> None:
    from torch.profiler import ProfilerActivity, profile

    from lmsmith.serve import SamplingParams

    sp = SamplingParams(max_tokens=out_len, temperature=0.0, ignore_eos=True)
    for i, p in enumerate(batch):
        engine.add_request(f"p{path.stem}{i}", p, sp)
    for _ in range(8):  # prefill and settle into decode
        engine.step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            engine.step()
        torch.cuda.synchronize()
    text = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
    text += "\n\n" + prof.key_averages().table(sort_by="cpu_time_total", row_limit=25)
    path.write_text(text)
    print(path.name, "\n", text[:3000], flush=True)
    while engine.has_unfinished():
        engine.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="llama-3.2-1b", choices=sorted(SHAPES))
    ap.add_argument("--out-dir", default=".")
    args = ap.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from lmsmith.serve import LLM, SamplingParams
    from lmsmith.serve.engine import Engine

    with tempfile.TemporaryDirectory() as tmp:
        d = build_model_dir(args.shape, Path(tmp) / "model", torch.bfloat16)
        batch = prompts(256, 128, SHAPES[args.shape]["vocab_size"])
        engine = Engine(str(d), dtype="bfloat16", max_num_seqs=256, max_num_batched_tokens=8192)
        profile_steps(engine, batch[:1], 64, out / "prof_bs1.txt")
        profile_steps(engine, batch, 64, out / "prof_bs256.txt")
        del engine
        llm = LLM(str(d), dtype="bfloat16", max_num_seqs=256, max_num_batched_tokens=8192)
        sp = SamplingParams(max_tokens=256, temperature=0.0, ignore_eos=True)
        llm.generate(batch[:4], sp, use_tqdm=False)
        pr = cProfile.Profile()
        pr.enable()
        llm.generate(batch, sp, use_tqdm=False)
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(30)
        (out / "cprofile_offline256.txt").write_text(s.getvalue())
        print(s.getvalue()[:6000])


if __name__ == "__main__":
    main()
