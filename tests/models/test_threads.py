"""Threads: torch computes with the cores that are idle when training starts, unless training.threads says."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from ftsdk.models import device


@pytest.mark.parametrize(("idle", "expected"), [(2.0, 2), (1.9, 2), (1.1, 1), (0.3, 1), (0.0, 1)])
def test_auto_takes_the_idle_cores_at_most_torchs_default(monkeypatch, idle, expected):
    monkeypatch.setattr(device, "idle_cores", lambda seconds: idle)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    choice = device.choose_threads(None)
    assert (choice.threads, choice.source, choice.idle_cores) == (expected, "auto", idle)


def test_processes_of_one_machine_share_the_idle_cores(monkeypatch):
    monkeypatch.setattr(device, "idle_cores", lambda seconds: 8.0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert device.choose_threads(None, processes=2).threads == 4
    assert device.choose_threads(None, processes=16).threads == 1


def test_a_set_count_is_kept_and_said_so(monkeypatch):
    monkeypatch.setattr(device, "idle_cores", lambda seconds: pytest.fail("a set count must not sample"))
    choice = device.choose_threads(3)
    assert (choice.threads, choice.source) == (3, "set") and "3 of" in choice.describe()


def test_without_proc_stat_auto_keeps_torchs_default(monkeypatch):
    monkeypatch.setattr(device, "idle_cores", lambda seconds: None)
    assert device.choose_threads(None).threads == torch.get_num_threads()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_idle_cores_sees_a_busy_neighbour():
    cores = len(device.os.sched_getaffinity(0))
    quiet = device.idle_cores(0.3)
    assert quiet is not None and 0 <= quiet <= cores + 0.5
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        loaded = device.idle_cores(0.5)
    finally:
        busy.kill()
    assert loaded is not None and loaded <= cores - 0.5  # the neighbour's core is not idle


def test_the_choice_is_in_the_manifest_and_printed(tiny_model_dir, chat_data, tmp_path, capsys):
    from ftsdk import Tuner

    tuner = Tuner(str(tiny_model_dir), adapter="lora", objective="sft", adapter_config={"r": 4},
                  training={"max_steps": 1, "batch_size": 4, "max_length": 64})
    result = tuner.fit(chat_data[0], output_dir=tmp_path / "out")
    recorded = json.loads((tmp_path / "out" / "ftsdk.json").read_text())["placement"]["threads"]
    assert recorded == result.manifest["placement"]["threads"]
    assert recorded["source"] == "auto" and 1 <= recorded["threads"] <= recorded["cores"]
    assert f"{recorded['threads']} of {recorded['cores']} cores (auto" in capsys.readouterr().out
