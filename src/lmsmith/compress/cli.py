"""`lmsmith compress …`: quantize a model into a new registered version; measure perplexity."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from lmsmith.config import POSITIVE_INT
from lmsmith.errors import LmsmithError
from lmsmith.progress import console, out
from lmsmith.quant import GROUP_SIZES, METHODS


def group_size_arg(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a group size (auto, 32, 64 or 128)") from None


def cmd_quantize(args: argparse.Namespace) -> int:
    from lmsmith.compress.perplexity import read_text, ref_perplexity
    from lmsmith.compress.quantize import register_quantized
    from lmsmith.models import resolve_model
    from lmsmith.progress import human_bytes

    text = read_text(args.eval_text) if args.eval_text else None  # fail on a bad path before the slow part
    parent = resolve_model(args.ref)  # once for the quantization, the size and the perplexity
    if args.algorithm != "rtn" or args.bits not in (None, 4) or args.calibration:
        from lmsmith.compress.ptq import PTQConfig, register_calibrated

        cfg = PTQConfig(method=args.method, algorithm=args.algorithm, bits=args.bits, group_size=args.group_size,
                        symmetric=args.symmetric, act_order=args.act_order, damp=args.damp,
                        include_lm_head=args.include_lm_head, lm_head_method=args.lm_head,
                        calibration=args.calibration, samples=args.samples, seq_len=args.seq_len)
        mv, spec = register_calibrated(args.ref, args.output_name, cfg, command=args.command_line)
    else:
        mv, spec = register_quantized(parent, args.output_name, args.method, args.group_size, args.symmetric,
                                      args.include_lm_head, command=args.command_line, lm_head_method=args.lm_head)
    parent_size = sum(p.stat().st_size for p in parent.dir.glob("*.safetensors"))
    metrics: dict[str, float] = {"size_bytes": mv.size, "parent_size_bytes": parent_size}
    if text is not None:
        base = ref_perplexity(parent, text, device="cpu")
        quant = ref_perplexity(mv.ref, text, device="cpu")
        metrics.update(ppl=quant.ppl, parent_ppl=base.ppl, ppl_delta_pct=100 * (quant.ppl / base.ppl - 1))
    parent.registry.update(mv.ref, metrics=metrics)
    detail = (f"{spec.bits or 4}-bit, group size {spec.group_size}, {'symmetric' if spec.symmetric else 'asymmetric'}"
              if spec.method == "int4" else "")
    detail = f"{spec.algorithm}, {detail}" if detail else spec.algorithm
    console.print(f"registered {mv.ref}: {spec.method}{f' ({detail})' if detail else ''}, {len(spec.modules)} linears "
                  f"quantized, {human_bytes(parent_size)} -> {human_bytes(mv.size)}")
    if text is not None:
        console.print(f"perplexity {metrics['parent_ppl']:.3f} -> {metrics['ppl']:.3f} ({metrics['ppl_delta_pct']:+.2f}%)")
    out.print(mv.ref)
    return 0


def cmd_ppl(args: argparse.Namespace) -> int:
    from lmsmith.compress.perplexity import read_text, ref_perplexity

    text = read_text(args.text)
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    for m in methods:
        if m != "none" and m not in METHODS:
            raise LmsmithError(f"unknown quantization method '{m}'", f"use none or one of: {', '.join(METHODS)}")
    rows = []
    for m in methods:
        r = ref_perplexity(args.ref, text, method=m, group_size=args.group_size, symmetric=args.symmetric,
                           include_lm_head=args.include_lm_head, dtype=args.dtype, device=args.device,
                           max_length=args.max_length)
        rows.append({"method": m, **r.to_dict()})
    base = rows[0]["ppl"]
    for r in rows:
        r["delta_pct"] = 100 * (r["ppl"] / base - 1)
    if args.json:
        print(json.dumps({"ref": args.ref, "text": args.text, "results": rows}, indent=2))
        return 0
    t = Table("method", "perplexity", f"vs {rows[0]['method']}", "tokens", title=f"{args.ref} on {args.text}")
    for r in rows:
        t.add_row(r["method"], f"{r['ppl']:.3f}", f"{r['delta_pct']:+.2f}%", str(r["tokens"]))
    out.print(t)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from lmsmith.compress.prune import PruneConfig, register_pruned

    cfg = PruneConfig(method=args.method, sparsity=args.sparsity, pattern=args.pattern, calibration=args.calibration,
                      samples=args.samples, seq_len=args.seq_len)
    mv, info = register_pruned(args.ref, args.output_name, cfg, command=args.command_line)
    console.print(f"registered {mv.ref}: {args.method} pruning, {info['measured_sparsity']:.1%} of the decoder's "
                  f"linear weights zero{f' (pattern {args.pattern})' if args.pattern else ''}")
    out.print(mv.ref)
    return 0


def cmd_lowrank(args: argparse.Namespace) -> int:
    from lmsmith.compress.lowrank import LowRankConfig, register_lowrank
    from lmsmith.compress.report import human_bytes

    cfg = LowRankConfig(rank_ratio=args.rank_ratio, method=args.method, calibration=args.calibration,
                        samples=args.samples, seq_len=args.seq_len, alpha=args.alpha)
    mv, info = register_lowrank(args.ref, args.output_name, cfg, command=args.command_line)
    console.print(f"registered {mv.ref}: {args.method} factorization of {info['num_factorized']} linears, "
                  f"{info['params_before']:,} -> {info['params_after']:,} parameters, {human_bytes(mv.size)}")
    out.print(mv.ref)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from lmsmith.compress.report import ReportConfig, compress_report, render

    cfg = ReportConfig(refs=args.refs, text=args.text, max_length=args.max_length, speed_tokens=args.speed_tokens,
                       output=args.output, device=args.device)
    rows = compress_report(cfg)
    if args.json:
        print(json.dumps({"text": args.text, "rows": rows}, indent=2))
    else:
        render(rows, cfg)
    return 0


def add_quant_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group-size", type=group_size_arg, default=None, metavar="N",
                   help=f"int4 group size, one of {GROUP_SIZES}; auto: 128 if it divides every layer, else 32")
    p.add_argument("--symmetric", action="store_true", help="int4: symmetric around zero (no zero points)")
    p.add_argument("--include-lm-head", action="store_true", help="also quantize lm_head (kept full precision by default)")


def add_calibration_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calibration", metavar="FILE", default=None,
                   help="calibration text: plain text, JSONL or JSON (text/messages fields), in the model's language")
    p.add_argument("--samples", type=int, default=128, help="calibration windows")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per calibration window")


def add_lm_head_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lm-head", choices=METHODS, default=None, metavar="METHOD",
                   help="quantize lm_head with its own method, e.g. int8 beside int4 layers (implies --include-lm-head)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="quantize models and measure what it costs in quality")
    csub = p.add_subparsers(dest="compress_command", metavar="COMMAND", parser_class=type(p))
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    q = csub.add_parser("quantize", help="weight-only quantization into a new registered version")
    q.add_argument("ref", help="model reference: NAME, NAME@VERSION, NAME@ALIAS or a path")
    q.add_argument("--method", required=True, choices=METHODS, help="int8 (per channel), int4 (group-wise), fp8 (e4m3, GPU)")
    add_quant_args(q)
    add_lm_head_arg(q)
    add_calibration_args(q)
    q.add_argument("--algorithm", choices=("rtn", "gptq", "awq"), default="rtn",
                   help="rtn: round to nearest; gptq: error-compensating (needs --calibration); awq: activation-aware "
                        "scales and clipping (needs --calibration)")
    q.add_argument("--bits", type=int, choices=(2, 3, 4, 8), default=None,
                   help="int4 grid: 4 (default), 3 or 2 bits per weight, stored in int4 storage (same size and kernels)")
    q.add_argument("--no-act-order", dest="act_order", action="store_false",
                   help="gptq: quantize columns left to right instead of by activation energy")
    q.add_argument("--damp", type=float, default=0.01, help="gptq: Hessian dampening, share of its mean diagonal")
    q.add_argument("--output-name", required=True, help="registry name of the quantized model")
    q.add_argument("--eval-text", metavar="FILE", help="also measure perplexity before/after on this text (stored as metrics)")
    q.set_defaults(func=cmd_quantize)

    pr = csub.add_parser("prune", help="zero a share of the weights (magnitude, Wanda, SparseGPT; 2:4) into a new version")
    pr.add_argument("ref", help="model reference (unquantized)")
    pr.add_argument("--method", required=True, choices=("magnitude", "wanda", "sparsegpt"),
                    help="magnitude: smallest |W|; wanda: |W| x input norm; sparsegpt: OBS mask + weight update")
    pr.add_argument("--sparsity", type=float, default=0.5, help="share of each row's weights set to zero")
    pr.add_argument("--pattern", default=None, metavar="N:M", help="semi-structured: N zeros in every M weights (2:4)")
    add_calibration_args(pr)
    pr.add_argument("--output-name", required=True, help="registry name of the pruned model")
    pr.set_defaults(func=cmd_prune)

    lr = csub.add_parser("lowrank", help="factor each linear into two thin ones (SVD or activation-aware SVD)")
    lr.add_argument("ref", help="model reference (unquantized)")
    lr.add_argument("--rank-ratio", type=float, default=0.5,
                    help="share of each linear's parameters the two factors keep (0.5: half)")
    lr.add_argument("--method", choices=("svd", "asvd"), default="svd",
                    help="svd: plain truncated SVD; asvd: SVD of W scaled by input activation magnitudes")
    lr.add_argument("--alpha", type=float, default=0.5, help="asvd: exponent of the activation scaling")
    add_calibration_args(lr)
    lr.add_argument("--output-name", required=True, help="registry name of the factorized model")
    lr.set_defaults(func=cmd_lowrank)

    rp = csub.add_parser("report", help="size, perplexity, CPU speed and parent of compressed versions: table + PNG")
    rp.add_argument("refs", nargs="+", metavar="REF", help="model references to compare (e.g. a parent and its versions)")
    rp.add_argument("--text", required=True, metavar="FILE", help="held-out UTF-8 text for perplexity")
    rp.add_argument("--max-length", type=int, default=512, help="context window per scored chunk")
    rp.add_argument("--speed-tokens", type=int, default=32, help="tokens generated to time decoding (0 = skip)")
    rp.add_argument("--device", default="cpu", help="where to measure (cpu or cuda)")
    rp.add_argument("--output", default="compress-report.png", metavar="PNG", help="plot of perplexity vs size")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(func=cmd_report)

    pp = csub.add_parser("ppl", help="perplexity of a model on a text file (optionally quantized on the fly)")
    pp.add_argument("ref", help="model reference (a quantized version loads as such)")
    pp.add_argument("--text", required=True, metavar="FILE", help="UTF-8 text to score")
    pp.add_argument("--method", default="none", help="comma-separated: none,int8,int4,fp8 (first one is the baseline)")
    add_quant_args(pp)
    pp.add_argument("--max-length", type=POSITIVE_INT, default=1024, help="context window per scored chunk")
    pp.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16")
    pp.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_ppl)
