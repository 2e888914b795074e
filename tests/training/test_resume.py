"""Crash-safe checkpoints: sealing, verification, rotation, refusal of a changed run, and resume after SIGKILL."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftsdk import ConfigError, Tuner
from ftsdk.data.loading import load_dataset
from ftsdk.training.checkpoints import (
    SEAL_NAME,
    changes,
    checkpoints_dir,
    complete_checkpoints,
    find_checkpoint,
    incomplete_folders,
    rotate,
    seal,
    verify,
)

TRAINING = {"epochs": 1, "learning_rate": 5e-3, "batch_size": 8, "logging_steps": 2, "seed": 7, "threads": 1,
            "save_steps": 2, "save_total_limit": 2}
ADAPTER = {"r": 8, "dropout": 0.0}


def fake_checkpoint(root: Path, step: int, sealed: bool = True, fingerprint: dict | None = None) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"x" * 100)
    (folder / "optimizer.pt").write_bytes(b"y" * 50)
    if sealed:
        seal(folder, step, fingerprint or {"training": {"learning_rate": 0.1}})
    return folder


def test_only_sealed_intact_checkpoints_count(tmp_path):
    good = fake_checkpoint(tmp_path, 4)
    assert verify(good).step == 4 and (good / SEAL_NAME).is_file()
    unsealed = fake_checkpoint(tmp_path, 8, sealed=False)
    cut = fake_checkpoint(tmp_path, 6)
    with open(cut / "optimizer.pt", "r+b") as handle:  # a file shorter than when it was sealed
        handle.truncate(10)
    missing = fake_checkpoint(tmp_path, 7)
    (missing / "adapter_model.safetensors").unlink()
    assert [verify(p) for p in (unsealed, cut, missing)] == [None, None, None]
    assert [c.step for c in complete_checkpoints(tmp_path)] == [4]
    assert incomplete_folders(tmp_path) == [cut, missing, unsealed]
    assert find_checkpoint(tmp_path).path == good  # the newer half-written ones are never picked
    with pytest.raises(ConfigError, match="incomplete"):
        find_checkpoint(unsealed)


def test_rotation_keeps_the_newest_complete_ones(tmp_path):
    for step in (2, 4, 6):
        fake_checkpoint(tmp_path, step)
    fake_checkpoint(tmp_path, 8, sealed=False)
    rotate(tmp_path, keep=2)
    assert [c.step for c in complete_checkpoints(tmp_path)] == [4, 6]
    assert (tmp_path / "checkpoint-8").is_dir()  # not a complete one: rotation leaves it alone


def test_changes_name_each_differing_setting():
    before = {"training": {"learning_rate": 0.1, "epochs": 1}, "data": {"train": {"sha256": "aa"}}}
    after = {"training": {"learning_rate": 0.2, "epochs": 1}, "data": {"train": {"sha256": "bb"}}}
    assert changes(before, after) == ["data.train.sha256: 'aa' -> 'bb'", "training.learning_rate: 0.1 -> 0.2"]
    assert changes(before, before) == []


def planted(tiny_model_dir, chat_data, tmp_path) -> tuple[Path, Path]:
    """An output path whose checkpoints folder holds one sealed checkpoint of the TRAINING run."""
    tuner = Tuner(str(tiny_model_dir), adapter="lora", objective="sft", adapter_config=ADAPTER, training=TRAINING)
    output = tmp_path / "run"
    run = tuner._fingerprint(load_dataset(chat_data[0], "sft"), None, 1)
    return output, fake_checkpoint(checkpoints_dir(output), 4, fingerprint=run)


def test_a_changed_run_is_refused_before_loading(tiny_model_dir, chat_data, tmp_path, no_model_loading):
    output, _ = planted(tiny_model_dir, chat_data, tmp_path)
    changed = Tuner(str(tiny_model_dir), adapter="lora", objective="sft", adapter_config=ADAPTER,
                    training=TRAINING | {"learning_rate": 1e-3, "logging_steps": 1, "save_steps": 3})
    with pytest.raises(ConfigError) as error:
        changed.fit(chat_data[0], output_dir=output, resume=True)
    message = str(error.value)
    assert "training.learning_rate: 0.005 -> 0.001" in message and "force_resume" in message
    assert "logging_steps" not in message and "save_steps" not in message  # benign differences pass
    other_data = tmp_path / "other.jsonl"
    other_data.write_text(chat_data[0].read_text().replace("red", "blue"))
    same = Tuner(str(tiny_model_dir), adapter="lora", objective="sft", adapter_config=ADAPTER, training=TRAINING)
    with pytest.raises(ConfigError, match=r"data\.train\.sha256"):
        same.fit(other_data, output_dir=output, resume=True)
    with pytest.warns(UserWarning, match="forced"), pytest.raises(AssertionError, match="a model was loaded"):
        changed.fit(chat_data[0], output_dir=output, resume=True, force_resume=True)  # past the check


def test_fresh_start_and_empty_resume_are_refused(tiny_model_dir, chat_data, tmp_path, no_model_loading):
    output, _ = planted(tiny_model_dir, chat_data, tmp_path)
    tuner = Tuner(str(tiny_model_dir), adapter="lora", objective="sft", adapter_config=ADAPTER, training=TRAINING)
    with pytest.raises(ConfigError, match="earlier run") as error:
        tuner.fit(chat_data[0], output_dir=output)
    assert "--resume" in str(error.value)
    with pytest.raises(ConfigError, match="no checkpoints to resume"):
        tuner.fit(chat_data[0], output_dir=tmp_path / "never-ran", resume=True)


def with_callback(tuner: Tuner, callback) -> Tuner:
    """Give the tuner's Trainer one more callback."""
    train = tuner.objective.train
    tuner.objective.train = lambda job: train(dataclasses.replace(job, callbacks=[*job.callbacks, callback]))
    return tuner


