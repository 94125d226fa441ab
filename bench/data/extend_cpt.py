"""Continued pretraining on Czech: the default model with an extended vocabulary vs the unextended one.

Both models train the same number of AdamW steps on the same Czech corpus (packed sequences of the
same token length, same seed and learning rate), and are evaluated on a held-out Czech text that is
not in the training corpus. The metric is held-out loss per UTF-8 byte (nats/byte; bits = /ln 2),
which is comparable across tokenizers, unlike loss per token. A minimal training loop of its own
(plain torch AdamW over packed batches), independent of `lmsmith train`.

    python -m bench.data.extend_cpt                       # CPU, a few minutes
    python -m bench.data.extend_cpt --device cuda --steps 300 --batch 16 --seq-len 512
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from bench._result import make_result, write_result
from bench.common import ROOT


def pack(tok, texts: list[str], seq_len: int):
    import torch

    sep = tok.eos_token_id
    ids: list[int] = []
    for t in texts:
        ids += tok.encode(t, add_special_tokens=False) + [sep]
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len]).view(n, seq_len), len(ids)


def heldout_loss_per_byte(model, tok, paragraphs: list[str], device: str) -> float:
    """Sum of token NLL (nats) over each paragraph, given a separator token as context, / UTF-8 bytes."""
    import torch

    nll, nbytes = 0.0, 0
    model.eval()
    with torch.no_grad():
        for p in paragraphs:
            ids = torch.tensor([[tok.eos_token_id] + tok.encode(p, add_special_tokens=False)], device=device)
            logits = model(ids).logits.float()
            nll += torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").item()
            nbytes += len(p.encode())
    model.train()
    return nll / nbytes


def train(ref: str, corpus: list[str], held: list[str], args) -> dict:
    import torch

    from lmsmith.data.tokenizer_tools import load_any_tokenizer
    from lmsmith.models import load_model

    torch.manual_seed(args.seed)
    tok = load_any_tokenizer(ref)
    model = load_model(ref, dtype="float32", device=args.device)
    data, n_tokens = pack(tok, corpus, args.seq_len)
    before = heldout_loss_per_byte(model, tok, held, args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(args.seed)
    losses, t0 = [], time.time()
    model.train()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / max(1, args.warmup))
        batch = data[torch.randint(len(data), (args.batch,), generator=gen)].to(args.device)
        loss = model(batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        print(f"  step {step + 1}/{args.steps} loss {loss.item():.3f} ({time.time() - t0:.0f} s)", file=sys.stderr)
    after = heldout_loss_per_byte(model, tok, held, args.device)
    corpus_bytes = sum(len(t.encode()) + 1 for t in corpus)
    return {"heldout_loss_per_byte_before": round(before, 4), "heldout_loss_per_byte_after": round(after, 4),
            "train_loss_first": round(losses[0], 4), "train_loss_last5": round(sum(losses[-5:]) / len(losses[-5:]), 4),
            "bytes_per_token_train": round(corpus_bytes / n_tokens, 3), "seconds": round(time.time() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", help="base model ref or directory (default: the default model, pulled)")
    ap.add_argument("--num-tokens", type=int, default=1500)
    ap.add_argument("--init", choices=["pieces", "mean"], default="pieces")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus-chars", type=int, default=300_000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--extended", help="an already extended model ref to reuse (skips `extend`)")
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "extend_cpt.json"))
    args = ap.parse_args()

    import torch

    from bench.common import SAMPLE_TEXTS as TEXTS
    from bench.common import czech_corpus
    if args.threads:
        torch.set_num_threads(args.threads)

    os.environ.setdefault("LMSMITH_HOME", tempfile.mkdtemp(prefix="lmsmith-bench-cpt-"))
    from lmsmith.data.tokenizer_tools import extend_model, read_texts

    ref = args.ref
    if not ref:
        from lmsmith.registry.importers import pull_default

        ref = pull_default()[0].ref
    with tempfile.TemporaryDirectory() as tmp:
        corpus_path = Path(tmp) / "cs.txt"
        corpus_path.write_text(czech_corpus(args.corpus_chars), encoding="utf-8")
        t = time.time()
        if args.extended:
            from lmsmith.data.tokenizer_tools import fertility, load_any_tokenizer

            held_text = (TEXTS / "cs_heldout.txt").read_text(encoding="utf-8")
            ext_ref = args.extended
            new_tok, old_tok = load_any_tokenizer(ext_ref), load_any_tokenizer(ref)
            stats = {"new_tokens": len(new_tok) - len(old_tok),
                     "eval_tokens_per_word_before": fertility(old_tok, held_text)["tokens_per_word"],
                     "eval_tokens_per_word_after": fertility(new_tok, held_text)["tokens_per_word"]}
        else:
            mv, stats = extend_model(ref, corpus_path, args.num_tokens, "cpt-extended", init=args.init,
                                     protect=TEXTS / "en.txt", eval_text=TEXTS / "cs_heldout.txt")
            ext_ref = mv.ref
        extend_s = time.time() - t
        corpus = read_texts(corpus_path)
    held = read_texts(TEXTS / "cs_heldout.txt")
    print(f"extended {ref} -> {ext_ref} in {extend_s:.0f} s; training the base model …", file=sys.stderr)
    base = train(ref, corpus, held, args)
    print("training the extended model …", file=sys.stderr)
    ext = train(ext_ref, corpus, held, args)
    metrics = {f"base_{k}": v for k, v in base.items()}
    metrics |= {f"extended_{k}": v for k, v in ext.items()}
    metrics |= {"new_tokens": stats["new_tokens"], "heldout_tokens_per_word_before": round(stats["eval_tokens_per_word_before"], 4),
                "heldout_tokens_per_word_after": round(stats["eval_tokens_per_word_after"], 4),
                "steps": args.steps, "batch": args.batch, "seq_len": args.seq_len, "lr": args.lr,
                "extended_minus_base_loss_per_byte": round(ext["heldout_loss_per_byte_after"] - base["heldout_loss_per_byte_after"], 4),
                "extend_seconds": round(extend_s, 1)}
    write_result(args.output, make_result("extend_cpt", metrics, args.device,
                                          note="loss per byte in nats (divide by ln 2 = %.4f for bits)" % math.log(2)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
