"""What the ``ftsdk`` command prints when a command fails: one ``ftsdk: error:`` line (plus its hint), never a
traceback for something the user can cause. ``--debug`` (or ``FTSDK_DEBUG=1``) shows the traceback instead."""

from __future__ import annotations

import errno

#: optional packages and the extra that installs each (the import name, as ModuleNotFoundError reports it)
EXTRAS = {
    "llama_cpp": "gguf",
    "bitsandbytes": "bnb",
    "gptqmodel": "gptq",
    "optimum": "gptq",
    "fastapi": "serve",
    "uvicorn": "serve",
    "deepspeed": "deepspeed",
    "mergekit": "mergekit",
    "tensorboard": "tensorboard",
    "mlflow": "mlflow",
    "wandb": "wandb",
    "mkdocs": "docs",
}

#: exit status of a failure the user can fix (argparse uses it for bad arguments too)
USER_ERROR = 2
#: exit status after Ctrl-C, as shells expect (128 + SIGINT)
INTERRUPTED = 130


def describe(exc: BaseException) -> str | None:
    """The message for a failure the user can cause and fix, or None for anything else (a bug)."""
    from ftsdk.plugin.errors import FtsdkError

    if isinstance(exc, FtsdkError):
        return str(exc)
    if isinstance(exc, ImportError) and not (exc.name or "").startswith("ftsdk"):  # ftsdk's own: a bug
        return _missing_package(exc)
    if isinstance(exc, UnicodeError):
        return (f"a file is not readable text ({exc.__class__.__name__}: {exc.reason})\n"
                "  hint: save the file as UTF-8 (most editors: 'Save with encoding')")
    if isinstance(exc, OSError):
        return _os_error(exc)
    if isinstance(exc, MemoryError):
        return ("out of memory\n  hint: lower training.batch_size or max_length, or choose a smaller model "
                "(`ftsdk estimate RECIPE` predicts the memory a recipe needs)")
    return None


def _missing_package(exc: ImportError) -> str:
    name = (exc.name or "").split(".")[0]
    if name in EXTRAS:
        return f"this needs the optional package '{name}'\n  hint: pip install \"ftsdk[{EXTRAS[name]}]\""
    if name:
        return f"the package '{name}' is missing\n  hint: pip install {name}   (or pip install \"ftsdk[all]\")"
    return f"a package is missing: {exc}\n  hint: pip install \"ftsdk[all]\" installs every optional backend"


def _os_error(exc: OSError) -> str:
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return (f"no space left on the device{' for' + where if where else ''}; nothing half-written was kept\n"
                "  hint: free some space (or set FTSDK_CACHE / choose an output folder on a larger disk) and rerun")
    if isinstance(exc, FileNotFoundError):
        return f"not found:{where or ' ' + str(exc)}\n  hint: check the path (relative paths start in the current folder)"
    if isinstance(exc, IsADirectoryError):
        return f"{where.strip() or 'the path'} is a folder, but a file was expected\n  hint: name a file inside it"
    if isinstance(exc, NotADirectoryError):
        return f"{where.strip() or 'the path'} is a file, but a folder was expected\n  hint: name its folder"
    if isinstance(exc, PermissionError):
        return f"permission denied:{where}\n  hint: check the file's permissions, or choose another path"
    return f"{exc.strerror or exc}:{where}" if where else f"{exc.strerror or exc}"
