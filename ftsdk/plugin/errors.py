"""Typed errors. Each one says what went wrong, where, and how to fix it."""

from __future__ import annotations


class FtsdkError(Exception):
    """Base class of every error ftsdk raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}\n  hint: {hint}" if hint else message)


class ConfigError(FtsdkError, ValueError):
    """A configuration (recipe, plugin options, keyword argument) is invalid."""


class DataError(FtsdkError, ValueError):
    """A data set is missing, unreadable, or has rows that do not validate."""

    def __init__(self, message: str, *, problems: list[str] | None = None, hint: str | None = None):
        self.problems = problems or []
        listed = "".join(f"\n  - {p}" for p in self.problems)
        super().__init__(message + listed, hint=hint)


class PluginError(FtsdkError):
    """A plugin could not be found, loaded or used."""


class UnknownPluginError(PluginError, KeyError):
    """No plugin of that kind has that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return Exception.__str__(self)


class PluginConflictError(PluginError):
    """Two plugins registered the same (kind, name)."""


class PluginUnavailableError(PluginError):
    """A plugin is registered but the packages it needs are not installed."""


class ModelLoadError(FtsdkError):
    """A base model or tokenizer could not be found or loaded."""


class OutputExistsError(FtsdkError, FileExistsError):
    """An output folder already holds files and overwriting was not asked for."""


class OutputInUseError(FtsdkError):
    """Another live process is writing the same output folder (or running a chain in the same workdir)."""
