"""Several nodes through torchrun's c10d rendezvous: the command line, its refusals, and two loopback "nodes"."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftsdk import ConfigError, plugins
from ftsdk.plugin.jobs import LaunchRequest
from ftsdk.training.distributed.config import DistributedConfig
from ftsdk.training.distributed.launch import OVERRIDES_VARIABLE, overrides_from, with_overrides
from ftsdk.training.distributed.world import World, check_world, current_world, elastic_restart
from tests.training.test_distributed import FLOAT32, ROOT, adapter, float32_single, losses, write_recipe  # noqa: F401

ARGV = ["train", "r.yaml", "--output-dir", "out"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(request: LaunchRequest) -> list[str]:
    return plugins.create("launcher", "torchrun").command(request)  # type: ignore[attr-defined]


def test_the_command_line_sets_the_distributed_section_and_the_processes_inherit_it():
    given = overrides_from({"nproc": 2, "nnodes": 3, "rdzv_endpoint": "head:29400", "node_rank": 1, "recipe": "r"},
                           env={})
    assert given == {"nproc": 2, "nnodes": 3, "rdzv_endpoint": "head:29400"}  # node_rank is torchrun's alone
    config = with_overrides(DistributedConfig(strategy="fsdp2"), given)
    assert (config.strategy, config.world_size, config.rdzv_endpoint) == ("fsdp2", 6, "head:29400")
    # the processes torchrun starts get no flags (torchrun would take --nproc): the variable carries them
    assert overrides_from({"nproc": None}, env={OVERRIDES_VARIABLE: json.dumps(given)}) == given
    assert with_overrides(None, {}) is None
    with pytest.raises(ConfigError, match="nnodes"):
        with_overrides(None, {"nnodes": 0})
    with pytest.raises(ConfigError, match="rdzv_endpoint"):
        with_overrides(None, {"rdzv_endpoint": "head:29400; rm -rf /"})
    # launch settings may change between a run and its resumption: they stay out of the checkpoint fingerprint
    assert "rdzv_endpoint" not in config.model_dump() and "max_restarts" not in config.model_dump()


def test_the_world_size_is_nodes_times_processes():
    two_nodes = current_world({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                               "TORCHELASTIC_RUN_ID": "x"})
    check_world(DistributedConfig(nproc=2, nnodes=2), two_nodes, "cpu")
    with pytest.raises(ConfigError, match="nproc is 2 x nnodes 3 but this process sees a world of 4"):
        check_world(DistributedConfig(nproc=2, nnodes=3), two_nodes, "cpu")
    assert current_world({"FTSDK_LAUNCHER": "ray", "WORLD_SIZE": "2", "ACCELERATE_TORCH_DEVICE": "cpu"}).launcher \
        == "ray"
    assert World().launcher is None


def test_torchrun_joins_the_c10d_rendezvous_on_several_nodes(tmp_path):
    one = LaunchRequest(ARGV, DistributedConfig(nproc=2), tmp_path / "out")
    command = torchrun(one)
    assert command[:4] == [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    assert "--nproc-per-node=2" in command and command[-5:] == ["-m", "ftsdk.cli", *ARGV][-5:]
    several = LaunchRequest(ARGV, DistributedConfig(nproc=2, nnodes=2, rdzv_endpoint="head:29400", max_restarts=3),
                            tmp_path / "out", node_rank=1)
    options = torchrun(several)[3:torchrun(several).index("-m", 3)]
    assert options[:5] == ["--nnodes=2", "--node-rank=1", "--rdzv-backend=c10d", "--rdzv-endpoint=head:29400",
                           f"--rdzv-id={several.rdzv_id}"]
    assert "--max-restarts=3" in options and "--standalone" not in options
    # the same command on every node gives the same rendezvous id; another output another one
    assert several.rdzv_id == LaunchRequest(ARGV, several.distributed, tmp_path / "out").rdzv_id
    assert several.rdzv_id != LaunchRequest(ARGV, several.distributed, tmp_path / "other").rdzv_id
    named = DistributedConfig(nnodes=2, rdzv_endpoint="head", rdzv_id="job-7")
    assert LaunchRequest(ARGV, named, tmp_path).rdzv_id == "job-7"


def test_several_nodes_without_an_endpoint_are_refused(tiny_model_dir, chat_data, tmp_path, capsys):
    from ftsdk.cli import main

    recipe = write_recipe(tmp_path, tiny_model_dir, chat_data[0], "run", {"max_steps": 1}, {"strategy": "ddp"})
    assert main(["train", str(recipe), "--nnodes", "2"]) == 2
    error = capsys.readouterr().err
    assert "no rendezvous endpoint" in error and "--rdzv-endpoint" in error and not (tmp_path / "run").exists()
    assert main(["train", str(recipe), "--nnodes", "2", "--rdzv-endpoint", "a b"]) == 2
    assert "rdzv_endpoint" in capsys.readouterr().err


def test_an_elastic_restart_continues_only_from_a_sealed_checkpoint(tmp_path):
    from ftsdk.training.checkpoints import checkpoints_dir, seal

    output = tmp_path / "run"
    assert not elastic_restart(output, env={"TORCHELASTIC_RESTART_COUNT": "1"})  # nothing sealed yet: fresh
    folder = checkpoints_dir(output) / "checkpoint-2"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    seal(folder, 2, {})
    assert elastic_restart(output, env={"TORCHELASTIC_RESTART_COUNT": "1"})
    assert elastic_restart(output, env={"SLURM_RESTART_COUNT": "2"})  # a requeued Slurm job
    assert not elastic_restart(output, env={"TORCHELASTIC_RESTART_COUNT": "0"})  # a first start


#: each "node" reports the rank the rendezvous gave it and a sum over the group (gloo all_reduce)
GROUP_PROBE = """
import json, os, sys
import torch, torch.distributed as dist
dist.init_process_group("gloo")
total = torch.tensor([dist.get_rank() + 1.0])
dist.all_reduce(total)
with open(os.path.join(sys.argv[1], "rank%d.json" % dist.get_rank()), "w") as f:
    json.dump({"world": dist.get_world_size(), "sum": total.item(), "run": os.environ["TORCHELASTIC_RUN_ID"]}, f)
