"""Inspecting a model's layers by name, to validate and suggest module names in configs."""

from __future__ import annotations

import difflib
from typing import Any

from ftsdk.plugin.errors import ConfigError


def linear_module_names(model: Any) -> list[str]:
    """Short names (last path component) of the model's linear layers, the output head excluded."""
    import torch

    names = {
        full.rsplit(".", 1)[-1]
        for full, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt", "Conv1D")
    }
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head = {full.rsplit(".", 1)[-1] for full, module in model.named_modules() if module is output}
    return sorted(names - head)


def check_module_names(model: Any, wanted: list[str], option: str) -> None:
    """Raise ConfigError naming every entry of ``wanted`` that matches no module of ``model``."""
    all_names = {full.rsplit(".", 1)[-1] for full, _ in model.named_modules()} | {
        full for full, _ in model.named_modules()
    }
    missing = [name for name in wanted if name not in all_names]
    if not missing:
        return
    real = linear_module_names(model)
    suggestions = []
    for name in missing:
        close = difflib.get_close_matches(name, real, n=1, cutoff=0.4)
        suggestions.append(f"'{name}' -> did you mean '{close[0]}'?" if close else f"'{name}' has no close match")
    raise ConfigError(
        f"{option}: {len(missing)} name(s) match no layer of {type(model).__name__}: " + "; ".join(suggestions),
        hint=f"this model's linear layers are: {', '.join(real)} (or use \"all-linear\")",
    )
