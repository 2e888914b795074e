"""Writers of outputs: locks held against a second (real) process, leftovers of killed writers cleaned, overlaps
with inputs refused, and an old output kept in place until the new one is complete."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ftsdk import ConfigError, OutputInUseError
from ftsdk import artifacts as art
from ftsdk.artifacts import atomic_output_dir, child_path, claim_output, clean_leftovers
from ftsdk.cli import main

ROOT = Path(__file__).resolve().parents[2]


def child(code: str) -> subprocess.Popen:
    """A real Python process running ``code``; returns once it printed 'ready' (it then sleeps until killed)."""
    script = textwrap.dedent(code) + "\nprint('ready', flush=True)\nimport time\ntime.sleep(600)\n"
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout is not None and process.stdout.readline().strip() == "ready", "the child did not start"
    return process


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def complete(folder: Path) -> str:
    """Which complete output ``folder`` holds ('old' or 'new'); fails if none is complete."""
    assert (folder / "a").read_text() == (folder / "b").read_text()
    return (folder / "a").read_text()


def write(folder: Path, version: str) -> None:
    (folder / "a").write_text(version)
    (folder / "b").write_text(version)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# -- locks ------------------------------------------------------------------------------------------------


def test_a_second_writer_is_refused_while_a_live_process_holds_the_output(tmp_path):
    out = tmp_path / "out"
    holder = child(f"""
        from ftsdk.artifacts import claim_output
        held = claim_output({str(out)!r})
        held.__enter__()
    """)
    try:
        with pytest.raises(OutputInUseError) as caught, claim_output(out):
            pass
        message = str(caught.value)
        assert f"{out} is in use by PID {holder.pid} (started " in message and "wait for that run" in message
        with pytest.raises(OutputInUseError, match=f"PID {holder.pid}"), atomic_output_dir(out):
            pass
        assert not out.exists()
    finally:
        kill(holder)
    # the kernel released the dead holder's lock: the next writer takes it over
    with atomic_output_dir(out) as tmp:
        write(tmp, "new")
    assert complete(out) == "new" and leftovers(tmp_path) == []


def test_concurrent_writers_fail_with_the_holder_pid(tiny_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "merged"
    config = tmp_path / "merge.yaml"
    config.write_text(f"method: linear\nmodels:\n  - model: {tiny_model_dir}\n    parameters: {{weight: 0.5}}\n"
                      f"  - model: {tiny_model_dir}\n    parameters: {{weight: 0.5}}\noutput: {out}\n")
    chain = tmp_path / "chain.yaml"
    chain.write_text(f"workdir: build\ninputs: {{base: {tiny_model_dir}}}\nsteps:\n"
                     "  - {step: evaluate, name: ppl, models: [base], texts: {samples: 2, max_length: 16}}\n")
    holder = child(f"""
        from ftsdk.artifacts import claim_output
        from ftsdk.locks import hold_lock
        held = [claim_output({str(out)!r}), hold_lock({str(tmp_path / 'build' / '.ftsdk-chain.lock')!r}, "workdir")]
        for lock in held:
            lock.__enter__()
    """)
    try:
        from ftsdk import Chain, merge

        monkeypatch.setattr("ftsdk.models.loading.resolve", lambda *a, **k: pytest.fail("a model was loaded"))

        with pytest.raises(OutputInUseError, match=f"{out} is in use by PID {holder.pid}"):
            merge(config)
        assert not out.exists()
        from ftsdk import Tuner, quantize

        with pytest.raises(OutputInUseError, match=f"PID {holder.pid}"):  # before any model loads
            quantize(tiny_model_dir, "gguf", out)
        data = tmp_path / "train.jsonl"
        data.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
        with pytest.raises(OutputInUseError, match=f"PID {holder.pid}"):
            Tuner(str(tiny_model_dir)).fit(data, output_dir=out)
        with pytest.raises(OutputInUseError, match=f"chain workdir .*build is in use by PID {holder.pid}"):
            Chain.from_yaml(chain).run()
        assert not (tmp_path / "build" / "ppl").exists()
    finally:
        kill(holder)
    assert merge(config) == out and (out / "ftsdk.json").is_file()


def test_locks_are_reentrant_in_one_thread_and_leave_no_file(tmp_path):
    out = tmp_path / "out"
    with claim_output(out) as claimed, atomic_output_dir(claimed) as tmp:
        assert (tmp_path / ".out.lock").is_file()
        assert json.loads((tmp_path / ".out.lock").read_text())["pid"] == os.getpid()
        write(tmp, "new")
    assert complete(out) == "new" and leftovers(tmp_path) == []


# -- leftovers of killed writers ----------------------------------------------------------------------------


def test_a_killed_writer_leaves_leftovers_the_next_writer_removes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    write(out, "old")
    writer = child(f"""
        from pathlib import Path
        from ftsdk.artifacts import atomic_output_dir
        block = atomic_output_dir({str(out)!r}, overwrite=True)
        tmp = block.__enter__()
        (tmp / "a").write_text("half")
        (tmp.parent / (tmp.name + ".gguf-intermediate-x1")).mkdir()  # as the GGUF quantizer names its f32 copy
        (tmp.parent / (tmp.name + ".gguf-intermediate-x1") / "model-f32.gguf").write_bytes(b"0" * 1000)
    """)
    try:
        names = leftovers(tmp_path)
        assert len(names) == 3 and ".out.lock" in names  # its temporary folder, the intermediate and the lock
        with pytest.raises(OutputInUseError), claim_output(out):  # a live writer's files are never touched
            pass
        assert leftovers(tmp_path) == names
    finally:
        kill(writer)
    assert complete(out) == "old"  # the killed writer never touched the output
    assert len(leftovers(tmp_path)) == 3  # kill -9 left them behind
    with claim_output(out, overwrite=True):
        assert leftovers(tmp_path) == [".out.lock"]
    assert leftovers(tmp_path) == [] and complete(out) == "old"


def test_the_gguf_quantizer_names_its_intermediate_after_the_output(tiny_model_dir, tmp_path, monkeypatch):
    from ftsdk.quantizing.run import quantize

    seen = []

    def stop(intermediate, *args, **kwargs):
        seen.append(Path(intermediate))
        raise RuntimeError("stopped after the intermediate was written")

    monkeypatch.setattr("ftsdk.gguf.quantize.quantize_gguf", stop)
    with pytest.raises(RuntimeError, match="stopped"):
        quantize(tiny_model_dir, "gguf", tmp_path / "q", config={"type": "q8_0", "verify": False})
    folder = seen[0].parent
    assert folder.parent == tmp_path and folder.name.startswith(".q.tmp-") and ".gguf-intermediate-" in folder.name
    folder.mkdir()  # as a kill -9 would have left it
    assert clean_leftovers(tmp_path / "q") == [folder] and not folder.exists()


def test_a_chain_killed_while_running_is_resumed(tiny_model_dir, tmp_path, capsys):
    from ftsdk import Chain

    build = tmp_path / "build"
    chain = Chain(build, name="k", base=str(tiny_model_dir)).evaluate("ppl", models=["base"],
                                                                      texts={"samples": 2, "max_length": 16})
    runner = child(f"""
        import json, os
        from pathlib import Path
        from ftsdk.locks import hold_lock
        held = hold_lock({str(build / '.ftsdk-chain.lock')!r}, "workdir")
        held.__enter__()
        state = {{"status": "running", "step": "steps[0] (evaluate 'ppl')", "pid": os.getpid()}}
        Path({str(build / '.ftsdk-chain.json')!r}).write_text(json.dumps(state))
        (Path({str(build)!r}) / ".ppl.tmp-0123abcd").mkdir()
    """)
    try:
        with pytest.raises(OutputInUseError, match=f"PID {runner.pid}"):
            chain.run(resume=True)
    finally:
        kill(runner)
    result = chain.run(resume=True)
    assert f"resuming chain 'k' at steps[0] (evaluate 'ppl'), where an earlier run (PID {runner.pid}) stopped" \
        in capsys.readouterr().out
    assert result.ran == ["ppl"] and sorted(p.name for p in build.iterdir()) == [".ftsdk-chain.json", "ppl"]
    assert json.loads((build / ".ftsdk-chain.json").read_text())["status"] == "completed"


# -- replacing an output ---------------------------------------------------------------------------------


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "move-aside"])
def test_some_complete_output_is_in_place_at_every_step_of_a_replacement(tmp_path, monkeypatch, exchange):
    out = tmp_path / "out"
    out.mkdir()
    write(out, "old")
    if not exchange:
        monkeypatch.setattr(art, "_exchange", lambda a, b: False)
    real = {"exchange": art._exchange, "rename": Path.rename, "replace": os.replace, "remove": art._remove}
    states: list[str] = []

    def state() -> str:
        """The complete output in place, or (only while the portable path moves it) the one moved aside."""
        if out.exists():
            return complete(out)
        aside = [p for p in tmp_path.iterdir() if p.name.startswith(".out.old-")]
        assert not exchange and len(aside) == 1, "no complete output at the output path"
        return "aside:" + complete(aside[0])

    def checked(name, function, fail_at):
        def step(*args, **kwargs):
            states.append(state())  # before and after each file-system step, a complete output exists
            if len(states) == fail_at:
                raise OSError(f"injected failure at step {fail_at} ({name})")
            result = function(*args, **kwargs)
            states.append(state())
            return result
        return step

    seen: set[str] = set()
    for fail_at in (1, 2, 3, 4, 5, None):
        states.clear()
        monkeypatch.setattr(art, "_exchange", checked("exchange", real["exchange"], fail_at))
        monkeypatch.setattr(Path, "rename", checked("rename", real["rename"], fail_at))
        monkeypatch.setattr(art.os, "replace", checked("replace", real["replace"], fail_at))
        monkeypatch.setattr(art, "_remove", checked("remove", real["remove"], fail_at))
        try:
            with atomic_output_dir(out, overwrite=True) as tmp:
                write(tmp, "new")
        except OSError as exc:
            assert "injected failure" in str(exc)
        monkeypatch.setattr(Path, "rename", real["rename"])
        monkeypatch.setattr(art.os, "replace", real["replace"])
        monkeypatch.setattr(art, "_remove", real["remove"])
        assert complete(out) in ("old", "new") and states  # never nothing, never a mix
        seen.update(states)
        if fail_at is None:
            assert complete(out) == "new"
        write(out, "old")
        clean_leftovers(out)
        assert leftovers(tmp_path) == []
    assert seen == ({"old", "new"} if exchange else {"old", "aside:old", "new"})


def test_a_writer_killed_between_moving_the_old_output_aside_and_the_new_in(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    write(out, "old")
    writer = child(f"""
        import os, time
        from ftsdk import artifacts
        artifacts._exchange = lambda a, b: False  # the portable path: the old output is moved aside first
        def hang(*args):
            print("ready", flush=True)
            time.sleep(600)
        artifacts.os.replace = hang
        with artifacts.atomic_output_dir({str(out)!r}, overwrite=True) as tmp:
            (tmp / "a").write_text("new"); (tmp / "b").write_text("new")
    """)
    kill(writer)
    assert not out.exists() and any(name.startswith(".out.old-") for name in leftovers(tmp_path))
    with claim_output(out, overwrite=True):
        assert complete(out) == "old"  # the next writer puts the complete old output back first
    assert leftovers(tmp_path) == []


# -- overlaps between the output and the inputs --------------------------------------------------------------


@pytest.mark.parametrize("where", ["is", "inside", "holds"])
def test_merge_adapter_refuses_outputs_overlapping_its_adapter(tiny_model_dir, tmp_path, no_model_loading, where,
                                                               capsys):
    import peft
    import torch
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "runs" / "adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    before = sorted(p.name for p in adapter.iterdir())
    output = {"is": adapter, "inside": adapter / "merged", "holds": tmp_path / "runs"}[where]
    assert main(["merge-adapter", str(adapter), str(output), "--overwrite"]) != 0
    err = capsys.readouterr().err
    assert "ftsdk: error: the output folder" in err and "would overwrite or delete an input" in err
    assert sorted(p.name for p in adapter.iterdir()) == before and not (adapter / "merged").exists()


def test_quantize_and_merge_refuse_an_output_holding_their_input(tiny_model_dir, tmp_path, capsys):
    parent = tmp_path / "p"
    shutil.copytree(tiny_model_dir, parent / "src")
    assert main(["quantize", str(parent / "src"), "--method", "gguf", "--output", str(parent), "--overwrite"]) != 0
    assert "holds the source" in capsys.readouterr().err and (parent / "src" / "config.json").is_file()
    shutil.copytree(tiny_model_dir, parent / "other")
    config = {"method": "linear", "models": [{"model": str(parent / "src"), "parameters": {"weight": 0.5}},
                                             {"model": str(parent / "other"), "parameters": {"weight": 0.5}}],
              "output": str(parent), "overwrite": True}
    from ftsdk import merge

    with pytest.raises(ConfigError, match=r"holds the input models\[0\]"):
        merge(config)
    with pytest.raises(ConfigError, match=r"lies inside the input models\[1\]"):
        merge(config | {"output": str(parent / "other" / "merged")})
    assert sorted(p.name for p in (parent / "src").iterdir()) == sorted(p.name for p in tiny_model_dir.iterdir())


def test_fit_refuses_an_output_holding_its_data(tiny_model_dir, tmp_path, no_model_loading):
    from ftsdk import Tuner

    data = tmp_path / "run" / "train.jsonl"
    data.parent.mkdir()
    data.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    with pytest.raises(ConfigError, match="holds the training data"):
        Tuner(str(tiny_model_dir)).fit(data, output_dir=tmp_path / "run", overwrite=True)
    assert data.is_file()


def test_check_overlap_covers_every_case(tmp_path):
    (tmp_path / "in" / "deep").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "in")
    for output, word in [(tmp_path / "in", "is"), (tmp_path / "in" / "out", "lies inside"), (tmp_path, "holds"),
                         (link, "is"), (link / "x", "lies inside")]:
        with pytest.raises(ConfigError, match=word):
            art.check_overlap(output, [("input", tmp_path / "in")])
    art.check_overlap(tmp_path / "elsewhere", [("input", tmp_path / "in"), ("hub id", "org/model"), ("none", None)])


# -- nothing written outside a chain's folders ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["../escaped", "/abs", "a/b", "..", ".hidden", ""])
def test_export_never_writes_outside_its_folder(tmp_path, name, tiny_model_dir):
    from ftsdk.chain.export import export_artifacts
    from ftsdk.chain.refs import Artifact

    (tmp_path / "dist").mkdir()
    with pytest.raises(ConfigError, match="not a plain file name"):
        export_artifacts({name: Artifact(name, tiny_model_dir, "model")}, {}, tmp_path / "dist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist"] and not any((tmp_path / "dist").iterdir())
    with pytest.raises(ConfigError, match="would write outside"):
        child_path(tmp_path, name, "step name")
