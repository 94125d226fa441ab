"""`lmsmith embed` and `lmsmith rag index|query|ask|eval|list|migrate|rm`.

Retrieval lives in lmsmith.rag and never imports the engine; this module (a leaf nothing imports) wires
retrieval to the engine (`lmsmith.serve.llm.LLM`) for `rag ask` and the answer half of `rag eval`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lmsmith.errors import LmsmithError
from lmsmith.progress import console, out


# ------------------------------------------------------------------------------------------ embed
def read_texts(args: argparse.Namespace) -> list[tuple[Any, str]]:
    if args.text:
        return list(enumerate(args.text))
    p = Path(args.input).expanduser()
    if not p.exists():
        raise LmsmithError(f"no such file: {p}")
    lines = p.read_text(encoding="utf-8").splitlines()
    if not any(ln.strip() for ln in lines):
        raise LmsmithError(f"{p} is empty")
    if p.suffix != ".jsonl":  # plain text: one text per line
        return [(i, ln) for i, ln in enumerate(lines) if ln.strip()]
    return jsonl_texts(p, lines, first_id=0, example="...")


def jsonl_texts(p: Path, lines: list[str], first_id: int, example: str) -> list[tuple[Any, str]]:
    """(id, text) of each non-blank JSONL line; a line without an id gets its line number (from `first_id`)."""
    items = []
    for n, ln in enumerate(lines, 1):
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
        except ValueError as e:
            raise LmsmithError(f"{p}:{n} is not valid JSON: {e.msg}") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
            raise LmsmithError(f"{p}:{n} has no 'text' field", 'each line: {"id": ..., "text": "%s"}' % example)
        items.append((rec.get("id", n - 1 + first_id), rec["text"]))
    return items


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from lmsmith.progress import task
    from lmsmith.rag.embed import Embedder

    if not args.text and not args.input:
        raise LmsmithError("nothing to embed", "give TEXT arguments or --input FILE (.jsonl with `text`, or .txt lines)")
    items = read_texts(args)
    emb = Embedder(args.embedder, device=args.device)
    with task(f"embed ({emb.ref})", len(items)) as bar:
        vecs = emb.embed([t for _, t in items], batch_size=args.batch_size, progress=bar)
    info = emb.info()
    if args.output and args.output.endswith(".npy"):
        np.save(args.output, vecs)
        Path(args.output).with_suffix(".json").write_text(json.dumps({"embedder": info, "ids": [i for i, _ in items]}, indent=1))
        console.print(f"wrote {len(items)} x {emb.dim} vectors to {args.output} (embedder {emb.ref}, ids and "
                      f"embedder in {Path(args.output).with_suffix('.json')})")
        return 0
    lines = (json.dumps({"id": i, "embedding": [round(float(x), 7) for x in v], "model": emb.ref,
                         "fingerprint": info["fingerprint"]}) + "\n" for (i, _), v in zip(items, vecs))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.writelines(lines)
    else:
        sys.stdout.writelines(lines)
    return 0


# ------------------------------------------------------------------------------------------ rag
def cmd_index(args: argparse.Namespace) -> int:
    from lmsmith.rag.index import build_index

    mv, st = build_index(args.docs, args.name, embedder=args.embedder, chunk_tokens=args.chunk_tokens,
                         overlap=args.overlap, store=args.store, command=args.command_line, device=args.device)
    summary = f"{st.added} added, {st.changed} changed, {st.removed} removed, {st.unchanged} unchanged"
    if not st.created:
        console.print(f"{mv.ref} is up to date ({summary})")
    else:
        console.print(f"registered {mv.ref}: {mv.metrics.get('documents')} documents, {mv.metrics.get('chunks')} chunks "
                      f"({summary}; {st.chunks_embedded} chunks embedded with {mv.base})")
    out.print(mv.ref)
    return 0


def _queries(args: argparse.Namespace) -> list[tuple[Any, str]]:
    if args.query is not None:
        return [(None, args.query)]
    p = Path(args.queries).expanduser()
    if not p.exists():
        raise LmsmithError(f"no such file: {p}")
    items = jsonl_texts(p, p.read_text(encoding="utf-8").splitlines(), first_id=1, example="query")
    if not items:
        raise LmsmithError(f"{p} is empty", 'one {"id", "text"} object per line')
    return items


def cmd_query(args: argparse.Namespace) -> int:
    from rich.table import Table

    from lmsmith.rag.index import Index, hit_record, parse_filter

    queries = _queries(args)
    index = Index(args.kb, embedder=args.embedder, device=args.device)
    results = index.query_many([q for _, q in queries], k=args.k, hybrid_search=args.hybrid,
                               filter=parse_filter(args.filter))
    for (qid, q), hits in zip(queries, results):
        recs = [hit_record(h) for h in hits]
        if args.json:
            print(json.dumps({"id": qid, "hits": recs}, ensure_ascii=False))
            continue
        t = Table("#", "score", "document", "text", title=f"{index.ref}: {q}" if qid is None else f"{qid}: {q}")
        for i, r in enumerate(recs, 1):
            t.add_row(str(i), f"{r['score']:.4f}", str(r["id"]), r["text"][:160].replace("\n", " "))
        out.print(t)
    return 0


class EngineGenerator:
    """Chat messages -> answers on our engine (greedy); sources are dropped from the end if the prompt
    would not fit the model's context."""

    def __init__(self, ref: str, max_tokens: int = 256, dtype: str = "auto"):
        from lmsmith.serve.llm import LLM
        from lmsmith.serve.sampling_params import SamplingParams

        with console.status(f"loading {ref}"):
            self.llm = LLM(ref, dtype=dtype)
        self.params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        self.max_tokens = max_tokens
        self.limit = int(self.llm.engine.max_model_len)

    def fits(self, messages: list[dict[str, Any]]) -> bool:
        ids = self.llm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return len(ids["input_ids"]) + self.max_tokens < self.limit

    def answer(self, question: str, hits: list) -> tuple[str, list]:
        from lmsmith.rag.answer import rag_messages

        while True:
            msgs = rag_messages(question, hits)
            if self.fits(msgs) or not hits:
                break
            hits = hits[:-1]
        return self.llm.chat(msgs, self.params, use_tqdm=False)[0].outputs[0].text.strip(), hits

    def __call__(self, conversations: list[list[dict[str, Any]]]) -> list[str]:
        return [c.outputs[0].text.strip() for c in self.llm.chat(conversations, self.params)]


