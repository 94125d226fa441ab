"""Run llm-compressor's GPTQ or Wanda on a model with lmsmith's calibration windows; save a dense HF copy.

Runs in a separate interpreter that has llmcompressor installed (it pins transformers<=5.17, older than
lmsmith's), called by bench/compress/compress_quality.py from the repository root (the `bench` package puts
`src/` on the path):

    python -m bench.compress._llmcompressor_run SRC OUT gptq|wanda CALIBRATION SAMPLES SEQ_LEN GROUP_SIZE

GPTQ: int4, asymmetric, group size GROUP_SIZE, activation order with contiguous groups ("weight"), 1%
dampening, lm_head skipped: the settings of `lmsmith compress quantize --algorithm gptq`. Wanda: 50%
unstructured. The weights llm-compressor leaves in the model (already rounded / masked) are copied into a
plain model of the source's class and saved, so lmsmith measures them exactly like its own outputs.
"""

from __future__ import annotations

import sys


def main(src: str, out: str, scheme: str, cal: str, samples: int, seq_len: int, group: int) -> None:
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmsmith.compress.calibration import CalibrationSpec, calibration_ids

    tok = AutoTokenizer.from_pretrained(src)
    ids = calibration_ids(tok, CalibrationSpec(cal, samples, seq_len))  # the windows lmsmith calibrates on
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    if scheme == "gptq":
        from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
        from llmcompressor.modifiers.quantization import GPTQModifier

        weights = QuantizationArgs(num_bits=4, type="int", symmetric=False, strategy="group", group_size=group,
                                   actorder="weight")
        recipe = GPTQModifier(config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=weights)},
                              ignore=["lm_head"], dampening_frac=0.01)
    else:
        from llmcompressor.modifiers.pruning import WandaPruningModifier

        recipe = WandaPruningModifier(sparsity=0.5, mask_structure="0:0", targets=["Linear"], ignore=["lm_head"])
    oneshot(model=model, dataset=ds, recipe=recipe, num_calibration_samples=samples, max_seq_length=seq_len)
    clean = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    keys = set(clean.state_dict())
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items() if k in keys}
    missing = keys - set(state)
    assert not [k for k in missing if not k.endswith("lm_head.weight")], sorted(missing)[:3]
    clean.load_state_dict(state, strict=False)
    clean.save_pretrained(out)
    tok.save_pretrained(out)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], a[2], a[3], int(a[4]), int(a[5]), int(a[6]))
