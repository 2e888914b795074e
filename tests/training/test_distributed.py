"""Distributed training: launch traps refused, strategy options, and 2-process runs equal to one process."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from ftsdk import ConfigError, plugins
from ftsdk.plugin.jobs import LaunchRequest
from ftsdk.training.distributed.config import DistributedConfig
from ftsdk.training.distributed.strategies import check_trainer, trainer_options
from ftsdk.training.distributed.world import World, check_world, current_world
from ftsdk.training.recipe import Recipe

ROOT = Path(__file__).parents[2]
TORCHRUN_TWO = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x"}


def test_the_world_comes_from_the_launcher_variables():
    assert current_world({}) == World()
    world = current_world(TORCHRUN_TWO)
    assert (world.rank, world.local_rank, world.size, world.launcher, world.is_main) == (1, 1, 2, "torchrun", False)
    assert current_world({"ACCELERATE_USE_CPU": "True", "MASTER_PORT": "29500"}).launcher == "accelerate"


def test_launch_traps_are_refused():
    alone_under_accelerate = current_world({"ACCELERATE_USE_CPU": "True"})
    with pytest.raises(ConfigError, match="alone") as error:
        check_world(DistributedConfig(), alone_under_accelerate, "cpu")
    assert "starts ONE process" in str(error.value)
    with pytest.raises(ConfigError, match="nproc is 4 but this process sees a world of 2"):
        check_world(DistributedConfig(nproc=4), current_world(TORCHRUN_TWO), "cpu")
    with pytest.raises(ConfigError, match="nccl"):
        check_world(DistributedConfig(backend="nccl"), current_world(TORCHRUN_TWO), "cpu")
    check_world(None, World(), "cpu")  # one plain process
    check_world(None, current_world(TORCHRUN_TWO), "cpu")  # a launcher without a distributed section: DDP
    check_world(DistributedConfig(nproc=1), World(), "cpu")


def test_a_trainer_that_fell_back_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")

    def trainer(world_size: int, kind: str, **args):
        options = {"world_size": world_size, "deepspeed": None, "fsdp": ""} | args
        return SimpleNamespace(args=SimpleNamespace(**options),
                               accelerator=SimpleNamespace(distributed_type=f"DistributedType.{kind}"))

    with pytest.raises(ConfigError, match="each process would train on its own"):
        check_trainer(trainer(1, "DEEPSPEED", deepspeed={"zero_optimization": {}}))  # use_cpu=False on a CPU
    with pytest.raises(ConfigError, match="the Trainer's own fsdp option is set"):  # DDP on the CPU
        check_trainer(trainer(2, "MULTI_CPU", fsdp="full_shard"))
    with pytest.raises(ConfigError, match="DeepSpeed was configured"):
        check_trainer(trainer(2, "MULTI_CPU", deepspeed={"zero_optimization": {}}))
    check_trainer(trainer(2, "MULTI_CPU"))


def test_strategies_become_trainer_options():
    two = current_world(TORCHRUN_TWO)
    assert trainer_options(None, World(), "cpu") == {}
    assert trainer_options(None, two, "cpu") == {"ddp_backend": "gloo", "ddp_find_unused_parameters": False}
    assert trainer_options(DistributedConfig(), two, "cuda")["ddp_backend"] == "nccl"
    zero2 = trainer_options(DistributedConfig(strategy="deepspeed_zero2"), two, "cpu")["deepspeed"]
    # DeepSpeed's own clipping default (1.0) would clip where training.max_grad_norm says not to
    assert zero2["gradient_clipping"] == "auto" and zero2["zero_optimization"] == {"stage": 2}
    assert "optimizer" not in zero2  # DeepSpeed steps the Trainer's own AdamW
    zero3 = DistributedConfig(strategy="deepspeed_zero3",
                              deepspeed_config={"zero_optimization": {"overlap_comm": True}})
    merged = trainer_options(zero3, two, "cpu")["deepspeed"]["zero_optimization"]
    assert merged == {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True, "overlap_comm": True}
    # fsdp2: ftsdk shards the model itself; the Trainer's fsdp= would fall back to DDP on the CPU
    assert trainer_options(DistributedConfig(strategy="fsdp2"), two, "cuda") == {"ddp_backend": "nccl"}
    assert trainer_options(DistributedConfig(strategy="fsdp2"), two, "cpu") == {"ddp_backend": "gloo"}
    with pytest.raises(ConfigError, match="offload_optimizer"):
        trainer_options(DistributedConfig(strategy="deepspeed_zero2", offload_optimizer=True), two, "cpu")


def test_the_top_level_parser_takes_the_deepspeed_launchers_local_rank():
    from ftsdk.cli import build_parser

    for before in (["--local_rank=1"], ["--local-rank", "1"]):  # `deepspeed` puts it before the command
        args = build_parser().parse_args([*before, "train", "r.yaml"])
        assert (args.command, args.recipe) == ("train", "r.yaml")


@pytest.fixture
def world_of_one():
    """A gloo process group of one process (FSDP2 over a mesh of size 1 still makes DTensors)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def test_an_fsdp2_model_is_checked_and_saved_whole(world_of_one):
    import torch
    from torch.distributed.tensor import DTensor

    from ftsdk.training.distributed.fsdp import decoder_layers, is_sharded, shard_model
    from ftsdk.training.distributed.strategies import full_parameters

    model = tiny_llama()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    shard_model(model, DistributedConfig(strategy="fsdp2"), World(), "cpu", "no")
    layers = decoder_layers(model)
    assert len(layers) == 2 and all(is_sharded(layer) for layer in [*layers, model])  # a unit per layer, and the root
    assert all(isinstance(p, DTensor) for p in model.parameters())
    trainer = SimpleNamespace(args=SimpleNamespace(world_size=1, deepspeed=None, fsdp=""), model=model,
                              accelerator=SimpleNamespace(distributed_type="DistributedType.MULTI_CPU"))
    with pytest.raises(ConfigError, match="would be wrapped again"):  # accelerate would put DDP around it
        check_trainer(trainer)
    model._is_accelerate_prepared = True  # what keep_sharded's prepare_model(evaluation_mode=True) sets
    check_trainer(trainer)
    with full_parameters(model, main=True):  # what Adapter.save reads: whole tensors, tied weights one tensor
        whole = model.state_dict()
        assert whole.keys() == before.keys() and all(torch.equal(whole[k], before[k]) for k in before)
        assert not any(isinstance(t, DTensor) for t in whole.values())
        assert whole["lm_head.weight"] is whole["model.embed_tokens.weight"]
    assert isinstance(model.state_dict()["lm_head.weight"], DTensor)  # sharded again after the block
    with pytest.raises(ConfigError, match="names no decoder layer class"):
        decoder_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_the_recipe_section_is_typed(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": "t.jsonl"}, "output_dir": "out",
                                    "distributed": {"strategy": "deepspeed_zero3", "nproc": 2}}))
    assert Recipe.from_yaml(path).distributed == DistributedConfig(strategy="deepspeed_zero3", nproc=2)
    path.write_text(yaml.safe_dump({"data": {"train": "t.jsonl"}, "output_dir": "out",
                                    "distributed": {"strategy": "zero"}}))
    with pytest.raises(ConfigError, match="distributed.strategy"):
        Recipe.from_yaml(path)


