"""`lmsmith generate …` (and, with the engine, `lmsmith serve …`)."""

from __future__ import annotations

import argparse
import sys

from lmsmith.config import NONNEGATIVE_FLOAT, NONNEGATIVE_INT, PORT, POSITIVE_FLOAT, POSITIVE_INT, number


def cmd_chat(args: argparse.Namespace) -> int:
    from lmsmith.serve.chat import ChatSettings, repl
    from lmsmith.serve.engine import Engine

    engine = Engine(args.ref, dtype=args.dtype, max_num_seqs=1)
    try:
        if not engine.tokenizer.chat_template:
            from lmsmith.errors import LmsmithError

            raise LmsmithError(f"{args.ref} has no chat template", "use `lmsmith generate` for plain completion")
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        repl(engine, ChatSettings(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                                  seed=args.seed, system=args.system))
    finally:
        engine.close()
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from lmsmith.serve.generate import generate_text, stream_to_stdout

    if args.prompt is None:  # `echo text | lmsmith generate MODEL`
        if sys.stdin.isatty():
            from lmsmith.errors import LmsmithError

            raise LmsmithError("no prompt given", "pass --prompt TEXT, or pipe the prompt on stdin")
        args.prompt = sys.stdin.read()
        if not args.prompt.strip():
            from lmsmith.errors import LmsmithError

            raise LmsmithError("the prompt on stdin is empty", "pass --prompt TEXT")

    schema = None
    if args.json_schema:
        import json
        from pathlib import Path

        src = Path(args.json_schema)
        if src.is_dir():
            from lmsmith.errors import LmsmithError

            raise LmsmithError(f"--json-schema {src} is a directory", "pass a JSON object or a path to a .json file")
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
    p.add_argument("--prompt", help="the prompt (default: read from stdin)")
    p.add_argument("--chat", action="store_true", help="apply the model's chat template")
    p.add_argument("--system", help="system message (with --chat)")
    p.add_argument("--max-tokens", type=POSITIVE_INT, default=256)
    p.add_argument("--temperature", type=NONNEGATIVE_FLOAT, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=number(float, 0, 1, lo_open=True), default=1.0)
    p.add_argument("--top-k", type=NONNEGATIVE_INT, default=0, help="0 = off")
    p.add_argument("--stop", action="append", help="stop string (repeatable); it is not printed")
    p.add_argument("--json-schema", help="constrain the output to this JSON schema (inline JSON or a .json file)")
    p.add_argument("--seed", type=int)
    p.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bfloat16 on GPU), bfloat16, float32, float16")
    p.add_argument("--tensor-parallel-size", "--tp", type=POSITIVE_INT, default=1,
                   help="shard the model over this many GPUs of this node (default: 1)")
    p.set_defaults(func=cmd_generate)

    c = sub.add_parser("chat", help="talk to a model in the terminal (streamed; /reset, /system, /exit)")
    c.add_argument("ref", help="model reference: NAME, NAME@VERSION, NAME@ALIAS or a path")
    c.add_argument("--system", help="system prompt")
    c.add_argument("--max-tokens", type=POSITIVE_INT, default=512, help="longest answer")
    c.add_argument("--temperature", type=NONNEGATIVE_FLOAT, default=0.7, help="0 = greedy")
    c.add_argument("--top-p", type=number(float, 0, 1, lo_open=True), default=0.95)
    c.add_argument("--seed", type=int)
    c.add_argument("--dtype", default="auto")
    c.set_defaults(func=cmd_chat)
    register_serve(sub)
    register_bench(sub)


