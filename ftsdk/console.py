"""Keep the libraries' own chatter off the terminal while an ``ftsdk`` command runs.

ftsdk shows one progress bar per long step and its own warnings. transformers, DeepSpeed, torchao and
bitsandbytes add nested progress bars and messages that are harmless on a CPU machine; they are hidden unless
``--verbose``. Only messages known to be harmless are dropped: every other library warning still shows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator

#: (logger name, message pattern) of log records known to be harmless here
HARMLESS_RECORDS = (
    ("DeepSpeed", r"Setting accelerator to CPU"),
    ("torchao", r"Failed to load .*\.so"),
    ("torch.utils._pytree", r"is an Enum subclass and is now natively supported"),
    ("bitsandbytes.backends.cpu.ops", r"Failed to load CPU gemm_4bit_forward from kernels-community"),
)
#: (category, message pattern) of Python warnings known to be harmless here
HARMLESS_WARNINGS = (
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
)
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
    try:
        with warnings.catch_warnings():
            for category, pattern in HARMLESS_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern, category=category)
            yield
    finally:
        for logger, drop in filters:
            logger.removeFilter(drop)
        if bars_were_on:
            _transformers_bars(True)
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