def cmd_ask(args: argparse.Namespace) -> int:
    from lmsmith.rag.answer import citations, sources
    from lmsmith.rag.index import Index, parse_filter

    index = Index(args.kb, device=args.device)
    hits = index.query(args.question, k=args.k, hybrid_search=args.hybrid, filter=parse_filter(args.filter))
    dropped = None
    if args.guard:  # injected instructions hidden in retrieved documents never reach the prompt
        from lmsmith.guard import Guard
        from lmsmith.rag.answer import guard_hits

        hits, dropped = guard_hits(hits, Guard(args.guard_model, threshold=args.guard_threshold))
    gen = EngineGenerator(args.model, max_tokens=args.max_tokens, dtype=args.dtype)
    answer, used = gen.answer(args.question, hits)
    cited = citations(answer, len(used))
    srcs = sources(used, cited)
    if args.json:
        res = {"question": args.question, "answer": answer, "index": index.ref, "model": args.model, "sources": srcs}
        if dropped is not None:
            res["guard_dropped"] = dropped
        print(json.dumps(res, ensure_ascii=False))
        return 0
    out.print(answer)
    out.print("")
    for s in srcs:
        mark = "*" if s["cited"] else " "
        out.print(f"{mark}[{s['index']}] {s['id']} (score {s['score']:.3f}): {s['text'][:120].strip()}")
    if not cited:
        console.print("[yellow]the answer cites none of the sources")
    for d in dropped or []:
        console.print(f"[yellow]guard dropped {d['id']} (guard score {d['guard_score']:.3f}: {', '.join(d['reasons'])})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.table import Table

    from lmsmith.rag.evaluation import evaluate_answers, evaluate_retrieval, read_qa
    from lmsmith.rag.index import Index, parse_filter
    from lmsmith.registry.registry import Registry

    items = read_qa(args.qa)
    index = Index(args.kb, device=args.device)
    summary, rows = evaluate_retrieval(index, items, k=args.k, hybrid=args.hybrid, filter=parse_filter(args.filter))
    result: dict[str, Any] = {"index": index.ref, "qa": str(args.qa), "k": args.k, "hybrid": args.hybrid, "retrieval": summary}
    if args.model:
        from lmsmith.evaluate.backends import make_backend

        gen = EngineGenerator(args.model, max_tokens=args.max_tokens, dtype=args.dtype)
        judge_backend = make_backend(args.judge or args.model, chat=True, dtype=args.dtype)
        result["answers"] = evaluate_answers(rows, items, gen, judge_backend, k=args.k)
        result["model"], result["judge"] = args.model, args.judge or args.model
    flat = {f"rag_eval/{k}": v for k, v in {**summary, **result.get("answers", {})}.items() if isinstance(v, (int, float))}
    Registry().update(index.ref, metrics=flat)
    if args.output:
        p = Path(args.output)
        p.parent.mkdir(parents=True, exist_ok=True)
        detail = [{k: v for k, v in r.items() if k != "hits"} for r in rows]
        p.write_text(json.dumps({**result, "items": detail}, indent=1, ensure_ascii=False, default=str) + "\n")
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    t = Table("metric", "value", title=f"{index.ref} on {args.qa} ({len(items)} questions)")
    for k, v in {**summary, **result.get("answers", {})}.items():
        t.add_row(k, "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v))
    out.print(t)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from lmsmith.registry.registry import Registry

    versions = [v for v in Registry().list() if v.kind == "index"]
    if args.json:
        print(json.dumps([{"ref": v.ref, "embedder": v.base, "backend": v.tags.get("backend"), "created": v.created,
                           **v.metrics} for v in versions], indent=1))
        return 0
    t = Table("index", "embedder", "backend", "documents", "chunks", "created")
    for v in versions:
        t.add_row(v.ref, str(v.base), v.tags.get("backend", ""), str(v.metrics.get("documents", "")),
                  str(v.metrics.get("chunks", "")), v.created)
    out.print(t)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from lmsmith.rag.index import migrate_index

    mv = migrate_index(args.kb, args.to, name=args.name, command=args.command_line)
    console.print(f"copied {args.kb} to {args.to} as {mv.ref} ({mv.metrics.get('chunks')} chunks, no re-embedding)")
    out.print(mv.ref)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from lmsmith.rag.index import remove_index

    for ref in remove_index(args.kb):
        out.print(f"removed {ref}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="embed texts (JSONL {id, embedding} to stdout, or --output FILE.jsonl|.npy)")
    p.add_argument("text", nargs="*", help="texts to embed (or --input)")
    p.add_argument("--input", help=".jsonl with `text` (and `id`), or a text file with one text per line")
    p.add_argument("--embedder", help="registry ref or HF encoder directory (default: all-minilm-l6-v2)")
    p.add_argument("--output", help="write here: .jsonl, or .npy (+ a .json with ids and the embedder)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("rag", help="retrieval: index documents, query, answer with citations, evaluate")
    rsub = p.add_subparsers(dest="rag_command", metavar="ACTION", required=True)

    s = rsub.add_parser("index", help="index (or incrementally re-index) documents as a registry artifact")
    s.add_argument("docs", help=".jsonl (id, text, metadata fields), .txt, .md, or a directory of them")
    s.add_argument("--name", required=True, help="index name; a changed re-index adds a version (KB@2, ...)")
    s.add_argument("--embedder", help="registry ref or HF directory (default: all-minilm-l6-v2; a registry LLM "
                                      "gives mean-pooled hidden states); an existing index keeps its own")
    s.add_argument("--chunk-tokens", type=int, default=None, help="tokens per chunk (default: 256, or what the embedder reads)")
    s.add_argument("--overlap", type=int, default=32, help="tokens shared by consecutive chunks (whole sentences)")
    s.add_argument("--store", help="`embedded` (default: FAISS HNSW + SQLite in the registry), "
                                   "http(s)://HOST:6333 (Qdrant server/cluster) or qdrant+path:///DIR (Qdrant local mode)")
    s.add_argument("--device")
    s.set_defaults(func=cmd_index)

    s = rsub.add_parser("query", help="search an index (dense, or --hybrid dense + BM25)")
    s.add_argument("kb", help="index ref: KB, KB@3, KB@alias")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--query", help="one query")
    g.add_argument("--queries", help="JSONL of {id, text}")
    s.add_argument("--k", type=int, default=5)
    s.add_argument("--hybrid", action="store_true", help="fuse dense and BM25 keyword results (RRF)")
    s.add_argument("--filter", action="append", help="FIELD=VALUE on document metadata (repeatable: all must match)")
    s.add_argument("--json", action="store_true", help='one line per query: {"id", "hits": [{"id", "score", "text", "metadata"}]}')
    s.add_argument("--embedder", help="refused unless it is the index's own embedder")
    s.add_argument("--device")
    s.set_defaults(func=cmd_query)

    s = rsub.add_parser("ask", help="answer a question from an index with numbered, cited sources")
    s.add_argument("kb")
    s.add_argument("question")
    s.add_argument("--model", required=True, help="the LLM that answers (ref or path)")
    s.add_argument("--k", type=int, default=5)
    s.add_argument("--hybrid", action="store_true")
    s.add_argument("--filter", action="append")
    s.add_argument("--max-tokens", type=int, default=256)
    s.add_argument("--dtype", default="auto")
    s.add_argument("--json", action="store_true")
    s.add_argument("--device")
    s.add_argument("--guard", action="store_true", help="scan retrieved chunks with the prompt-injection guard and "
                                                        "drop flagged ones before they enter the prompt")
    s.add_argument("--guard-model", help="guard model directory (default: the shipped one)")
    s.add_argument("--guard-threshold", type=float, help="guard threshold (default: the model's)")
    s.set_defaults(func=cmd_ask)

    s = rsub.add_parser("eval", help="retrieval recall@k / MRR / nDCG vs gold ids; with --model, judged answers")
    s.add_argument("kb")
    s.add_argument("--qa", required=True, help='JSONL: {"id", "question", "gold": [doc ids], "answer"?}')
    s.add_argument("--k", type=int, default=5)
    s.add_argument("--hybrid", action="store_true")
    s.add_argument("--filter", action="append")
    s.add_argument("--model", help="also answer each question with this LLM and judge faithfulness and relevance")
    s.add_argument("--judge", help="the judge LLM (default: --model)")
    s.add_argument("--max-tokens", type=int, default=256)
    s.add_argument("--dtype", default="auto")
    s.add_argument("--output", help="write the full result (per question) as JSON here")
    s.add_argument("--json", action="store_true")
    s.add_argument("--device")
    s.set_defaults(func=cmd_eval)

    s = rsub.add_parser("list", help="registered indexes")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_list)

    s = rsub.add_parser("migrate", help="copy an index to another backend (vectors copied, not re-embedded)")
    s.add_argument("kb")
    s.add_argument("--to", required=True, help="`embedded`, http(s)://HOST:6333 or qdrant+path:///DIR")
    s.add_argument("--name", help="register the copy under this name (default: a new version of KB)")
    s.set_defaults(func=cmd_migrate)

    s = rsub.add_parser("rm", help="remove an index (every version) or one version (KB@3)")
    s.add_argument("kb")
    s.set_defaults(func=cmd_rm)
