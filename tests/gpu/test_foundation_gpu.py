"""Foundation on CUDA: registry versions load onto the GPU in bf16 and generate."""

import torch

from lmsmith.models import load_model, load_tokenizer, parse_dtype


def test_auto_dtype_is_bf16_on_cuda():
    assert parse_dtype("auto", "cuda") == torch.bfloat16


def test_registered_tiny_model_generates_on_cuda(tiny_ref):
    model = load_model(tiny_ref, dtype="auto", device="cuda")
    tok = load_tokenizer(tiny_ref)
    assert next(model.parameters()).is_cuda and next(model.parameters()).dtype == torch.bfloat16
    ids = torch.tensor([tok("Praha je")["input_ids"]], device="cuda")
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 8