def test_the_relaunch_forwards_no_option_torchrun_would_take(tmp_path):
    from ftsdk.cli.train import _forwarded

    args = argparse.Namespace(recipe="r.yaml", output_dir="o", overwrite=True, resume=True, resume_from=None,
                              force_resume=True, nproc=2, nnodes=2, max_restarts=1, rdzv_endpoint="h:1")
    request = LaunchRequest(_forwarded(args), DistributedConfig(nproc=2), tmp_path / "o")
    command = plugins.create("launcher", "torchrun").command(request)
    assert command[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    script_args = command[command.index("ftsdk.cli") + 1:]
    assert script_args == ["train", "r.yaml", "--output-dir", "o", "--overwrite", "--resume", "--force-resume"]


def write_recipe(folder: Path, model: Path, train: Path, name: str, training: dict, distributed: dict | None,
                 adapter_name: str = "lora") -> Path:
    adapter_config = {"r": 8, "dropout": 0.0} if adapter_name == "lora" else {}
    recipe = {"model": str(model), "adapter": adapter_name, "adapter_config": adapter_config,
              "training": training, "data": {"train": str(train)}, "output_dir": str(folder / name)}
    if distributed is not None:
        recipe["distributed"] = distributed
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def ftsdk(*args: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    command = [*(launcher or [sys.executable, "-m"]), "ftsdk.cli", *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=500, cwd=ROOT)


def test_accelerate_cpu_launch_of_one_process_is_refused(tiny_model_dir, chat_data, tmp_path):
    """``accelerate launch --cpu --num_processes 2`` starts ONE process: ftsdk says so instead of training alone."""
    recipe = write_recipe(tmp_path, tiny_model_dir, chat_data[0], "run", {"max_steps": 2}, {"strategy": "ddp"})
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "-m"]
    result = ftsdk("train", str(recipe), launcher=accelerate)
    assert result.returncode != 0, result.stdout[-2000:]
    assert "asks for several processes, but this one is alone" in result.stderr
    assert "starts ONE process" in result.stderr and not (tmp_path / "run").exists()


#: 6 steps of 8 rows: one process as 2 x 4 accumulated, or 2 processes x 4 rows
STEPS = {"max_steps": 6, "learning_rate": 5e-3, "logging_steps": 1, "seed": 7, "max_grad_norm": 0.0, "threads": 1}


def adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def losses(folder: Path) -> list[float]:
    import json

    return [e["loss"] for e in json.loads((folder / "log_history.json").read_text()) if "loss" in e]


@pytest.mark.slow  # two processes under torchrun on a tiny model: ~50 s each on a shared 2-core machine
@pytest.mark.parametrize("strategy", ["ddp", "deepspeed_zero2", "deepspeed_zero3"])
def test_two_processes_match_one_process_of_the_same_global_batch(strategy, float32_single, tiny_model_dir,
                                                                   chat_data, tmp_path):
    """In float32 every strategy's sums differ from one process's at most in their order: the adapters are equal."""
    if strategy.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    recipe = write_recipe(tmp_path, tiny_model_dir, chat_data[0], strategy, FLOAT32 | {"batch_size": 4},
                          {"strategy": strategy})
    result = ftsdk("train", "--nproc", "2", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    manifest = json.loads((tmp_path / strategy / "ftsdk.json").read_text())
    assert manifest["distributed"]["world_size"] == 2 and manifest["distributed"]["strategy"] == strategy
    single = float32_single["lora"]
    expected, got = adapter(single), adapter(tmp_path / strategy)
    assert expected.keys() == got.keys() and all(expected[k].shape == got[k].shape for k in expected)
    largest = max(float((expected[k] - got[k]).abs().max()) for k in expected)
    assert largest <= (0.0 if strategy != "deepspeed_zero3" else 1e-5), largest
    assert losses(tmp_path / strategy) == pytest.approx(losses(single), abs=1e-6)


#: run ``ftsdk train RECIPE`` in this process (under torchrun), writing what each rank's parameters are during training
SHARD_PROBE = """
import json, os, sys

import ftsdk.training.distributed.strategies as strategies
from transformers import TrainerCallback

check_trainer = strategies.check_trainer


class Probe(TrainerCallback):
    def on_step_end(self, args, state, control, model=None, **kwargs):
        from torch.distributed.tensor import DTensor

        if state.global_step == 1:  # mid-training, after an optimizer step
            shapes = {name: [list(p.to_local().shape), list(p.shape)] if isinstance(p, DTensor) else None
                      for name, p in model.named_parameters()}
            out = os.path.join(sys.argv[2], "rank%s.json" % os.environ["RANK"])
            with open(out, "w") as f:
                json.dump({"shapes": shapes, "wrapped": type(kwargs["optimizer"]).__name__}, f)


def probed(trainer):
    check_trainer(trainer)
    trainer.add_callback(Probe())


strategies.check_trainer = probed
from ftsdk.cli import main

sys.exit(main(["train", sys.argv[1]]))
"""


@pytest.fixture(scope="module")
def float32_single(tiny_model_dir, chat_data, tmp_path_factory):
    """Single-process float32 runs (LoRA and full fine-tuning) of the 8-row global batch."""
    folder = tmp_path_factory.mktemp("single32")
    outputs = {}
    for adapter_name in ("lora", "full"):
        recipe = write_recipe(folder, tiny_model_dir, chat_data[0], adapter_name,
                              FLOAT32 | {"batch_size": 4, "gradient_accumulation": 2}, None, adapter_name)
        result = ftsdk("train", str(recipe))
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[adapter_name] = folder / adapter_name
    return outputs


#: float32 (no bf16 autocast): the sharded sums then differ from one process's only in the order of additions
FLOAT32 = STEPS | {"mixed_precision": "no"}


@pytest.mark.slow  # two processes under torchrun on a tiny model: ~60-80 s each on a shared 2-core machine
@pytest.mark.parametrize("adapter_name", ["lora", "full"])
def test_fsdp2_shards_on_the_cpu_and_matches_one_process(adapter_name, float32_single, tiny_model_dir, chat_data,
                                                         tmp_path):
    import json

    from safetensors.torch import load_file

    recipe = write_recipe(tmp_path, tiny_model_dir, chat_data[0], "fsdp2", FLOAT32 | {"batch_size": 4},
                          {"strategy": "fsdp2", "nproc": 2}, adapter_name)
    probe = tmp_path / "probe.py"
    probe.write_text(SHARD_PROBE)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    result = subprocess.run([*torchrun, str(probe), str(recipe), str(tmp_path)], check=False, capture_output=True,
                            text=True, timeout=500, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]

    # during training each rank holds only its half (dim 0) of every trainable weight, as a DTensor
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text())["shapes"] for rank in (0, 1)]
    trainable = [name for name, shapes in ranks[0].items() if shapes is not None]
    assert trainable and ranks[0].keys() == ranks[1].keys()
    assert all(shapes is not None for shapes in ranks[0].values())  # frozen weights are sharded too
    for name in trainable:
        (local0, full), (local1, _) = ranks[0][name], ranks[1][name]
        assert local0[0] + local1[0] == full[0] and local0[1:] == local1[1:] == full[1:], name
        assert local0[0] == -(-full[0] // 2), name  # rank 0 holds the first ceil(n/2) rows, not the whole

    single = float32_single[adapter_name]
    weights = "adapter_model.safetensors" if adapter_name == "lora" else "model.safetensors"
    expected, got = load_file(single / weights), load_file(tmp_path / "fsdp2" / weights)
    assert expected.keys() == got.keys() and all(expected[k].shape == got[k].shape for k in expected)
    difference = max((expected[k] - got[k]).abs().max().item() for k in expected)
    assert difference < TOLERANCE[adapter_name], difference
    assert losses(tmp_path / "fsdp2") == pytest.approx(losses(single), abs=1e-5)
    manifest = json.loads((tmp_path / "fsdp2" / "ftsdk.json").read_text())
    assert manifest["distributed"]["world_size"] == 2 and manifest["distributed"]["strategy"] == "fsdp2"


#: largest absolute difference of a saved weight from the single process (float32 sums in another order)
TOLERANCE = {"lora": 1e-5, "full": 1e-5}
