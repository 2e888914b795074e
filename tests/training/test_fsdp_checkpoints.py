"""Checkpoints of every strategy: FSDP2's sharded DCP checkpoints (resharded on another world size), and a run
killed with SIGKILL under DDP, FSDP2 and ZeRO-3 resumed to the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftsdk import ConfigError
from ftsdk.training.checkpoints import checkpoints_dir, verify
from ftsdk.training.distributed.config import DistributedConfig
from ftsdk.training.distributed.strategies import check_strategy
from tests.training.test_distributed import FLOAT32, ROOT, adapter, float32_single, ftsdk, losses, tiny_llama, write_recipe  # noqa: F401
from tests.training.test_multinode import processes_with


def test_restarts_without_checkpoints_are_refused():
    with pytest.raises(ConfigError, match="would train from step 0 again"):
        check_strategy(DistributedConfig(max_restarts=2), save_steps=None)
    check_strategy(DistributedConfig(max_restarts=2), save_steps=5)
    check_strategy(DistributedConfig(strategy="fsdp2"), save_steps=5)  # fsdp2 checkpoints are sharded now


def adamw_step(model):
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(0)
    model(torch.randint(0, 64, (2, 8)), labels=torch.randint(0, 64, (2, 8))).loss.backward()
    optimizer.step()
    return optimizer


def save_on_two(rank: int, folder: str, port: int) -> None:
    """One of two processes: shard the tiny model, take one AdamW step, save a sharded checkpoint with DCP."""
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    from ftsdk.training.distributed.fsdp import MODEL_SHARDS, OPTIMIZER_SHARDS, shard_model, trainable_state
    from ftsdk.training.distributed.world import World

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(1)
    model = tiny_llama()
    shard_model(model, DistributedConfig(strategy="fsdp2"), World(rank=rank, size=2), "cpu", "no")
    optimizer = adamw_step(model)
    dcp.save(trainable_state(model), checkpoint_id=Path(folder) / MODEL_SHARDS)
    dcp.save(get_optimizer_state_dict(model, optimizer), checkpoint_id=Path(folder) / OPTIMIZER_SHARDS)
    from ftsdk.training.distributed.fsdp import full_state_dict

    with full_state_dict(model, rank == 0):
        if rank == 0:
            torch.save({k: v.clone() for k, v in model.state_dict().items()}, Path(folder) / "whole.pt")
    dist.destroy_process_group()


def test_a_sharded_checkpoint_of_two_processes_loads_into_one(tmp_path):
    """DCP reshards: two processes' shards of the weights and AdamW state load into a world of one."""
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from torch.distributed.tensor import DTensor

    from ftsdk.training.distributed.fsdp import load_sharded_model, load_sharded_optimizer, shard_model
    from ftsdk.training.distributed.world import World
    from tests.training.test_multinode import free_port

    mp.spawn(save_on_two, args=(str(tmp_path), free_port()), nprocs=2, join=True)
    shard_files = sorted(p.name for p in (tmp_path / "fsdp2-model").iterdir())
    assert shard_files == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # each process wrote its own shards

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        torch.manual_seed(2)  # other initial weights: all must come from the checkpoint
        model = tiny_llama()
        shard_model(model, DistributedConfig(strategy="fsdp2"), World(), "cpu", "no")
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        load_sharded_model(model, tmp_path)
        load_sharded_optimizer(model, optimizer, tmp_path)
        whole = torch.load(tmp_path / "whole.pt")
        for name, parameter in model.named_parameters():
            assert isinstance(parameter, DTensor)
            assert torch.equal(parameter.full_tensor(), whole[name]), name
        steps = {float(state["step"]) for state in optimizer.state.values()}
        assert steps == {1.0}  # AdamW's state after the one step, not a fresh one
        assert any(float(state["exp_avg"].full_tensor().abs().max()) > 0 for state in optimizer.state.values())
    finally:
        dist.destroy_process_group()


#: under torchrun: `ftsdk train RECIPE [--resume]`, each step slowed so that the test can kill between checkpoints
SLOW_TRAIN = """
import sys, time

import ftsdk.training.distributed.strategies as strategies
from transformers import TrainerCallback

check_trainer = strategies.check_trainer


class Slow(TrainerCallback):
    def on_step_end(self, *args, **kwargs):
        time.sleep(float(sys.argv[2]))


def slowed(trainer):
    check_trainer(trainer)
    trainer.add_callback(Slow())


strategies.check_trainer = slowed
from ftsdk.cli import main

sys.exit(main(["train", sys.argv[1], *sys.argv[3:]]))
"""

#: largest difference of a resumed run's adapter from the uninterrupted single process (float32)
RESUME_TOLERANCE = {"ddp": 0.0, "fsdp2": 1e-5, "deepspeed_zero3": 1e-5}


def torchrun_train(script: Path, recipe: Path, pause: float, marker: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script),
               str(recipe), str(pause)]
    return subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "FTSDK_TEST_MARKER": marker})


@pytest.mark.slow  # three 2-process trainings per strategy: ~2-3 min each on a shared 2-core machine
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2", "deepspeed_zero3"])
def test_sigkill_then_resume_equals_an_uninterrupted_run(
        strategy, float32_single, tiny_model_dir, chat_data, tmp_path):  # noqa: F811
    if strategy.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    recipe = write_recipe(tmp_path, tiny_model_dir, chat_data[0], "run",
                          FLOAT32 | {"batch_size": 4, "save_steps": 2, "save_total_limit": 2},
                          {"strategy": strategy, "nproc": 2})
    script = tmp_path / "slow_train.py"
    script.write_text(SLOW_TRAIN)
    output = tmp_path / "run"
    root = checkpoints_dir(output)
    child = torchrun_train(script, recipe, 1.5, marker=str(tmp_path))
    deadline = time.monotonic() + 400
    while verify(root / "checkpoint-2") is None:
        assert child.poll() is None, child.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for pid in processes_with(str(tmp_path)):  # the agent and both processes (in sessions of their own), at once
        os.kill(pid, signal.SIGKILL)
    child.wait()
    assert not output.exists()
    if strategy == "fsdp2":  # every process's shards, sealed with their sizes
        sealed = json.loads((root / "checkpoint-2" / "ftsdk-checkpoint.json").read_text())["files"]
        assert {"fsdp2-model/__0_0.distcp", "fsdp2-model/__1_0.distcp", "fsdp2-optimizer/.metadata",
                "scheduler.pt", "rng_state_1.pth"} <= sealed.keys()

    resumed = ftsdk("train", "--nproc", "2", str(recipe), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not root.exists()
    expected, got = adapter(float32_single["lora"]), adapter(output)
    assert expected.keys() == got.keys()
    largest = max(float((expected[k] - got[k]).abs().max()) for k in expected)
    assert largest <= RESUME_TOLERANCE[strategy], largest
    assert losses(output) == pytest.approx(losses(float32_single["lora"]), abs=1e-5)