dist.destroy_process_group()
"""


def test_two_torchrun_agents_meet_at_the_rendezvous(tmp_path):
    """ftsdk's torchrun options for two nodes, with a tiny probe for the training: the agents form one group."""
    probe = tmp_path / "probe.py"
    probe.write_text(GROUP_PROBE)
    config = DistributedConfig(nproc=1, nnodes=2, rdzv_endpoint=f"127.0.0.1:{free_port()}")
    command = torchrun(LaunchRequest(ARGV, config, tmp_path / "out"))
    command = [*command[:command.index("-m", 3)], str(probe), str(tmp_path)]  # the probe instead of ftsdk
    agents = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    for agent in agents:
        assert agent.wait(timeout=120) == 0, agent.stderr.read()[-2000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(report["world"] == 2 and report["sum"] == 3.0 for report in reports)
    assert reports[0]["run"] == reports[1]["run"]


def ftsdk_node(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ftsdk.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow  # two torchrun agents, each training a tiny model: ~60 s on a shared 2-core machine
def test_two_nodes_on_loopback_match_one_process_of_the_same_global_batch(
        float32_single, tiny_model_dir, chat_data, tmp_path):  # noqa: F811
    """The same `ftsdk train --nnodes 2 --rdzv-endpoint` on two "nodes" (one process each) = one process."""
    recipe = write_recipe(tmp_path, tiny_model_dir, chat_data[0], "nodes", FLOAT32 | {"batch_size": 4},
                          {"strategy": "ddp", "nproc": 1})
    same = ["train", str(recipe), "--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{free_port()}"]
    nodes = [ftsdk_node(*same) for _ in range(2)]
    for node in nodes:
        _, stderr = node.communicate(timeout=500)
        assert node.returncode == 0, stderr[-3000:]
    manifest = json.loads((tmp_path / "nodes" / "ftsdk.json").read_text())
    assert (manifest["distributed"]["world_size"], manifest["distributed"]["nnodes"]) == (2, 2)
    expected, got = adapter(float32_single["lora"]), adapter(tmp_path / "nodes")
    assert expected.keys() == got.keys()
    assert max(float((expected[k] - got[k]).abs().max()) for k in expected) == 0.0
    assert losses(tmp_path / "nodes") == pytest.approx(losses(float32_single["lora"]), abs=1e-6)


def processes_with(marker: str, **variables: str) -> list[int]:
    """The processes whose environment holds ``FTSDK_TEST_MARKER=marker`` and ``variables`` (read from /proc)."""
    wanted = {"FTSDK_TEST_MARKER": marker, **variables}
    found = []
    for entry in Path("/proc").iterdir():
        try:
            env = dict(item.split("=", 1) for item in (entry / "environ").read_text().split("\0") if "=" in item)
        except (OSError, ValueError):
            continue
        if all(env.get(key) == value for key, value in wanted.items()):
            found.append(int(entry.name))
    return found


@pytest.mark.slow  # two 2-process trainings, one restarted: ~2 min on a shared 2-core machine
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
@pytest.mark.skipif(not os.environ.get("FTSDK_ELASTIC_TEST"), reason="known to hang: the restarted gloo group "
                    "sometimes never forms (seen twice); run it with FTSDK_ELASTIC_TEST=1 while that is open")
def test_a_killed_worker_is_restarted_and_the_run_ends_as_an_uninterrupted_one(
        float32_single, tiny_model_dir, chat_data, tmp_path):  # noqa: F811
    """`ftsdk train --max-restarts 2`: SIGKILL one worker mid-run; torchrun restarts both, they resume from the
    newest sealed checkpoint, and the adapter equals the uninterrupted single process's."""
    from ftsdk.training.checkpoints import checkpoints_dir, complete_checkpoints

    recipe = write_recipe(tmp_path, tiny_model_dir, chat_data[0], "elastic", FLOAT32 | {"batch_size": 4,
                          "save_steps": 1, "save_total_limit": 2}, {"strategy": "ddp"})
    output = tmp_path / "elastic"
    # two restarts allowed: once, on this loaded machine, the restarted group's gloo mesh failed to connect
    run = subprocess.Popen([sys.executable, "-m", "ftsdk.cli", "train", "--nproc", "2", "--max-restarts", "2",
                            str(recipe)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "FTSDK_TEST_MARKER": str(tmp_path)})
    deadline = time.monotonic() + 400
    while not complete_checkpoints(checkpoints_dir(output)):
        assert run.poll() is None, run.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    (victim,) = processes_with(str(tmp_path), RANK="1", TORCHELASTIC_RESTART_COUNT="0")
    os.kill(victim, signal.SIGKILL)  # mid-run: 6 steps, a checkpoint after each
    restarted = []
    while run.poll() is None and not restarted:  # torchrun starts the worker group again: attempt 1
        restarted = processes_with(str(tmp_path), TORCHELASTIC_RESTART_COUNT="1")
        time.sleep(0.05)
    assert restarted, run.stderr.read()[-3000:]
    _, stderr = run.communicate(timeout=500)
    assert run.returncode == 0, stderr[-3000:]
    assert not output.with_name("elastic.checkpoints").exists()
    history = json.loads((output / "log_history.json").read_text())
    assert max(entry.get("step", 0) for entry in history) == 6
    expected, got = adapter(float32_single["lora"]), adapter(output)
    assert max(float((expected[k] - got[k]).abs().max()) for k in expected) == 0.0
    assert losses(output) == pytest.approx(losses(float32_single["lora"]), abs=1e-6)