# --------------------------------------------------------------------------- lmsmith serve / lmsmith bench serve
def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from lmsmith.serve.guarding import GuardSettings
    from lmsmith.serve.request_log import RequestLog, RequestLogConfig
    from lmsmith.serve.server import serve

    api_key = args.api_key or os.environ.get("LMSMITH_API_KEY")
    setup = None
    if args.ui:  # the web UI at /ui (an entry point may wire the top floor onto the server)
        from lmsmith.ui.app import mount_ui

        def setup(app):
            return mount_ui(app, api_key)
    guard = GuardSettings.parse(args.guard, args.guard_action, args.guard_threshold, args.guard_model)
    request_log = None
    if args.log_requests:
        request_log = RequestLog(RequestLogConfig(args.log_requests, sample=args.log_sample, pii=args.log_pii,
                                                  max_file_mb=args.log_max_file_mb, max_total_mb=args.log_max_total_mb))
    serve(args.ref, host=args.host, port=args.port, api_key=api_key, setup=setup, request_log=request_log,
          served_model_name=args.served_model_name, max_queue=args.max_queue,
          request_timeout=args.request_timeout or None, drain_timeout=args.drain_timeout, log_level=args.log_level,
          prompt_special_tokens=args.prompt_special_tokens, max_request_bytes=args.max_request_bytes,
          guard=guard, embedders=args.embedder, engine_process=args.engine_process,
          stream_interval=args.stream_interval, **engine_kwargs(args))
    return 0


ENGINE_ARGS = ("dtype", "device", "max_num_seqs", "max_num_batched_tokens", "block_size", "num_kv_blocks",
               "max_model_len", "tensor_parallel_size")


def add_engine_args(p: argparse.ArgumentParser, max_num_seqs: int, max_num_batched_tokens: int) -> None:
    """The engine's options, the same for `lmsmith serve` and `lmsmith bench offline`."""
    p.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bfloat16 on GPU), bfloat16, float32, float16")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--max-num-seqs", type=POSITIVE_INT, default=max_num_seqs, help="sequences in the running batch")
    p.add_argument("--max-num-batched-tokens", type=POSITIVE_INT, default=max_num_batched_tokens,
                   help="token budget per engine step")
    p.add_argument("--block-size", type=POSITIVE_INT, default=16, help="KV-cache block size in tokens")
    p.add_argument("--num-kv-blocks", type=POSITIVE_INT, help="KV-cache blocks (default: sized from free memory)")
    p.add_argument("--max-model-len", type=POSITIVE_INT, help="context length (default: the model's)")
    p.add_argument("--tensor-parallel-size", "--tp", type=POSITIVE_INT, default=1,
                   help="shard the model over this many GPUs of this node (Megatron-style, NCCL; default: 1)")


def engine_kwargs(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in ENGINE_ARGS}


def register_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP: the OpenAI API and KServe V2 (Open Inference Protocol)")
    p.add_argument("ref", help="model reference: NAME, NAME@VERSION, NAME@ALIAS or a path")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all interfaces)")
    p.add_argument("--port", type=PORT, default=8000)
    p.add_argument("--api-key", help="require `Authorization: Bearer KEY` on /v1 (default: $LMSMITH_API_KEY, else none)")
    p.add_argument("--served-model-name", help="the name clients pass as `model` (default: REF)")
    p.add_argument("--max-queue", type=POSITIVE_INT, default=256, help="requests waiting beyond the batch before 429s")
    p.add_argument("--request-timeout", type=NONNEGATIVE_FLOAT, default=600.0, help="seconds per request (0 = none)")
    p.add_argument("--drain-timeout", type=NONNEGATIVE_FLOAT, default=30.0, help="seconds to finish in-flight requests on SIGTERM")
    p.add_argument("--prompt-special-tokens", action="store_true",
                   help="parse control tokens spelled in /v1/completions prompt text (default: plain text; "
                        "chat messages are always plain text)")
    p.add_argument("--max-request-bytes", type=NONNEGATIVE_INT, default=8 * 1024 * 1024,
                   help="larger request bodies get 413 before parsing (default: 8 MiB; 0 = no limit)")
    p.add_argument("--embedder", action="append", help="embedding model(s) for /v1/embeddings (repeatable; "
                                                       "default: all-minilm-l6-v2, loaded on first use)")
    add_engine_args(p, max_num_seqs=64, max_num_batched_tokens=2048)
    p.add_argument("--engine-process", action=argparse.BooleanOptionalAction, default=None,
                   help="run the engine loop in its own process, so HTTP parsing and streaming never wait for it "
                        "(default: on for one GPU, off on CPU and with tensor parallelism; "
                        "bench/results/serve_load_notes.md)")
    p.add_argument("--stream-interval", type=POSITIVE_INT, default=None,
                   help="after a stream's first token, send a chunk per this many tokens (and at the end): fewer "
                        "writes under heavy load, coarser streaming (default: LMSMITH_STREAM_INTERVAL or 1, every "
                        "token, as vLLM)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--ui", action=argparse.BooleanOptionalAction, default=True,
                   help="the web UI at /ui: playground, models, runs, monitor (default: on)")
    p.add_argument("--guard", metavar="STAGES", help="prompt-injection guard on `input`, secret/PII/leak guard on "
                                                      "`output`, or `input,output` (see `lmsmith guard`)")
    p.add_argument("--guard-action", default="block", choices=["block", "flag"],
                   help="block: flagged requests get a 400 (code `guard`); flag: count them (outputs are redacted)")
    p.add_argument("--guard-threshold", type=number(float, 0, 1), help="input guard threshold (default: the model's)")
    p.add_argument("--guard-model", help="input guard model directory (default: the shipped one)")
    p.add_argument("--log-requests", metavar="DIR", help="append requests (prompt, completion, tokens, latency, "
                   "version, status) to SQLite segments in DIR, for `lmsmith monitor`")
    p.add_argument("--log-sample", type=number(float, 0, 1, lo_open=True), default=1.0, help="share of requests to log (default: 1 = all)")
    p.add_argument("--log-pii", default="scrub", choices=["scrub", "keep", "drop"],
                   help="scrub e-mails/phones/IPs (default), keep text as is, or drop text (metadata only)")
    p.add_argument("--log-max-file-mb", type=POSITIVE_FLOAT, default=64.0, help="start a new log segment past this size")
    p.add_argument("--log-max-total-mb", type=POSITIVE_FLOAT, default=1024.0, help="delete the oldest segments past this")
    p.set_defaults(func=cmd_serve)


