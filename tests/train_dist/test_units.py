"""In-process pieces of the distributed API: sharded data, batch rebalancing, checkpointing modes, launch."""

import pytest
import torch

from lmsmith.errors import LmsmithError
from lmsmith.train import distributed as D
from lmsmith.train.data import Loader
from lmsmith.train.launch import strip_nproc, torchrun_command


def _collate(rows):
    ids = torch.tensor(rows)[:, None]
    return {"input_ids": ids, "labels": ids.clone()}


def _rows(batch):
    return [x for x, y in zip(batch["input_ids"].flatten().tolist(), batch["labels"].flatten().tolist()) if y != -100]


def test_ranks_read_disjoint_slices_of_the_single_process_batch():
    data = list(range(37))
    single = Loader(data, 6, _collate, seed=3)
    ranks = [D.ShardedLoader(data, 2, _collate, seed=3, rank=r, world=3) for r in range(3)]
    for _ in range(10):  # crosses an epoch boundary
        want = _rows(single.next())
        got = [x for rl in ranks for x in _rows(rl.next())]  # stand-in rows (all labels ignored) excluded
        assert sorted(got) == sorted(want)
        assert len(set(got)) == len(got)
    assert ranks[0].state() == single.state()  # the position is global: it resumes on any world size


def test_rebalance_keeps_global_batch():
    assert D.rebalance(2, 1, 2, 1) == (2, 2)
    assert D.rebalance(4, 1, 1, 2) == (2, 1)
    assert D.rebalance(4, 2, 2, 4) == (4, 1)
    with pytest.raises(LmsmithError, match="cannot be split"):
        D.rebalance(1, 1, 3, 2)


def test_strategy_needs_a_launch():
    env = D.DistEnv()
    assert D.parallel_strategy(False, False, env) == "none"
    with pytest.raises(LmsmithError, match="--nproc"):
        D.parallel_strategy(True, False, env)
    with pytest.raises(LmsmithError, match="exclude"):
        D.parallel_strategy(True, True, D.DistEnv(world=2, enabled=True))
    assert D.parallel_strategy(False, False, D.DistEnv(world=2, enabled=True)) == "fsdp"


def test_launch_command_line():
    argv = ["train", "pretrain", "--nproc", "2", "--data", "x.txt", "--nproc=3"]
    assert strip_nproc(argv) == ["train", "pretrain", "--data", "x.txt"]
    cmd = torchrun_command(2, ["train"])
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"] and cmd[-3:] == ["-m", "lmsmith.train.launch", "train"]
    multi = torchrun_command(8, ["train"], nnodes=2, node_rank=1, rdzv_endpoint="host0:29500")
    assert "--standalone" not in multi and "host0:29500" in multi and "c10d" in multi


@pytest.mark.parametrize("mode", ["full", "selective"])
def test_activation_checkpointing_same_grads_same_names(tiny_dir, mode):
    from transformers import AutoModelForCausalLM

    ids = torch.randint(3, 200, (2, 16), generator=torch.Generator().manual_seed(0))
    out = []
    for m in ("none", mode):
        model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
        names = [n for n, _ in model.named_parameters()]
        wrapped = D.apply_activation_checkpointing(model, m)
        assert [n for n, _ in model.named_parameters()] == names  # checkpoints stay portable
        assert wrapped == (0 if m == "none" else len(D.decoder_blocks(model)))
        model(input_ids=ids, labels=ids).loss.backward()
        out.append({n: p.grad for n, p in model.named_parameters()})
    for n in out[0]:
        assert torch.allclose(out[0][n], out[1][n], atol=1e-6), n


def test_blocks_found_under_lora_and_compile_in_place(tiny_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    n = model.config.num_hidden_layers
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert len(D.decoder_blocks(peft)) == n
    names = [k for k, _ in peft.named_parameters()]
    assert D.compile_blocks(peft, backend="eager") == n
    assert [k for k, _ in peft.named_parameters()] == names


def test_compile_mode_from_the_environment(tiny_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: seen.append(kw))
    monkeypatch.setenv("LMSMITH_COMPILE_MODE", "max-autotune-no-cudagraphs")
    n = D.compile_blocks(model, backend="eager")
    assert n == len(seen) and seen[0] == {"backend": "eager", "mode": "max-autotune-no-cudagraphs"}
    seen.clear()
    monkeypatch.delenv("LMSMITH_COMPILE_MODE")
    D.compile_blocks(model)
    assert seen[0] == {}


def test_unknown_ac_mode():
    with pytest.raises(LmsmithError, match="checkpointing mode"):
        D.apply_activation_checkpointing(torch.nn.Linear(2, 2), "some")  # type: ignore[arg-type]
