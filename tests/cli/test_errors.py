"""What a user can cause ends in one ``ftsdk: error:`` message and exit code 2, never a traceback; ``--debug`` shows it.

One test per class of failure: a missing optional dependency, a missing file, a folder where a file belongs (and
the reverse), a file that is not text, a full disk, an interrupted conversion, and a bug (exit 1, pointing at
``--debug``). Nothing half-written may stay behind.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest

from ftsdk.cli import main
from ftsdk.cli.failures import describe

#: every command that reads a file the user names, with that file's place in its arguments
FILE_COMMANDS = {
    "train": lambda path, out: ["train", path],
    "estimate": lambda path, out: ["estimate", path],
    "merge": lambda path, out: ["merge", path],
    "chain": lambda path, out: ["chain", path, "--dry-run"],
    "data check": lambda path, out: ["data", "check", path],
    "eval": lambda path, out: ["eval", "--data", path, "--candidate", "base=MODEL", "--out", out],
}


def run(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def assert_one_clean_error(code: int, err: str, *phrases: str) -> None:
    assert code == 2, err
    assert err.count("ftsdk: error:") == 1 and "\nftsdk: error: " in "\n" + err.split("\r")[-1], err
    assert "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in err, err


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_a_missing_file(command, tmp_path, capsys, no_model_loading):
    missing = tmp_path / "nowhere.yaml"
    code, err = run(capsys, FILE_COMMANDS[command](str(missing), str(tmp_path / "out")))
    assert_one_clean_error(code, err, "nowhere.yaml")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_a_folder_where_a_file_belongs(command, tmp_path, capsys, no_model_loading):
    folder = tmp_path / "a-folder.yaml"
    folder.mkdir()
    code, err = run(capsys, FILE_COMMANDS[command](str(folder), str(tmp_path / "out")))
    assert_one_clean_error(code, err, "a-folder.yaml")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [["merge-adapter", "{file}", "{out}"], ["quantize", "{file}", "--method", "bnb",
                                                                       "--output", "{out}"]])
def test_a_file_where_a_folder_belongs(argv, tmp_path, capsys, no_model_loading):
    file = tmp_path / "adapter.txt"
    file.write_text("not a folder")
    code, err = run(capsys, [a.format(file=file, out=tmp_path / "out") for a in argv])
    assert_one_clean_error(code, err, "adapter.txt")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["train", "merge", "chain"])
def test_a_file_that_is_not_utf8(command, tmp_path, capsys, no_model_loading):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("output_dir: caf\xe9\n".encode("latin-1"))
    code, err = run(capsys, FILE_COMMANDS[command](str(recipe), str(tmp_path / "out")))
    assert_one_clean_error(code, err, "latin1.yaml", "UTF-8")


def test_a_data_file_in_utf16_is_named_with_its_problem(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    data.write_bytes('{"prompt": "caf\u00e9", "completion": "ok"}\n'.encode("utf-16"))
    code = main(["data", "check", str(data)])
    out, err = capsys.readouterr()
    if code == 0:  # a reader that decodes UTF-16 is fine too; then it must have read the row
        assert "1 rows" in out or "rows: 1" in out or '"rows": 1' in out, out
        return
    assert_one_clean_error(code, err, "train.jsonl")


def test_a_missing_optional_dependency_names_the_extra(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if llama-cpp-python were not installed
    code, err = run(capsys, ["quantize", str(tiny_model_dir), "--method", "gguf", "--output", str(tmp_path / "q")])
    assert_one_clean_error(code, err, 'pip install "ftsdk[gguf]"')
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize(("module", "extra"), [("fastapi", "serve"), ("mlflow", "mlflow"), ("llama_cpp", "gguf")])
def test_an_import_error_of_an_optional_package_is_one_line_with_its_extra(module, extra):
    message = describe(ModuleNotFoundError(f"No module named '{module}'", name=module))
    assert f'pip install "ftsdk[{extra}]"' in message and "\n" in message  # message, then the hint line


def test_an_unknown_import_error_still_tells_how_to_fix_it():
    message = describe(ImportError("Please install torch and gguf>=0.10.0 to load a GGUF checkpoint in PyTorch."))
    assert "gguf>=0.10.0" in message and 'pip install "ftsdk[all]"' in message


def test_permission_denied_names_the_file():
    # the tests run as root, for whom chmod 000 does not deny reading: the mapping is checked directly
    message = describe(PermissionError(errno.EACCES, "Permission denied", "/data/train.jsonl"))
    assert "permission denied" in message and "/data/train.jsonl" in message


def test_a_full_disk_while_merging_leaves_nothing_behind(tiny_finetunes, tmp_path, capsys, monkeypatch):
    import yaml

    from ftsdk.merging.safetensors_io import ShardedWriter

    written = ShardedWriter.write

    def full_disk(self, name, tensor):  # the disk fills after the first tensors reached the shard
        if self._position >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        written(self, name, tensor)

    monkeypatch.setattr(ShardedWriter, "write", full_disk)
    config = tmp_path / "merge.yaml"
    models = [{"model": str(path)} for path in list(tiny_finetunes.values())[:2]]
    config.write_text(yaml.safe_dump({"merge_method": "linear", "models": models, "dtype": "float32",
                                      "parameters": {"weight": 0.5}}))
    out = tmp_path / "merged"
    code, err = run(capsys, ["merge", str(config), "--output", str(out)])
    assert_one_clean_error(code, err, "no space left")
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["merge.yaml"]


def test_an_interrupted_gguf_conversion_leaves_no_cache_entry(tmp_path, capsys, monkeypatch):
    """Ctrl-C while the default model is converted: one message, exit 130, and no half-written cache folder."""
    import ftsdk.models.loading as models

    class Interrupted:
        def save_pretrained(self, folder):
            (Path(folder) / "model.safetensors").write_bytes(b"partial")
            raise KeyboardInterrupt

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setenv("FTSDK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "_load_gguf_clean", lambda path, bar: (Interrupted(), Interrupted()))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {gguf}\n")
    code = main(["estimate", str(recipe)])
    err = capsys.readouterr().err
    assert code == 130 and err.count("ftsdk: error: interrupted") == 1 and "Traceback" not in err
    left = list((tmp_path / "cache").rglob("*")) if (tmp_path / "cache").exists() else []
    assert [p for p in left if p.is_file()] == []


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    code, err = run(capsys, ["--debug", "train", str(tmp_path / "nowhere.yaml")])
    assert code == 2 and "Traceback" in err and "ftsdk: error:" in err
    monkeypatch.setenv("FTSDK_DEBUG", "1")
    assert "Traceback" in run(capsys, ["train", str(tmp_path / "nowhere.yaml")])[1]


def test_a_bug_is_not_dressed_as_a_user_error(capsys, monkeypatch):
    import ftsdk.cli.plugins as plugins_command

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(plugins_command, "_cmd_plugins", broken)
    parser_code = main(["plugins"])
    err = capsys.readouterr().err
    assert parser_code == 1 and "unexpected ZeroDivisionError" in err and "--debug" in err


def test_a_missing_module_of_ftsdk_itself_is_a_bug_not_a_package_to_install():
    assert describe(ModuleNotFoundError("No module named 'ftsdk.nothing'", name="ftsdk.nothing")) is None
