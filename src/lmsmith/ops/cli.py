"""`lmsmith models …`: the registry from the command line."""

from __future__ import annotations

import argparse
import json
import sys

from rich.table import Table

from lmsmith.errors import LmsmithError
from lmsmith.ops.registry import ModelVersion, Registry
from lmsmith.progress import console, out


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def version_dict(mv: ModelVersion) -> dict:
    d = json.loads(mv.model_dump_json())
    d["ref"] = mv.ref
    d["size"] = mv.size
    return d


def cmd_pull(args: argparse.Namespace) -> int:
    from lmsmith.ops.importers import DEFAULT_EMBEDDER, DEFAULT_MODEL, pull_default, pull_default_embedder

    if args.what not in ("default", "default-embedder"):
        raise LmsmithError(f"unknown model to pull: '{args.what}'",
                           f"`pull default` fetches {DEFAULT_MODEL}, `pull default-embedder` {DEFAULT_EMBEDDER}; "
                           "import other models with `lmsmith models import PATH`")
    mv, created = pull_default(dtype=args.dtype) if args.what == "default" else pull_default_embedder()
    console.print(f"{'registered' if created else 'already registered:'} {mv.ref} ({human_bytes(mv.size)}) at {mv.path}")
    out.print(mv.ref)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from lmsmith.ops.importers import import_model

    mv = import_model(args.path, args.name, dtype=args.dtype, command=args.command_line)
    console.print(f"registered {mv.ref}: {human_bytes(mv.size)} ({human_bytes(mv.stored_bytes)} new in the store)")
    out.print(mv.ref)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    versions = Registry().list(args.name) if args.name else Registry().list()
    if args.json:
        print(json.dumps([version_dict(v) for v in versions], indent=2))
        return 0
    if not versions:
        console.print("no models registered yet: try `lmsmith models pull default`")
        return 0
    t = Table("ref", "kind", "size", "new bytes", "created", "aliases", "parent", "stage")
    for v in versions:
        t.add_row(v.ref, v.kind, human_bytes(v.size), human_bytes(v.stored_bytes), v.created, ",".join(v.aliases),
                  v.lineage.parent or v.base or "", v.lineage.stage)
    out.print(t)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    mv = Registry().get(args.ref)
    d = version_dict(mv)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    t = Table(show_header=False, title=mv.ref)
    for key in ("kind", "base", "created", "path", "aliases"):
        if d.get(key):
            t.add_row(key, str(d[key]) if not isinstance(d[key], list) else ", ".join(d[key]))
    t.add_row("size", f"{human_bytes(mv.size)} in {len(mv.files)} files ({human_bytes(mv.stored_bytes)} new in the store)")
    lin = mv.lineage
    for key, val in (("parent", lin.parent), ("stage", lin.stage), ("command", lin.command), ("run id", lin.run_id),
                     ("source", lin.source)):
        if val:
            t.add_row(key, str(val))
    for ref in lin.data:
        t.add_row("data", f"{ref.path} sha256:{(ref.sha256 or '?')[:12]}")
    for k, v in mv.tags.items():
        t.add_row(f"tag {k}", str(v))
    for k, v in mv.metrics.items():
        t.add_row(f"metric {k}", json.dumps(v) if not isinstance(v, (int, float, str)) else str(v))
    out.print(t)
    return 0