CHILD = """
import sys, time
from transformers import TrainerCallback
from ftsdk import Tuner
from tests.training.test_resume import with_callback

class Slow(TrainerCallback):  # leaves time to kill the process between two checkpoints
    def on_step_end(self, *args, **kwargs):
        time.sleep(0.4)

model, data, output, training, adapter = sys.argv[1:6]
tuner = Tuner(model, adapter="lora", objective="sft", adapter_config=eval(adapter), training=eval(training))
with_callback(tuner, Slow()).fit(data, output_dir=output)
"""


@pytest.mark.slow  # three trainings, one in a fresh interpreter: ~40-60 s on a shared 2-core machine
def test_sigkill_then_resume_equals_an_uninterrupted_run(tiny_model_dir, chat_data, tmp_path):
    from safetensors.torch import load_file

    train = chat_data[0]
    reference = Tuner(str(tiny_model_dir), adapter="lora", objective="sft", adapter_config=ADAPTER, training=TRAINING)
    reference.fit(train, output_dir=tmp_path / "reference")
    assert not checkpoints_dir(tmp_path / "reference").exists()  # removed once the output is complete

    output = tmp_path / "crashed"
    root = checkpoints_dir(output)
    child = subprocess.Popen(  # run from the repository root: the child imports this module's helper
        [sys.executable, "-c", CHILD, str(tiny_model_dir), str(train), str(output), repr(TRAINING), repr(ADAPTER)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
    )
    deadline = time.monotonic() + 240
    while verify(root / "checkpoint-4") is None:
        assert child.poll() is None, child.stderr.read()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not output.exists()  # killed before the end: no output, only checkpoints
    half = root / "checkpoint-6"  # a newer checkpoint the kill cut short: never resumed from
    if verify(half) is None:
        half.mkdir(exist_ok=True)
        (half / "adapter_model.safetensors").write_bytes(b"\0" * 10)

    from transformers import TrainerCallback

    steps: list[int] = []

    class Steps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps.append(state.global_step)

    resumed = Tuner(str(tiny_model_dir), adapter="lora", objective="sft", adapter_config=ADAPTER, training=TRAINING)
    with_callback(resumed, Steps()).fit(train, output_dir=output, resume=True)
    assert steps == [5, 6, 7, 8]  # continued after the last complete checkpoint
    expected, got = load_file(tmp_path / "reference" / "adapter_model.safetensors"), load_file(
        output / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:  # CPU float32, same batches in the same order: bitwise equal
        assert (expected[name] == got[name]).all(), name
    assert not root.exists()
