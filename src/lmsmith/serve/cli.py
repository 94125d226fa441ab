"""`lmsmith generate …` (and, with the engine, `lmsmith serve …`)."""

from __future__ import annotations

import argparse
import sys


def cmd_generate(args: argparse.Namespace) -> int:
    from lmsmith.serve.generate import generate_text, stream_to_stdout

    schema = None
    if args.json_schema:
        import json
        from pathlib import Path

        src = Path(args.json_schema)
        try:
            schema = json.loads(src.read_text() if src.exists() else args.json_schema)
        except json.JSONDecodeError as e:
            from lmsmith.errors import LmsmithError

            raise LmsmithError(f"--json-schema is not valid JSON: {e}", "pass a JSON object or a path to a .json file") from None
    text = generate_text(args.ref, args.prompt, chat=args.chat, system=args.system, max_tokens=args.max_tokens,
                         temperature=args.temperature, seed=args.seed, dtype=args.dtype, on_text=stream_to_stdout,
                         top_p=args.top_p, top_k=args.top_k, stop=args.stop, json_schema=schema,
                         tensor_parallel_size=args.tensor_parallel_size)
    if not text.endswith("\n"):
        sys.stdout.write("\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="complete a prompt (streams tokens as they arrive)")
    p.add_argument("ref", help="model reference: NAME, NAME@VERSION, NAME@ALIAS or a path")
    p.add_argument("--prompt", required=True)
    p.add_argument("--chat", action="store_true", help="apply the model's chat template")
    p.add_argument("--system", help="system message (with --chat)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--stop", action="append", help="stop string (repeatable); it is not printed")
    p.add_argument("--json-schema", help="constrain the output to this JSON schema (inline JSON or a .json file)")
    p.add_argument("--seed", type=int)
    p.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bfloat16 on GPU), bfloat16, float32, float16")
    p.add_argument("--tensor-parallel-size", "--tp", type=int, default=1,
                   help="shard the model over this many GPUs of this node (default: 1)")
    p.set_defaults(func=cmd_generate)
    register_serve(sub)
    register_bench(sub)


# --------------------------------------------------------------------------- lmsmith serve / lmsmith bench serve
def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from lmsmith.serve.server import serve

    serve(args.ref, host=args.host, port=args.port, api_key=args.api_key or os.environ.get("LMSMITH_API_KEY"),
          served_model_name=args.served_model_name, max_queue=args.max_queue,
          request_timeout=args.request_timeout or None, drain_timeout=args.drain_timeout, log_level=args.log_level,
          embedders=args.embedder, **engine_kwargs(args))
    return 0


ENGINE_ARGS = ("dtype", "device", "max_num_seqs", "max_num_batched_tokens", "block_size", "num_kv_blocks",
               "max_model_len", "tensor_parallel_size")


def add_engine_args(p: argparse.ArgumentParser, max_num_seqs: int, max_num_batched_tokens: int) -> None:
    """The engine's options, the same for `lmsmith serve` and `lmsmith bench offline`."""
    p.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bfloat16 on GPU), bfloat16, float32, float16")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--max-num-seqs", type=int, default=max_num_seqs, help="sequences in the running batch")
    p.add_argument("--max-num-batched-tokens", type=int, default=max_num_batched_tokens,
                   help="token budget per engine step")
    p.add_argument("--block-size", type=int, default=16, help="KV-cache block size in tokens")
    p.add_argument("--num-kv-blocks", type=int, help="KV-cache blocks (default: sized from free memory)")
    p.add_argument("--max-model-len", type=int, help="context length (default: the model's)")
    p.add_argument("--tensor-parallel-size", "--tp", type=int, default=1,
                   help="shard the model over this many GPUs of this node (Megatron-style, NCCL; default: 1)")


def engine_kwargs(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in ENGINE_ARGS}