def cmd_alias(args: argparse.Namespace) -> int:
    reg = Registry()
    if args.delete:
        name = args.ref.partition("@")[0]
        reg.remove_alias(name, args.alias)
        out.print(f"removed alias {name}@{args.alias}")
        return 0
    mv = reg.set_alias(args.ref, args.alias)
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
    dest = Registry().export(args.ref, args.dir)
    out.print(f"exported {args.ref} to {dest}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    freed = Registry().gc()
    out.print(f"freed {human_bytes(freed)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    register_models(sub)
    register_plan(sub)


def register_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="the model registry: pull, import, list, show, alias, verify, rm, export")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    s = msub.add_parser("pull", help="fetch and register a known model (`default`: SmolLM2-135M-Instruct, "
                                     "`default-embedder`: all-MiniLM-L6-v2)")
    s.add_argument("what", help="`default` or `default-embedder`")
    s.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    s.set_defaults(func=cmd_pull)

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

    s = msub.add_parser("export", help="write a standalone HF directory with regular safetensors shards")
    s.add_argument("ref")
    s.add_argument("dir")
    s.set_defaults(func=cmd_export)

    s = msub.add_parser("gc", help="delete unreferenced blobs and leftovers of interrupted imports")
    s.set_defaults(func=cmd_gc)


# usable GiB per GPU as torch sees it (an "80 GB" H100 shows ~79 GiB, of which ~78 are free to a process)
GPU_MEM_GIB = {"h100": 79.0, "h200": 139.0, "a100": 79.0, "l40s": 44.0, "cpu": 64.0}


def _default_gpu_mem(args: argparse.Namespace) -> None:
    if args.gpu_mem is None:
        args.gpu_mem = GPU_MEM_GIB[args.gpu]


def cmd_plan_train(args: argparse.Namespace) -> int:
    from lmsmith.ops.planner import load_shape, plan_train

    _default_gpu_mem(args)
    name, shape = load_shape(args.model)
    plan = plan_train(shape, name=name, gpus=args.gpus, gpu_mem_gib=args.gpu_mem, seq_len=args.seq_len,
                      micro_batch=args.micro_batch, strategy="ddp" if args.ddp else ("fsdp" if args.gpus > 1 or args.fsdp else "single"),
                      lora=args.lora, lora_r=args.lora_r, qlora=args.qlora, ac=args.ac, chunked_loss=args.chunked_loss,
                      mfu=args.mfu, gpu=args.gpu, compile=args.compile)
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
    from lmsmith.ops.planner import load_shape, plan_serve

    _default_gpu_mem(args)
    name, shape = load_shape(args.model)
    plan = plan_serve(shape, name=name, gpus=args.gpus, gpu_mem_gib=args.gpu_mem, weight_dtype=args.weight_dtype,
                      kv_dtype=args.kv_dtype, context=args.context, concurrency=args.concurrency, gpu=args.gpu)
    if args.json:
        print(json.dumps(plan, indent=2))
    else:
        t = Table(show_header=False, title=f"serving {name}")
        for k, v in plan.items():
            t.add_row(k, f"{v:,}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v))
        out.print(t)
    return 0 if plan["fits"] else 3


def register_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="capacity planning: memory per GPU and expected speed, before you rent GPUs")
    psub = p.add_subparsers(dest="plan_command", metavar="WHAT", required=True)
    for what in ("train", "serve"):
        s = psub.add_parser(what, help=f"plan {what}ing (exit code 3 if it does not fit)")
        s.add_argument("--model", required=True, help="a shape preset (llama-3.2-1b, llama-3.1-8b, …), a config.json, or a model ref")
        s.add_argument("--gpus", type=int, default=1)
        s.add_argument("--gpu-mem", type=float, help="GiB per GPU (default: the --gpu's usable memory)")
        s.add_argument("--gpu", default="h100", choices=sorted(GPU_MEM_GIB),
                       help="the GPU: its peak FLOP/s, bandwidth and default memory")
        s.add_argument("--json", action="store_true")
        if what == "train":
            s.add_argument("--seq-len", type=int, default=2048)
            s.add_argument("--micro-batch", type=int, default=1)
            g = s.add_mutually_exclusive_group()
            g.add_argument("--fsdp", action="store_true", help="shard weights, grads and optimizer (default with >1 GPU)")
            g.add_argument("--ddp", action="store_true", help="replicate everything on every GPU")
            s.add_argument("--lora", action="store_true")
            s.add_argument("--qlora", action="store_true")
            s.add_argument("--lora-r", type=int, default=16)
            s.add_argument("--ac", choices=["none", "selective", "full"], default="none", help="activation checkpointing")
            s.add_argument("--chunked-loss", action=argparse.BooleanOptionalAction, default=True,
                           help="cross-entropy in chunks, no full fp32 logits (default on, as `lmsmith train` on CUDA)")
            s.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                           help="per-block torch.compile (default on, as `lmsmith train` on CUDA)")
            s.add_argument("--mfu", type=float, default=0.50,
                           help="model FLOPs utilization to expect (the loop's CUDA defaults measured 51%% on an H100 for "
                                "the Llama-3.2-1B shape: bench/results/train_throughput-h100.json)")
            s.set_defaults(func=cmd_plan_train)
        else:
            s.add_argument("--weight-dtype", default="bfloat16")
            s.add_argument("--kv-dtype", default="bfloat16")
            s.add_argument("--context", type=int, default=8192)
            s.add_argument("--concurrency", type=int, default=1)
            s.set_defaults(func=cmd_plan_serve)
