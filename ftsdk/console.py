"""Keep the libraries' own chatter off the terminal while an ``ftsdk`` command runs.

ftsdk shows one progress bar per long step and its own warnings. transformers, DeepSpeed, torchao and
bitsandbytes add nested progress bars and messages that are harmless on a CPU machine; they are hidden unless
``--verbose``. Only messages known to be harmless are dropped: every other library warning still shows.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

#: (logger name, message pattern) of log records known to be harmless here
HARMLESS_RECORDS = (
    ("DeepSpeed", r"Setting accelerator to CPU"),
    ("torchao", r"Failed to load .*\.so"),
    ("torch.utils._pytree", r"is an Enum subclass and is now natively supported"),
    ("bitsandbytes.backends.cpu.ops", r"Failed to load CPU gemm_4bit_forward from kernels-community"),
    ("transformers.utils.generic", r"`past_key_values`/`cache_params` are deprecated"),
)
#: (category, message pattern) of Python warnings known to be harmless here
HARMLESS_WARNINGS = (
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    (FutureWarning, r"`past_key_values` is deprecated"),  # TRL's forward wrapper, generating for evaluation
)
#: packages that print a banner and environment notes when imported (PEFT imports GPT-QModel to inspect layers)
NOISY_IMPORTS = frozenset({"gptqmodel"})
#: environment read by the libraries when they are first imported
QUIET_ENVIRONMENT = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' and huggingface_hub's nested bars
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


class _DropHarmless(logging.Filter):
    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


@contextlib.contextmanager
def library_output(verbose: bool = False) -> Iterator[None]:
    """Within the block, hide the libraries' nested progress bars and known harmless messages (not if verbose)."""
    if verbose:
        yield
        return
    filters = [(logging.getLogger(name), _DropHarmless(pattern)) for name, pattern in HARMLESS_RECORDS]
    saved_environment = {name: os.environ.get(name) for name in QUIET_ENVIRONMENT}
    os.environ.update(QUIET_ENVIRONMENT)
    bars_were_on = _transformers_bars(False)
    for logger, drop in filters:
        logger.addFilter(drop)
    quiet_imports = _QuietImports()
    sys.meta_path.insert(0, quiet_imports)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            for category, pattern in HARMLESS_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern, category=category)
            yield
    finally:
        sys.meta_path.remove(quiet_imports)
        for logger, drop in filters:
            logger.removeFilter(drop)
        if bars_were_on:
            _transformers_bars(True)
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """ftsdk's own warnings (data dropped, fallbacks) as one plain line; the libraries' as Python prints them."""
    own = bool(filename) and any(Path(filename).resolve().is_relative_to(folder) for folder in _own_folders())
    text = f"ftsdk: warning: {message}\n" if own else warnings.formatwarning(message, category, filename, lineno, line)
    (file or sys.stderr).write(text)


def _own_folders() -> list[Path]:
    """Where ftsdk's and its built-in plugins' code lives."""
    plugins = importlib.util.find_spec("ftsdk_plugins")
    folders = [Path(__file__).resolve().parent]
    return folders + ([Path(plugins.origin).resolve().parent] if plugins and plugins.origin else [])


def _transformers_bars(on: bool) -> bool:
    """Switch transformers' progress bars if transformers is imported already; say whether they were on.

    Not imported yet, it reads HF_HUB_DISABLE_PROGRESS_BARS when it is (importing it here would cost seconds).
    """
    module = sys.modules.get("transformers.utils.logging")
    if module is None:
        return False
    was_on = module.is_progress_bar_enabled()
    (module.enable_progress_bar if on else module.disable_progress_bar)()
    return was_on


class _QuietImports(importlib.abc.MetaPathFinder):
    """Finds the NOISY_IMPORTS packages as usual, but runs their import with its printing discarded."""

    def find_spec(self, name: str, path: Any = None, target: ModuleType | None = None) -> Any:
        if name not in NOISY_IMPORTS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __getattr__(self, name: str) -> Any:  # resource readers and the like come from the real loader
        return getattr(self.loader, name)

    def create_module(self, spec: Any) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            self.loader.exec_module(module)


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """Hide the ``datasets`` progress bars of data preparation (ftsdk shows its own)."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()
