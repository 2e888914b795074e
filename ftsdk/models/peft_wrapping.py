"""Wrap a model with PEFT without importing quantization backends the model does not use.

PEFT asks, for every layer it wraps, whether GPT-QModel is installed and, if so, imports it to test the layer
for GPTQ/AWQ types. That import takes a second and 130 MB or more (GPT-QModel 7.6) even when the model holds no
quantized layer. While a model that is not GPTQ/AWQ quantized is wrapped, PEFT is told GPT-QModel is absent.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ftsdk.plugin.errors import ModelLoadError

#: quantization methods whose layers PEFT finds through GPT-QModel
GPTQMODEL_METHODS = frozenset({"gptq", "awq"})


def uses_gptqmodel(model: Any) -> bool:
    """Whether ``model`` was quantized by a method whose layers PEFT recognises through GPT-QModel."""
    quantization = getattr(getattr(model, "config", None), "quantization_config", None)
    if quantization is None:
        return False
    method = quantization.get("quant_method") if isinstance(quantization, dict) else getattr(
        quantization, "quant_method", None)
    return str(getattr(method, "value", method)).lower() in GPTQMODEL_METHODS


@contextmanager
def without_unused_backends(model: Any) -> Iterator[None]:
    """Within the block, PEFT treats GPT-QModel as not installed unless ``model`` needs it."""
    import peft.import_utils

    original = peft.import_utils.is_gptqmodel_available
    if uses_gptqmodel(model):
        yield
        return
    holders = [module for name, module in list(sys.modules.items())
               if name.startswith("peft.") and getattr(module, "is_gptqmodel_available", None) is original]
    for module in holders:
        module.is_gptqmodel_available = _absent
    try:
        yield
    finally:
        for module in holders:
            module.is_gptqmodel_available = original


def _absent() -> bool:
    return False


def wrap(model: Any, peft_config: Any) -> Any:
    """``peft.get_peft_model`` without the unused imports."""
    import peft

    with without_unused_backends(model):
        return peft.get_peft_model(model, peft_config)


def refuse_loftq(folder: str | Path) -> None:
    """Refuse a LoftQ adapter: it was trained against its base's quantized weights, and ftsdk loads bases in full
    precision, where the adapter would count the quantization error twice."""
    config = Path(folder) / "adapter_config.json"
    if config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("init_lora_weights") == "loftq":
        raise ModelLoadError(
            f"{folder} is a LoftQ adapter: it applies to its base quantized as LoftQ quantized it, which ftsdk "
            "does not load yet",
            hint="load the base with the BitsAndBytesConfig docs/adapters/lora.md (Variants) names, then "
            "peft.PeftModel.from_pretrained",
        )


def load_adapter(model: Any, folder: str | Path, **kwargs: Any) -> Any:
    """``peft.PeftModel.from_pretrained`` without the unused imports; LoftQ adapters are refused."""
    from peft import PeftModel

    refuse_loftq(folder)

    with without_unused_backends(model):
        return PeftModel.from_pretrained(model, str(folder), **kwargs)