def cmd_bench_serve(args: argparse.Namespace) -> int:
    import json as _json

    from lmsmith.serve.bench import bench_serve, print_summary

    summary = bench_serve(args.url, requests=args.requests, concurrency=args.concurrency, rate=args.rate,
                          prompt_len=args.prompt_len, output_len=args.output_len, model=args.model,
                          api_key=args.api_key, seed=args.seed, progress=not args.json, dataset=args.dataset,
                          token_ids=args.token_ids, token_id_max=args.token_id_max, workers=args.workers)
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
    s.add_argument("--requests", type=POSITIVE_INT, default=64, help="requests to send")
    s.add_argument("--concurrency", type=POSITIVE_INT, default=8, help="requests in flight at most")
    s.add_argument("--workers", type=POSITIVE_INT, default=1,
                   help="client processes sharing the streams (one client parsing ~20k streamed chunks a second "
                        "delays its own timestamps; same requests and prompts)")
    s.add_argument("--rate", type=POSITIVE_FLOAT, help="Poisson arrival rate in requests/s (default: as fast as concurrency allows)")
    s.add_argument("--prompt-len", type=POSITIVE_INT, default=128, help="prompt length in tokens (about: synthetic text calibrated on the server)")
    s.add_argument("--output-len", type=POSITIVE_INT, default=64, help="tokens generated per request (EOS ignored)")
    s.add_argument("--model", help="model name (default: the server's first /v1/models entry)")
    s.add_argument("--api-key", help="bearer token, if the server needs one")
    s.add_argument("--dataset", default="fixed", choices=["fixed", "sharegpt-mix"],
                   help="fixed lengths, or a seeded ShareGPT-like log-normal length mix (medians --prompt-len/--output-len)")
    s.add_argument("--token-ids", action="store_true",
                   help="send prompts as random token-id arrays (exact lengths; for random-init models)")
    s.add_argument("--token-id-max", type=POSITIVE_INT, default=32000, help="with --token-ids: ids are drawn below this")
    s.add_argument("--seed", type=int, default=0, help="seed of the synthetic prompts and of the length mix")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=cmd_bench_serve)
    o = bsub.add_parser("offline", help="the engine's throughput on a fixed request set (no server): tok/s, TTFT")
    o.add_argument("model", help="model ref or path")
    o.add_argument("--requests", type=POSITIVE_INT, default=256, help="requests, all submitted at once")
    o.add_argument("--prompt-len", type=POSITIVE_INT, default=128, help="prompt tokens (random token ids; the mix's median)")
    o.add_argument("--output-len", type=POSITIVE_INT, default=256, help="tokens generated per request, EOS ignored (the mix's median)")
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
