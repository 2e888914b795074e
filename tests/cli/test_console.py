"""The CLI keeps the libraries' chatter off the terminal unless --verbose; ftsdk's own bar and warnings stay."""

from __future__ import annotations

import subprocess
import sys
import warnings

import yaml

from ftsdk.console import library_output

#: what the libraries print on a CPU machine during a training run (with the test extras installed)
CHATTER = ("Loading weights", "Setting accelerator to CPU", "is an Enum subclass", "GPT-QModel", "Failed to load",
           "is_gradient_checkpointing")


def train(folder, model, data, *flags: str) -> str:
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": str(model), "adapter_config": {"r": 4}, "data": {"train": str(data)},
        "training": {"max_steps": 2, "batch_size": 4, "max_length": 48, "logging_steps": 1},
        "output_dir": str(folder / f"out{len(flags)}")}))
    done = subprocess.run([sys.executable, "-m", "ftsdk.cli", *flags, "train", str(recipe)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_a_training_run_shows_ftsdks_bar_and_no_library_chatter(tmp_path, tiny_model_dir, chat_data):
    quiet = train(tmp_path, tiny_model_dir, chat_data[0])
    assert "lora+sft" in quiet and "trained in" in quiet
    assert [noise for noise in CHATTER if noise in quiet] == []
    verbose = train(tmp_path, tiny_model_dir, chat_data[0], "--verbose")
    assert "Loading weights" in verbose  # the same run shows the libraries' bars when asked


def test_only_known_harmless_warnings_are_hidden(capsys):
    with library_output():
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed", FutureWarning, stacklevel=1)
        warnings.warn("something the user must see", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert "is_gradient_checkpointing" not in err and "something the user must see" in err


def test_ftsdks_own_warnings_are_one_plain_line(capsys):
    from ftsdk.data import tokenize  # any ftsdk module: the warning is attributed to its file

    with library_output():
        warnings.warn_explicit("3 example(s) dropped", UserWarning, tokenize.__file__, 1)
    assert capsys.readouterr().err == "ftsdk: warning: 3 example(s) dropped\n"


def test_transformers_bare_gguf_reading_bar_is_hidden_with_the_others(capsys):
    from transformers import modeling_gguf_pytorch_utils as reader

    from ftsdk.models.loading import _gguf_reading_bar_off

    with library_output(), _gguf_reading_bar_off():
        list(reader.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."))
    assert "Converting" not in capsys.readouterr().err
    with library_output(verbose=True), _gguf_reading_bar_off():
        list(reader.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."))
    assert "Converting" in capsys.readouterr().err
