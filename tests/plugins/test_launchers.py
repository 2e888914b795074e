"""Launcher plugins: listed like the others; slurm's sbatch script rendered, submitted and its launch line run."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ftsdk import ConfigError, plugins
from ftsdk.cli import main
from tests.training.test_distributed import FLOAT32, ROOT, adapter, float32_single, losses, write_recipe  # noqa: F401
from tests.training.test_multinode import GROUP_PROBE, free_port

LAUNCHERS = ("torchrun", "slurm", "ray")


def test_launchers_are_plugins_listed_by_ftsdk_plugins(capsys):
    assert {info.name for info in plugins.list_plugins("launcher")} >= set(LAUNCHERS)
    assert main(["plugins", "--json"]) == 0
    listed = {(row["kind"], row["name"]) for row in json.loads(capsys.readouterr().out)}
    assert {("launcher", name) for name in LAUNCHERS} <= listed
    assert main(["schema", "launcher", "slurm"]) == 0
    assert "partition" in json.loads(capsys.readouterr().out)["properties"]
    with pytest.raises(ConfigError, match="launcher_config"):
        plugins.create("launcher", "slurm", {"partitoin": "gpu"})


def test_a_third_party_launcher_registers_through_register_launchers(tiny_model_dir, chat_data, tmp_path):
    """``register_launchers`` is the hook: a registered launcher receives the request of `ftsdk train`."""
    from ftsdk import Launcher, hookimpl

    received = []

    class Recorder(Launcher):
        name = "recorder"
        summary = "records the launch request"

        def launch(self, request):
            received.append(request)
            return 0

    class Hooks:
        @staticmethod
        @hookimpl
        def register_launchers(register):
            register(Recorder)

    name = plugins.register(Hooks(), name="recorder-test")
    try:
        recipe = write_recipe(tmp_path, tiny_model_dir, chat_data[0], "run", {"max_steps": 1},
                              {"launcher": "recorder", "nproc": 3})
        assert main(["train", str(recipe), "--nnodes", "2", "--max-restarts", "1"]) == 0
    finally:
        plugins.unregister(name=name)
    (request,) = received
    assert request.argv == ["train", str(recipe)] and request.output_dir == tmp_path / "run"
    assert (request.distributed.world_size, request.distributed.max_restarts) == (6, 1)
    assert json.loads(request.env["FTSDK_DISTRIBUTED"]) == {"nnodes": 2, "max_restarts": 1}


def slurm_recipe(folder: Path, model: Path, train: Path, launcher_config: dict | None = None,
                 nproc: int = 1) -> Path:
    distributed = {"strategy": "ddp", "nproc": nproc, "launcher": "slurm", "launcher_config": launcher_config or {}}
    return write_recipe(folder, model, train, "slurm", FLOAT32 | {"batch_size": 4}, distributed)


def test_slurm_renders_an_sbatch_script_of_srun_and_torchrun(tiny_model_dir, chat_data, tmp_path, capsys):
    options = {"partition": "gpu", "time": "04:00:00", "gpus_per_node": 4, "requeue": True,
               "directives": ["--exclusive"], "setup": ["module load cuda"]}
    recipe = slurm_recipe(tmp_path, tiny_model_dir, chat_data[0], options, nproc=4)
    assert main(["train", str(recipe), "--nnodes", "2", "--max-restarts", "2"]) == 0
    script = tmp_path / "slurm.sbatch"
    assert f"wrote {script}" in capsys.readouterr().out and not (tmp_path / "slurm").exists()
    text = script.read_text()
    for directive in ("--nodes=2", "--ntasks-per-node=1", "--partition=gpu", "--time=04:00:00",
                      "--gpus-per-node=4", "--requeue", "--exclusive", f"--chdir={Path.cwd()}"):
        assert f"#SBATCH {directive}\n" in text, directive
    assert text.index("module load cuda") < text.index("srun ")
    line = launch_line(text)
    assert '--nnodes="$SLURM_NNODES"' in line and '--rdzv-id=ftsdk-"$SLURM_JOB_ID"' in line
    assert "--rdzv-backend=c10d" in line and "--nproc-per-node=4" in line and "--max-restarts=2" in line
    assert shlex.split(line)[-2:] == ["train", str(recipe)]
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0  # valid shell


def test_slurm_refusals(tiny_model_dir, chat_data, tmp_path, capsys, monkeypatch):
    recipe = slurm_recipe(tmp_path, tiny_model_dir, chat_data[0])
    assert main(["train", str(recipe), "--rdzv-endpoint", "h:1"]) == 2
    assert "takes the rendezvous from the job" in capsys.readouterr().err
    assert main(["train", str(recipe), "--node-rank", "1"]) == 2
    assert "SLURM_NODEID" in capsys.readouterr().err
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    assert main(["train", str(recipe), "--submit"]) == 2
    assert "sbatch is not found" in capsys.readouterr().err and not (tmp_path / "slurm.sbatch").exists()
    bad = slurm_recipe(tmp_path, tiny_model_dir, chat_data[0], {"directives": ["exclusive"]})
    assert main(["train", str(bad)]) == 2
    assert "not an sbatch option" in capsys.readouterr().err


def test_slurm_submits_with_sbatch(tiny_model_dir, chat_data, tmp_path, capsys, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"  # a stand-in sbatch that records what it was given
    sbatch.write_text(f'#!/bin/sh\necho "$1" > {tmp_path}/submitted\necho "Submitted batch job 4242"\n')
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    recipe = slurm_recipe(tmp_path, tiny_model_dir, chat_data[0], {"script": str(tmp_path / "job.sh")})
    assert main(["train", str(recipe), "--submit"]) == 0
    assert "Submitted batch job 4242" in capsys.readouterr().out
    assert (tmp_path / "submitted").read_text().strip() == str(tmp_path / "job.sh")


def launch_line(script: str) -> str:
    """The launch line of an sbatch script (the command srun runs on every node)."""
    (assignment,) = [line for line in script.splitlines() if line.startswith("FTSDK_LAUNCH=")]
    return shlex.split(assignment.removeprefix("FTSDK_LAUNCH="))[0]


def run_nodes(script: Path, nodes: int, port: int, tmp_path: Path) -> list[subprocess.CompletedProcess]:
    """Run the script as srun would on ``nodes`` nodes of job 4242: everything but srun, then the launch line."""
    text = script.read_text()
    body = [line for line in text.splitlines() if not line.startswith("srun ")]
    local = tmp_path / "node.sh"
    local.write_text("\n".join([*body, 'bash -c "$FTSDK_LAUNCH"']) + "\n")
    env = {**os.environ, "SLURM_NNODES": str(nodes), "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "localhost",
           "FTSDK_RDZV_HOST": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen(["bash", str(local)], cwd=ROOT, env=env | {"SLURM_NODEID": str(node)},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for node in range(nodes)]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=500)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def test_the_launch_line_forms_one_group_from_the_slurm_variables(tiny_model_dir, chat_data, tmp_path):
    """Two "nodes" of a rendered script (a probe standing in for the training): one gloo group of two."""
    shim = tmp_path / "python"  # the script's Python: runs torchrun with the probe instead of `-m ftsdk.cli ...`
    probe = tmp_path / "probe.py"
    probe.write_text(GROUP_PROBE)
    shim.write_text(f'#!/bin/bash\nargs=("$@"); n=${{#args[@]}}\nfor ((i=2; i<n; i++)); do [ "${{args[i]}}" = -m ] '
                    f'&& break; done\nexec {sys.executable} "${{args[@]:0:i}}" {probe} {tmp_path}\n')
    shim.chmod(0o755)
    port = free_port()
    recipe = slurm_recipe(tmp_path, tiny_model_dir, chat_data[0], {"python": str(shim), "rdzv_port": port})
    assert main(["train", str(recipe), "--nnodes", "2"]) == 0
    for result in run_nodes(tmp_path / "slurm.sbatch", 2, port, tmp_path):
        assert result.returncode == 0, result.stderr[-2000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(report["world"] == 2 and report["sum"] == 3.0 for report in reports)
    assert reports[0]["run"] == "ftsdk-4242"  # the rendezvous id from SLURM_JOB_ID


@pytest.mark.slow  # two torchrun agents training a tiny model: ~60 s on a shared 2-core machine
def test_the_launch_line_trains_like_one_process(float32_single, tiny_model_dir, chat_data, tmp_path):  # noqa: F811
    port = free_port()
    recipe = slurm_recipe(tmp_path, tiny_model_dir, chat_data[0], {"rdzv_port": port})
    assert main(["train", str(recipe), "--nnodes", "2"]) == 0
    for result in run_nodes(tmp_path / "slurm.sbatch", 2, port, tmp_path):
        assert result.returncode == 0, result.stderr[-3000:]
    expected, got = adapter(float32_single["lora"]), adapter(tmp_path / "slurm")
    assert max(float((expected[k] - got[k]).abs().max()) for k in expected) == 0.0
    assert losses(tmp_path / "slurm") == pytest.approx(losses(float32_single["lora"]), abs=1e-6)


def test_ray_refuses_what_it_cannot_do(tiny_model_dir, chat_data, tmp_path, capsys):
    recipe = write_recipe(tmp_path, tiny_model_dir, chat_data[0], "ray", {"max_steps": 1, "save_steps": 1},
                          {"strategy": "ddp", "nproc": 2, "launcher": "ray"})
    assert main(["train", str(recipe), "--max-restarts", "1"]) == 2
    assert "does not restart workers" in capsys.readouterr().err
    assert main(["train", str(recipe), "--rdzv-endpoint", "h:1"]) == 2
    assert "Ray forms the process group itself" in capsys.readouterr().err


def test_ray_without_ray_installed_says_how_to_install(monkeypatch):
    import importlib.util

    from ftsdk.plugin.errors import PluginUnavailableError

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    assert not plugins.get("launcher", "ray").available
    with pytest.raises(PluginUnavailableError, match="ray") as error:
        plugins.create("launcher", "ray")
    assert "ftsdk[ray]" in str(error.value.hint)


@pytest.mark.slow  # a local Ray instance and two Ray Train workers training a tiny model: ~1-2 min
def test_ray_train_workers_train_like_one_process(float32_single, tiny_model_dir, chat_data,  # noqa: F811
                                                  tmp_path):
    """Ray Train's TorchTrainer with 2 CPU workers on a local Ray cluster = one process of the same global batch."""
    pytest.importorskip("ray.train")
    recipe = write_recipe(tmp_path, tiny_model_dir, chat_data[0], "ray", FLOAT32 | {"batch_size": 4},
                          {"strategy": "ddp", "launcher": "ray",
                           "launcher_config": {"storage_path": str(tmp_path / "ray-runs")}})
    result = subprocess.run([sys.executable, "-m", "ftsdk.cli", "train", "--nproc", "2", str(recipe)], cwd=ROOT,
                            capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    manifest = json.loads((tmp_path / "ray" / "ftsdk.json").read_text())
    assert manifest["distributed"]["world_size"] == 2
    expected, got = adapter(float32_single["lora"]), adapter(tmp_path / "ray")
    assert max(float((expected[k] - got[k]).abs().max()) for k in expected) == 0.0
    assert losses(tmp_path / "ray") == pytest.approx(losses(float32_single["lora"]), abs=1e-6)
