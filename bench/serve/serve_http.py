"""The HTTP server under load: `lmsmith serve` + `lmsmith bench serve` in one process, at several concurrencies.

    python -m bench.serve.serve_http [--model smollm2-135m-instruct] [--concurrency 1 4 16] [--requests 32]
                               [--prompt-len 128] [--output-len 64] [--max-num-seqs 64] [--dtype auto]

Measures what a client sees through the OpenAI API (streaming completions, EOS ignored): request
throughput, output tok/s and TTFT/TPOT/ITL percentiles per concurrency level. Writes
bench/results/serve_http_<device>.json ({"benchmark": "serve_http", ..., "metrics": {"c16_output_tok_per_s": ...}}).
"""

from __future__ import annotations

import argparse
import platform
import sys

import torch

from bench._result import make_result, write_result
from bench.common import RESULTS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model ref (the default model is pulled if missing)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", help="result file (default: bench/results/serve_http_<device>.json)")
    args = ap.parse_args()

    from lmsmith.models import quiet_transformers

    quiet_transformers()
    if args.model == "smollm2-135m-instruct":
        from lmsmith.registry.importers import pull_default

        pull_default()
    from lmsmith.serve.bench import bench_serve
    from lmsmith.serve.engine import Engine
    from lmsmith.serve.server import BackgroundServer, create_app

    engine = Engine(args.model, dtype=args.dtype, max_num_seqs=args.max_num_seqs)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    metrics: dict[str, float | int | None] = {}
    with BackgroundServer(create_app(engine, args.model, max_num_seqs=args.max_num_seqs)) as srv:
        bench_serve(srv.url, requests=4, concurrency=2, prompt_len=16, output_len=4, progress=False)  # warm-up
        for c in args.concurrency:
            s = bench_serve(srv.url, requests=max(args.requests, c), concurrency=c, prompt_len=args.prompt_len,
                            output_len=args.output_len, progress=False)
            for k, v in s.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    metrics[f"c{c}_{k}"] = round(v, 4) if isinstance(v, float) else v
            print(f"concurrency {c}: {s['output_tok_per_s']:.1f} output tok/s, {s['request_throughput']:.2f} req/s, "
                  f"TTFT p50 {s['ttft_p50_ms']:.0f} ms, TPOT p50 {s['tpot_p50_ms']:.1f} ms, errors {s['errors']}")
        st = engine.stats()
        metrics["prefix_cache_hit_rate"] = round(st["prefix_cache_hits"] / st["prefix_cache_queries"], 4) \
            if st.get("prefix_cache_queries") else 0.0
        metrics["preemptions"] = st.get("preemptions", 0)


    import lmsmith

    name = torch.cuda.get_device_name(0) if device == "cuda" else \
        f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"
    result = make_result("serve_http", metrics, device=name, model=args.model, dtype=args.dtype,
                         config={"requests": args.requests, "prompt_len": args.prompt_len, "output_len": args.output_len,
                                 "max_num_seqs": args.max_num_seqs, "concurrency": args.concurrency})
    result["versions"]["lmsmith"] = getattr(lmsmith, "__version__", "0.1.0")
    write_result(args.out or RESULTS / f"serve_http_{device}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