def register_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    p.add_argument("ref", help="model reference: NAME, NAME@VERSION, NAME@ALIAS or a path")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all interfaces)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require `Authorization: Bearer KEY` on /v1 (default: $LMSMITH_API_KEY, else none)")
    p.add_argument("--served-model-name", help="the name clients pass as `model` (default: REF)")
    p.add_argument("--max-queue", type=int, default=256, help="requests waiting beyond the batch before 429s")
    p.add_argument("--request-timeout", type=float, default=600.0, help="seconds per request (0 = none)")
    p.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to finish in-flight requests on SIGTERM")
    p.add_argument("--embedder", action="append", help="embedding model(s) for /v1/embeddings (repeatable; "
                                                       "default: all-minilm-l6-v2, loaded on first use)")
    add_engine_args(p, max_num_seqs=64, max_num_batched_tokens=2048)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)


def cmd_bench_serve(args: argparse.Namespace) -> int:
    import json as _json

    from lmsmith.serve.bench import bench_serve, print_summary

    summary = bench_serve(args.url, requests=args.requests, concurrency=args.concurrency, rate=args.rate,
                          prompt_len=args.prompt_len, output_len=args.output_len, model=args.model,
                          api_key=args.api_key, seed=args.seed, progress=not args.json, dataset=args.dataset,
                          token_ids=args.token_ids, token_id_max=args.token_id_max)
    if args.json:
        sys.stdout.write(_json.dumps(summary, indent=2) + "\n")
    else:
        print_summary(summary)
    return 0 if summary["completed"] else 1


def register_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: `bench offline` (the engine on a fixed request set), `bench serve` (load-test a server)")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCHMARK", parser_class=type(p))
    s = bsub.add_parser("serve", help="load-test a running server: throughput, TTFT/TPOT/ITL percentiles")
    s.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    s.add_argument("--requests", type=int, default=64, help="requests to send")
    s.add_argument("--concurrency", type=int, default=8, help="requests in flight at most")
    s.add_argument("--rate", type=float, help="Poisson arrival rate in requests/s (default: as fast as concurrency allows)")
    s.add_argument("--prompt-len", type=int, default=128, help="prompt length in tokens (about: synthetic text calibrated on the server)")
    s.add_argument("--output-len", type=int, default=64, help="tokens generated per request (EOS ignored)")
    s.add_argument("--model", help="model name (default: the server's first /v1/models entry)")
    s.add_argument("--api-key", help="bearer token, if the server needs one")
    s.add_argument("--dataset", default="fixed", choices=["fixed", "sharegpt-mix"],
                   help="fixed lengths, or a seeded ShareGPT-like log-normal length mix (medians --prompt-len/--output-len)")
    s.add_argument("--token-ids", action="store_true",
                   help="send prompts as random token-id arrays (exact lengths; for random-init models)")
    s.add_argument("--token-id-max", type=int, default=32000, help="with --token-ids: ids are drawn below this")
    s.add_argument("--seed", type=int, default=0, help="seed of the synthetic prompts and of the length mix")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=cmd_bench_serve)
    o = bsub.add_parser("offline", help="the engine's throughput on a fixed request set (no server): tok/s, TTFT")
    o.add_argument("model", help="model ref or path")
    o.add_argument("--requests", type=int, default=256, help="requests, all submitted at once")
    o.add_argument("--prompt-len", type=int, default=128, help="prompt tokens (random token ids; the mix's median)")
    o.add_argument("--output-len", type=int, default=256, help="tokens generated per request, EOS ignored (the mix's median)")
    o.add_argument("--dataset", default="fixed", choices=["fixed", "sharegpt-mix"],
                   help="fixed lengths, or a seeded ShareGPT-like log-normal length mix")
    o.add_argument("--seed", type=int, default=0, help="seed of the prompts and of the length mix")
    add_engine_args(o, max_num_seqs=256, max_num_batched_tokens=8192)
    o.add_argument("--json", action="store_true", help="print the summary as JSON")
    o.set_defaults(func=cmd_bench_offline)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def cmd_bench_offline(args: argparse.Namespace) -> int:
    import json as _json

    from lmsmith.serve.bench_offline import bench_offline, print_offline

    summary = bench_offline(args.model, requests=args.requests, prompt_len=args.prompt_len,
                            output_len=args.output_len, dataset=args.dataset, seed=args.seed,
                            progress=not args.json, **engine_kwargs(args))
    if args.json:
        sys.stdout.write(_json.dumps(summary, indent=2) + "\n")
    else:
        print_offline(summary)
    return 0
