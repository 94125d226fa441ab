"""GGUF files are checked before conversion (issue 15, item 5): a broken header cannot make transformers
build a default-sized model, and missing or extra tensors are refused with one clear error."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pytest

from lmsmith.errors import LmsmithError
from lmsmith.registry.importers import check_gguf, import_model

PER = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
       "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
       "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
       "lm_head.weight": "output.weight"}


def tiny_tensors() -> dict[str, np.ndarray]:
    from lmsmith.tiny import tiny_model

    out = {}
    for k, v in tiny_model("llama").state_dict().items():
        if k in TOP:
            out[TOP[k]] = v.numpy()
        else:
            p = k.split(".")
            out[f"blk.{p[2]}.{PER['.'.join(p[3:-1])]}.{p[-1]}"] = v.numpy()
    return out


def write_gguf(path: Path, arch: str = "llama", tensors: dict | None = None, blocks: int = 2, hidden: int | None = 64,
               vocab: int = 512) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(blocks)
    w.add_context_length(512)
    if hidden is not None:
        w.add_embedding_length(hidden)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(vocab)
    for name, t in (tiny_tensors() if tensors is None else tensors).items():
        w.add_tensor(name, t.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_a_good_tiny_gguf_imports(tmp_path, registry):
    info = check_gguf(write_gguf(tmp_path / "tiny.gguf"))
    assert info["arch"] == "llama" and info["layers"] == 2 and info["tensors"] == 21
    mv = import_model(tmp_path / "tiny.gguf", "from-gguf", dtype="float32", registry=registry)
    assert registry.verify(mv.ref) == []


def test_broken_architecture_key_is_refused_before_any_allocation(tmp_path, registry):
    p = write_gguf(tmp_path / "bad.gguf", arch="llama\x00", tensors={})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(LmsmithError, match="architecture .* missing or not supported"):
        import_model(p, "bad", registry=registry)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB: nothing big was built
    assert registry.names() == []


def test_no_tensors_is_refused(tmp_path, registry):
    with pytest.raises(LmsmithError, match="holds no tensors"):
        import_model(write_gguf(tmp_path / "empty.gguf", tensors={}), "empty", registry=registry)


def test_missing_and_extra_tensors_are_refused(tmp_path):
    t = tiny_tensors()
    del t["blk.1.attn_q.weight"]
    with pytest.raises(LmsmithError, match="missing blk.1.attn_q.weight"):
        check_gguf(write_gguf(tmp_path / "missing.gguf", tensors=t))
    t = tiny_tensors()
    t["blk.2.attn_q.weight"] = t["blk.1.attn_q.weight"]
    with pytest.raises(LmsmithError, match="extra tensor blk.2.attn_q.weight"):
        check_gguf(write_gguf(tmp_path / "extra.gguf", tensors=t))
    with pytest.raises(LmsmithError, match="embedding_length is missing"):
        check_gguf(write_gguf(tmp_path / "nohidden.gguf", hidden=None))
    with pytest.raises(LmsmithError, match="token_embd.weight has shape"):
        check_gguf(write_gguf(tmp_path / "shape.gguf", hidden=4096))


def test_truncated_file_is_refused(tmp_path):
    p = write_gguf(tmp_path / "cut.gguf")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 1000])
    with pytest.raises(LmsmithError, match="runs past the end|not a readable GGUF"):
        check_gguf(p)
    p.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 61)  # 69 bytes of nonsense
    with pytest.raises(LmsmithError, match="GGUF"):
        check_gguf(p)
