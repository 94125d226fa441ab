"""`lmsmith bench offline`: exact lengths, seeded mix, clear errors."""
import json

import pytest

from lmsmith.cli import main
from lmsmith.errors import LmsmithError
from lmsmith.serve.bench import request_lengths
from lmsmith.serve.bench_offline import bench_offline


def test_fixed_workload_generates_exact_lengths(tiny_dir):
    s = bench_offline(str(tiny_dir), requests=6, prompt_len=12, output_len=5, progress=False, device="cpu",
                      max_num_seqs=4)
    assert s["output_tokens"] == 6 * 5 and s["prompt_tokens"] == 6 * 12
    assert s["output_tok_per_s"] > 0 and s["ttft_p50_ms"] is not None and s["ttft_p50_ms"] <= s["ttft_p99_ms"]
    assert s["native_engine"] and s["clipped_to_context"] == 0


def test_mix_is_seeded_and_clipped_to_the_context(tiny_dir):
    a = bench_offline(str(tiny_dir), requests=8, prompt_len=200, output_len=200, dataset="sharegpt-mix", seed=3,
                      progress=False, device="cpu", max_num_seqs=8, max_model_len=256)
    want = request_lengths("sharegpt-mix", 8, 200, 200, 3)
    assert a["clipped_to_context"] == sum(p + o > 255 for p, o in want) > 0
    assert a["output_tokens"] <= sum(o for _, o in want)


def test_cli_json_and_errors(tiny_dir, capsys):
    assert main(["bench", "offline", str(tiny_dir), "--requests", "3", "--prompt-len", "8", "--output-len", "3",
                 "--device", "cpu", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["output_tokens"] == 9 and s["config"]["dataset"] == "fixed"
    with pytest.raises(LmsmithError, match="context"):
        bench_offline(str(tiny_dir), requests=2, prompt_len=10_000, output_len=4, progress=False, device="cpu")
    with pytest.raises(LmsmithError, match="--requests"):
        bench_offline(str(tiny_dir), requests=0, progress=False)
