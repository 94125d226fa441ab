"""`lmsmith models …`: the registry from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.table import Table

from lmsmith.config import PORT, POSITIVE_FLOAT, POSITIVE_INT, number
from lmsmith.errors import LmsmithError
from lmsmith.hardware import GPU_MEM_GIB
from lmsmith.progress import console, human_bytes, out, table
from lmsmith.registry import Registry
from lmsmith.registry.views import eval_table, version_dict, version_table


def cmd_create_tiny(args: argparse.Namespace) -> int:
    import tempfile

    from lmsmith.registry import Lineage
    from lmsmith.tiny import ARCH_CONFIGS, build_tiny

    if args.arch not in ARCH_CONFIGS:
        raise LmsmithError(f"unknown architecture '{args.arch}'", f"choose from {', '.join(sorted(ARCH_CONFIGS))}")
    with tempfile.TemporaryDirectory() as tmp:
        d = build_tiny(Path(tmp) / args.name, args.arch, seed=args.seed)
        mv = Registry().register(d, args.name, tags={"tiny": args.arch},
                                 lineage=Lineage(stage="create-tiny", command=getattr(args, "command_line", None)))
    out.print(f"registered {mv.ref}: a random-init {args.arch} model (2 layers, hidden 64) with a byte-level "
              "BPE tokenizer and a chat template, for trying commands in seconds")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from lmsmith.registry.importers import DEFAULT_EMBEDDER, DEFAULT_MODEL, pull_default, pull_default_embedder

    if args.what not in ("default", "default-embedder"):
        raise LmsmithError(f"unknown model to pull: '{args.what}'",
                           f"`pull default` fetches {DEFAULT_MODEL}, `pull default-embedder` {DEFAULT_EMBEDDER}; "
                           "import other models with `lmsmith models import PATH`")
    mv, created = pull_default(dtype=args.dtype) if args.what == "default" else pull_default_embedder()
    console.print(f"{'registered' if created else 'already registered:'} {mv.ref} ({human_bytes(mv.size)}) at {mv.path}")
    out.print(mv.ref)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from lmsmith.registry.importers import import_model

    mv = import_model(args.path, args.name, dtype=args.dtype, command=args.command_line)
    console.print(f"registered {mv.ref}: {human_bytes(mv.size)} ({human_bytes(mv.stored_bytes)} new in the store)")
    out.print(mv.ref)
    return 0


def print_table(t: Table) -> None:
    """Identifiers are never cut to `name…`: a terminal wraps long cells; a pipe or CI log gets the
    table as wide as its content (rich would otherwise assume 80 columns and ellipsize)."""
    for c in t.columns:
        c.overflow = "fold"
    if out.is_terminal:
        out.print(t)
        return
    from rich.console import Console

    wide = out.measure(t, options=out.options.update_width(100_000)).maximum
    Console(file=out.file, width=max(out.width, wide), soft_wrap=True, highlight=False).print(t)


def cmd_list(args: argparse.Namespace) -> int:
    reg = Registry()
    if args.name and args.name not in reg.names():
        reg.get(args.name)  # raises: unknown model, with the closest name
    versions = reg.list(args.name) if args.name else reg.list()
    if args.json:
        print(json.dumps([version_dict(v) for v in versions], indent=2))
        return 0
    if not versions:
        console.print("no models registered yet: try `lmsmith models pull default`")
        return 0
    t = table("ref", "kind", "size", "new bytes", "created", "aliases", "parent", "stage")
    for v in versions:
        t.add_row(v.ref, v.kind, human_bytes(v.size), human_bytes(v.stored_bytes), v.created, ",".join(v.aliases),
                  v.lineage.parent or v.base or "", v.lineage.stage)
    print_table(t)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    mv = Registry().get(args.ref)
    if args.json:
        print(json.dumps(version_dict(mv), indent=2))
        return 0
    out.print(version_table(mv))
    if mv.evals:
        out.print(eval_table(mv))
    return 0


def cmd_alias(args: argparse.Namespace) -> int:
    reg = Registry()
    if args.delete:
        name = args.ref.partition("@")[0]
        reg.remove_alias(name, args.alias)
        out.print(f"removed alias {name}@{args.alias}")
        return 0
    from lmsmith.ops.deploy import move_alias

    mv = move_alias(args.ref, args.alias, reg)  # remembers the previous target for `lmsmith deploy rollback`
    out.print(f"{mv.name}@{args.alias} -> {mv.ref}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    reg = Registry()
    refs = [args.ref] if args.ref else [v.ref for v in reg.list()]
    bad = 0
    for ref in refs:
        problems = reg.verify(ref)
        if problems:
            bad += 1
            for p in problems:
                sys.stderr.write(f"{ref}: {p}\n")
        else:
            out.print(f"{reg.get(ref).ref}: ok")
    if bad:
        raise LmsmithError(f"{bad} version(s) failed verification", "re-import the damaged model(s)")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    reg = Registry()
    before = reg.store_bytes()
    mv = reg.remove(args.ref, force=args.force)
    out.print(f"removed {mv.ref} (freed {human_bytes(before - reg.store_bytes())})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from lmsmith.ops.export import export_model

    dest, what = export_model(args.ref, args.dir, merge=args.merge)
    out.print(f"exported {args.ref} to {dest}: {what}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    d = Registry().gc_details()
    out.print(f"freed {human_bytes(d['freed'])} ({d['blobs']} unreferenced blobs, {d['staging']} leftovers of "
              "interrupted imports)")
    for k in d["kept"]:
        out.print(f"kept {k}")
    return 0


def cmd_runs_list(args: argparse.Namespace) -> int:
    from lmsmith.ops.runs import list_runs

    runs = list_runs()
    if args.json:
        out.print_json(json.dumps(runs, default=str))
        return 0
    if not runs:
        out.print("no runs yet (training and eval runs are kept under $LMSMITH_HOME/runs)")
        return 0
    t = table("run", "kind", "model", "status", "step", "loss", "registered")
    for r in runs:
        loss = r.get("loss")
        t.add_row(r["id"], r.get("kind", ""), str(r.get("model") or ""), r.get("status", ""), str(r.get("step") or ""),
                  f"{loss:.4f}" if isinstance(loss, (int, float)) else "", r.get("registered") or "")
    out.print(t)
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    from lmsmith.ops.runs import describe, find_run

    rec = describe(find_run(args.run))
    if args.json:
        out.print_json(json.dumps(rec, default=str))
    else:
        for k, v in rec.items():
            out.print(f"{k}: {v}")
    return 0


def cmd_runs_rm(args: argparse.Namespace) -> int:
    from lmsmith.ops.runs import remove_run

    out.print(f"removed {remove_run(args.run)}")
    return 0


def cmd_runs_ui(args: argparse.Namespace) -> int:
    import subprocess

    from lmsmith.ops.runs import mlflow_ui_command

    cmd = mlflow_ui_command(args.host, args.port)
    console.print(f"MLflow UI on http://{args.host}:{args.port} (Ctrl-C to stop)")
    return subprocess.call(cmd)


def register(sub: argparse._SubParsersAction) -> None:
    register_models(sub)
    register_runs(sub)
    register_plan(sub)


def register_runs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="training and eval runs: list, show, rm, and MLflow's UI over them")
    rsub = p.add_subparsers(dest="runs_command", metavar="COMMAND", required=True)
    s = rsub.add_parser("list", help="every run under $LMSMITH_HOME/runs, newest first")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_runs_list)
    s = rsub.add_parser("show", help="one run: status, last step and loss, checkpoints, registered version, scores")
    s.add_argument("run", help="run id (or a unique prefix of it), or its directory")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_runs_show)
    s = rsub.add_parser("rm", help="delete a run directory (registered models stay in the registry)")
    s.add_argument("run")
    s.set_defaults(func=cmd_runs_rm)
    s = rsub.add_parser("ui", help="MLflow's UI over lmsmith's tracking store (needs: pip install 'lmsmith[mlflow]')")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=PORT, default=5000)
    s.set_defaults(func=cmd_runs_ui)


def register_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="the model registry: pull, import, list, show, alias, verify, rm, export")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    s = msub.add_parser("pull", help="fetch and register a known model (`default`: SmolLM2-135M-Instruct, "
                                     "`default-embedder`: all-MiniLM-L6-v2)")
    s.add_argument("what", help="`default` or `default-embedder`")
    s.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    s.set_defaults(func=cmd_pull)

    s = msub.add_parser("create-tiny", help="register a tiny random-init model (seconds to train; for trying commands)")
    s.add_argument("name")
    s.add_argument("--arch", default="llama", help="llama, mistral, qwen2 or gemma2")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_create_tiny)

    s = msub.add_parser("import", help="register a HF model directory, a .gguf file, or pickle weights (converted safely)")
    s.add_argument("path")
    s.add_argument("--name", required=True, help="registry name; a new version is added if it exists")
    s.add_argument("--dtype", default=None, help="convert weights (GGUF default: bfloat16; HF dirs keep theirs)")
    s.set_defaults(func=cmd_import)

    s = msub.add_parser("list", help="list registered versions")
    s.add_argument("name", nargs="?", help="only versions of this model")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_list)

    s = msub.add_parser("show", help="metadata, lineage, tags and metrics of a version")
    s.add_argument("ref")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)

    s = msub.add_parser("alias", help="point NAME@ALIAS at a version (moved atomically)")
    s.add_argument("ref", help="NAME@VERSION the alias should point at")
    s.add_argument("alias", help="e.g. production, staging")
    s.add_argument("--delete", action="store_true", help="remove the alias instead")
    s.set_defaults(func=cmd_alias)

    s = msub.add_parser("verify", help="re-hash files of one version (or all) and report damaged ones")
    s.add_argument("ref", nargs="?")
    s.set_defaults(func=cmd_verify)

    s = msub.add_parser("rm", help="remove a version and free blobs nothing else uses")
    s.add_argument("ref")
    s.add_argument("--force", action="store_true", help="remove even if adapters name it as their base")
    s.set_defaults(func=cmd_rm)

    s = msub.add_parser("export", help="write a standalone HF directory that transformers loads (quantized models "
                                       "dequantized; adapters standalone or --merge'd)")
    s.add_argument("ref")
    s.add_argument("dir")
    s.add_argument("--merge", action="store_true", help="an adapter: write base + adapter merged into one model")
    s.set_defaults(func=cmd_export)

    s = msub.add_parser("gc", help="delete unreferenced blobs and leftovers of interrupted imports")
    s.set_defaults(func=cmd_gc)


# usable GiB per GPU as torch sees it (an "80 GB" H100 shows ~79 GiB, of which ~78 are free to a process)


def _default_gpu_mem(args: argparse.Namespace) -> None:
    if args.gpu_mem is None:
        args.gpu_mem = GPU_MEM_GIB[args.gpu]


def cmd_plan_train(args: argparse.Namespace) -> int:
    from lmsmith.ops.planner import load_shape, plan_train

    _default_gpu_mem(args)
    name, shape = load_shape(args.model)
    strategy = "ddp" if args.ddp else ("fsdp" if args.gpus > 1 or args.fsdp else "single")
    master = args.master_weights
    if master is None:
        master = strategy == "single" and not (args.lora or args.qlora)
    plan = plan_train(shape, name=name, gpus=args.gpus, gpu_mem_gib=args.gpu_mem, seq_len=args.seq_len,
                      micro_batch=args.micro_batch, strategy=strategy,
                      lora=args.lora, lora_r=args.lora_r, qlora=args.qlora, ac=args.ac, chunked_loss=args.chunked_loss,
                      mfu=args.mfu, gpu=args.gpu, compile=args.compile, master_weights=master)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        t = Table("part", "GiB per GPU", title=f"{name}: {plan.params / 1e9:.2f}B params, {plan.trainable / 1e6:.1f}M trainable")
        for k, v in plan.parts_gib.items():
            t.add_row(k, f"{v:.2f}")
        t.add_row("[bold]total", f"[bold]{plan.total_gib:.2f} of {args.gpu_mem:g}")
        out.print(t)
        out.print(f"{'fits' if plan.fits else 'DOES NOT FIT'}; expected {plan.tokens_per_s:,.0f} tokens/s "
                  f"on {args.gpus} x {args.gpu} at {args.mfu:.0%} MFU")
        for n in plan.notes:
            out.print(f"note: {n}")
    return 0 if plan.fits else 3


def cmd_plan_serve(args: argparse.Namespace) -> int:
    from lmsmith.ops.planner import load_shape, plan_serve, serve_alternatives

    _default_gpu_mem(args)
    name, shape = load_shape(args.model)
    plan = plan_serve(shape, name=name, gpus=args.gpus, gpu_mem_gib=args.gpu_mem, weight_dtype=args.weight_dtype,
                      kv_dtype=args.kv_dtype, context=args.context, concurrency=args.concurrency, gpu=args.gpu)
    if not plan["fits"]:
        plan["suggestions"] = serve_alternatives(shape, plan)
    if args.json:
        print(json.dumps(plan, indent=2))
        return 0 if plan["fits"] else 3
    t = table("", "", show_header=False,
              title=f"serving {name} on {plan['gpus']} x {plan['gpu']} ({plan['gpu_mem_gib']:g} GiB each, "
                    f"{plan['usable_gib']:g} usable)")
    rows = [("weights", f"{plan['weights_gib']:.2f} GiB per GPU ({plan['weight_dtype']})"),
            ("KV cache", f"{plan['kv_cache_gib']:.2f} GiB per GPU ({plan['kv_dtype']}, {plan['context']:,} tokens x "
                         f"{plan['concurrency']} sequences, {plan['kv_bytes_per_token']:,.0f} bytes per token)"),
            ("total", f"{plan['total_gib']:.2f} GiB per GPU of {plan['usable_gib']:g}"),
            ("KV tokens that fit", f"{plan['max_kv_tokens']:,} ({plan['max_full_context_sequences']} full-context sequences)"),
            ("batch-1 decode ceiling", f"{plan['decode_bs1_tok_s_upper_bound']:,} tokens/s (memory bandwidth / weight bytes)")]
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)
    if plan["fits"]:
        out.print("fits")
    else:
        why, *options = plan["suggestions"]
        out.print(f"DOES NOT FIT: {why}. What would fit:")
        for o in options:
            out.print(f"  - {o}")
    return 0 if plan["fits"] else 3


def cmd_plan_cost(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmsmith.ops.cost import default_results, parse_price, plan_cost, scrape_rates
    from lmsmith.ops.planner import load_shape

    name, shape = load_shape(args.model)
    tps, in_tps, source = args.tokens_per_s, args.input_tokens_per_s, None
    if args.metrics_url and tps is None:
        with console.status(f"measuring {args.metrics_url} for {args.window:g} s"):
            rates = scrape_rates(args.metrics_url, args.window, args.served_model)
        tps, in_tps = rates["output_tok_s"], in_tps or rates["input_tok_s"] or None
        source = f"live: {args.metrics_url} over {args.window:g} s"
    res = plan_cost(name, shape, gpu=args.gpu, price_per_gpu_hour=parse_price(args.price), tokens_per_s=tps,
                    input_tokens_per_s=in_tps, results=[Path(p) for p in args.results] if args.results else default_results(),
                    context=args.context, concurrency=args.concurrency, source=source)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    t = Table("format", "GPUs", "output tok/s", "$/M output", "$/M input", "vs bf16",
              title=f"serving {name} on {args.gpu} at ${res['usd_per_gpu_hour']:g}/GPU-hour "
                    f"({args.concurrency} x {args.context} tokens of KV cache)")
    for r in res["formats"]:
        if not r["fits"]:
            t.add_row(r["format"], "> 8", "-", "-", "-", "does not fit")
            continue
        label = "bf16 / fp16" if r["format"] == "bf16" else r["format"]
        t.add_row(label, str(r["gpus"]), f"{r['output_tok_s']:,.0f}", f"{r['usd_per_m_output']:.4f}",
                  f"{r['usd_per_m_input']:.4f}", f"{r.get('cost_vs_bf16', 1):.2f}x")
    out.print(t)
    out.print(f"bf16 throughput: {res['bf16_output_tok_s']:,.0f} output tok/s ({res['throughput_source']})")
    for r in res["formats"]:
        if r["format"] != "bf16":
            out.print(f"{r['format']} speed: {r['speed_source']}")
    return 0


def register_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="capacity planning: memory per GPU and expected speed, before you rent GPUs")
    psub = p.add_subparsers(dest="plan_command", metavar="WHAT", required=True)
    c = psub.add_parser("cost", help="price per million input/output tokens from measured tokens/s, bf16 vs int8/int4/fp8")
    c.add_argument("--model", required=True, help="a shape preset (llama-3.1-8b, …), a config.json, or a model ref")
    c.add_argument("--gpu", default="h100", choices=["h100", "h200", "a100", "l40s"])
    c.add_argument("--price", default="2.5/h", help="dollars per GPU-hour: 2.5/h, 0.04/min, 1800/month")
    c.add_argument("--tokens-per-s", type=float, help="measured bf16 output tokens/s per replica (overrides the rest)")
    c.add_argument("--input-tokens-per-s", type=float, help="measured prefill tokens/s (default: compute-bound estimate)")
    c.add_argument("--metrics-url", help="a running server's /metrics: measure tokens/s live")
    c.add_argument("--served-model", help="with --metrics-url: count only this model_name")
    c.add_argument("--window", type=float, default=30.0, help="with --metrics-url: seconds between the two scrapes")
    c.add_argument("--results", nargs="+", help="benchmark result JSON files or directories (default: bench/results)")
    c.add_argument("--context", type=int, default=4096, help="tokens per sequence the KV cache must hold")
    c.add_argument("--concurrency", type=int, default=64, help="sequences served at once")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_plan_cost)
    for what in ("train", "serve"):
        s = psub.add_parser(what, help=f"plan {'training' if what == 'train' else 'serving'} (exit code 3 if it does not fit)")
        s.add_argument("--model", required=True, help="a shape preset (llama-3.2-1b, llama-3.1-8b, …), a config.json, or a model ref")
        s.add_argument("--gpus", type=POSITIVE_INT, default=1)
        s.add_argument("--gpu-mem", type=POSITIVE_FLOAT, help="GiB per GPU (default: the --gpu's usable memory)")
        s.add_argument("--gpu", default="h100", choices=sorted(GPU_MEM_GIB),
                       help="the GPU: its peak FLOP/s, bandwidth and default memory")
        s.add_argument("--json", action="store_true")
        if what == "train":
            s.add_argument("--seq-len", type=POSITIVE_INT, default=2048)
            s.add_argument("--micro-batch", type=POSITIVE_INT, default=1)
            g = s.add_mutually_exclusive_group()
            g.add_argument("--fsdp", action="store_true", help="shard weights, grads and optimizer (default with >1 GPU)")
            g.add_argument("--ddp", action="store_true", help="replicate everything on every GPU")
            s.add_argument("--lora", action="store_true")
            s.add_argument("--qlora", action="store_true")
            s.add_argument("--lora-r", type=POSITIVE_INT, default=16)
            s.add_argument("--ac", choices=["none", "selective", "full"], default="none", help="activation checkpointing")
            s.add_argument("--chunked-loss", action=argparse.BooleanOptionalAction, default=True,
                           help="cross-entropy in chunks, no full fp32 logits (default on, as `lmsmith train` on CUDA)")
            s.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                           help="per-block torch.compile (default on, as `lmsmith train` on CUDA)")
            s.add_argument("--master-weights", action=argparse.BooleanOptionalAction, default=None,
                           help="bf16 weights with fp32 masters (default: on for full fine-tuning on one GPU, as "
                                "`lmsmith train` with --grad-accum 1)")
            s.add_argument("--mfu", type=number(float, 0, 1, lo_open=True), default=0.50,
                           help="model FLOPs utilization to expect (the loop's CUDA defaults measured 51%% on an H100 for "
                                "the Llama-3.2-1B shape: bench/results/train_throughput-h100.json)")
            s.set_defaults(func=cmd_plan_train)
        else:
            s.add_argument("--weight-dtype", default="bfloat16")
            s.add_argument("--kv-dtype", default="bfloat16")
            s.add_argument("--context", type=POSITIVE_INT, default=8192)
            s.add_argument("--concurrency", type=POSITIVE_INT, default=1)
            s.set_defaults(func=cmd_plan_serve)
