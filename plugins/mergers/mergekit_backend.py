"""mergekit itself as a merger: what ftsdk's engine does not run (frankenmerges, model_stock, nuslerp, sce...).

mergekit (LGPL-3.0-only, https://github.com/arcee-ai/mergekit) runs in-process through its Python API,
``mergekit.merge.run_merge``, on the CPU, into ftsdk's temporary output folder; ftsdk checks the document
and the inputs first, writes the manifest (input hashes, mergekit's version, the seed) and the model card,
and makes the folder appear only once complete. ``ftsdk merge`` hands a mergekit YAML to this plugin when
its own engine cannot run it (:mod:`ftsdk.merging.mergekit_config`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import random
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import Field

from ftsdk import PluginConfig, hookimpl
from ftsdk.merging.inputs import ModelFolder, open_model
from ftsdk.merging.mergekit_config import referenced_models
from ftsdk.merging.request import same_model
from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.jobs import MergeInput, MergeRequest
from ftsdk.plugin.kinds import Merger

if TYPE_CHECKING:
    from mergekit.config import MergeConfiguration

LICENSE = "LGPL-3.0-only"
_LAYER = re.compile(r"\.layers\.\d+\.")


class MergekitOptions(PluginConfig):
    """Options of the mergekit merger."""

    config: dict[str, Any] = Field(
        examples=[{"merge_method": "model_stock"}],
        description="Required. The mergekit document (what mergekit-yaml reads: merge_method, models or slices, "
        "base_model, parameters, dtype, tokenizer...), checked by mergekit's own MergeConfiguration. Filled in "
        "for you when `ftsdk merge` hands a mergekit YAML over.",
    )
    seed: int | None = Field(
        None, ge=0, examples=[0], le=2**32 - 1, description="mergekit's --random-seed, for its random methods (dare_*, della*, "
        "sce...); none draws one (recorded in ftsdk.json). Written as parameters.seed in a handed-over YAML.",
    )
    allow_crimes: bool = Field(False, description="mergekit's --allow-crimes: let it merge different architectures.")


class MergekitInput(PluginConfig):
    """Each model's options go inside `config`, in mergekit's syntax."""


class MergekitMerger(Merger):
    """Runs mergekit on a document ftsdk's own engine does not support; ftsdk checks, hashes and records it."""

    name = "mergekit"
    summary = "mergekit itself (LGPL-3.0): layer-range slices, passthrough, model_stock, nuslerp, sce, karcher..."
    Config = MergekitOptions
    InputParams = MergekitInput
    requires = ("mergekit", "torch")
    install_hint = 'pip install "ftsdk[mergekit]"'

    config: MergekitOptions

    def prepare(self, request: MergeRequest) -> MergekitRun:
        raw = self.config.config
        document = _document(raw)
        folders = _open_inputs(request, raw)
        _check_shapes(folders)
        _check_layer_ranges(raw, folders)
        _plan(document, self._options(request, seed=0))
        seed = self.config.seed if self.config.seed is not None else secrets.randbits(31)
        return MergekitRun(self, request, raw, document, folders, seed)

    def _options(self, request: MergeRequest, seed: int) -> Any:
        from mergekit.merge import MergeOptions

        return MergeOptions(
            allow_crimes=self.config.allow_crimes, out_shard_size=request.max_shard_size, copy_tokenizer=True,
            random_seed=seed, write_model_card=False, safe_serialization=True, device="cpu", quiet=True,
        )


def _document(raw: dict[str, Any]) -> MergeConfiguration:
    """mergekit's own validation of the document, its errors as ConfigError; the method must be mergekit's."""
    from mergekit import merge_methods
    from mergekit.config import MergeConfiguration
    from pydantic import ValidationError

    try:
        document = MergeConfiguration.model_validate(raw)
    except (ValidationError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"parameters.config is not a valid mergekit config: {exc}",
                          hint="write it as mergekit-yaml reads it (see docs/mergers/mergekit.md)") from None
    try:
        merge_methods.get(document.merge_method)
    except RuntimeError:
        known = sorted(m.spec.name for m in merge_methods.registry.registered_methods())
        raise ConfigError(f"mergekit has no merge method '{document.merge_method}'",
                          hint=f"mergekit's methods: {', '.join(known)}") from None
    return document


def _plan(document: MergeConfiguration, options: Any) -> None:
    """mergekit's own up-front work, without writing: architectures, then every tensor's task and parameters."""
    from mergekit.architecture import get_architecture_info
    from mergekit.merge import _model_out_config  # the output config mergekit builds (no public name in 0.1.x)
    from mergekit.plan import MergePlanner

    try:
        architecture = get_architecture_info(document, options)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"mergekit refuses the inputs: {exc}",
                          hint="merge models of one architecture (allow_crimes: true lets mergekit try)") from None
    try:
        planner = MergePlanner(document, architecture, options=options,
                               out_model_config=_model_out_config(document, architecture))
        planner.plan_to_disk(out_path=os.devnull)  # builds the task graph; nothing is written
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ConfigError(f"mergekit cannot plan this merge: {exc}",
                          hint="see the method's parameters in mergekit's documentation") from None


def _open_inputs(request: MergeRequest, raw: dict[str, Any]) -> dict[str, ModelFolder]:
    """Every model the document names, as one of the request's inputs, opened (folder, config, weights)."""
    folders: dict[str, ModelFolder] = {}
    for reference in referenced_models(raw):
        source = next((i for i in request.inputs if same_model(i.reference, reference)), None)
        if source is None:
            source = MergeInput(reference, MergekitInput(), None)
        if ("+" in reference or "@" in reference) and not Path(reference).expanduser().is_dir():
            raise ConfigError(f"{source.label}: mergekit's 'model+lora' and 'model@revision' forms are not supported",
                              hint="inputs are local model folders; merge a LoRA into its model first")
        model = open_model(source)
        model.checkpoint.close()
        folders[reference] = model
    return folders


def _check_shapes(folders: dict[str, ModelFolder]) -> None:
    """The inputs' tensors agree in name and shape, layer for layer (the vocabulary's rows may differ): mergekit
    would otherwise fail midway through the merge."""
    def layout(model: ModelFolder) -> dict[str, tuple[int, ...]]:
        shapes = {}
        for name, info in model.checkpoint.tensors.items():
            shape = tuple(info.shape)
            shapes[_LAYER.sub(".layers.N.", name)] = shape[1:] if shape and shape[0] == model.vocab_size else shape
        return shapes

    models = list(folders.values())
    first = layout(models[0])
    for other in models[1:]:
        theirs = layout(other)
        differing = sorted(n for n in set(first) | set(theirs) if first.get(n) != theirs.get(n))
        if differing:
            name = differing[0]
            raise ConfigError(f"{models[0].label} and {other.label} differ at {name}: {first.get(name)} vs "
                              f"{theirs.get(name)}", hint="mergekit merges models of one architecture and size")


def _check_layer_ranges(raw: dict[str, Any], folders: dict[str, ModelFolder]) -> None:
    """Every slice's layer_range within its model's layers (mergekit would fail midway, or silently clamp)."""
    for index, piece in enumerate(raw.get("slices") or []):
        for source in piece["sources"]:
            model = folders[source["model"]]
            start, end = source["layer_range"]
            if not 0 <= start < end <= model.num_layers:
                raise ConfigError(
                    f"slices[{index}]: layer_range {[start, end]} of {model.label} is outside its "
                    f"{model.num_layers} layers", hint=f"use a range within [0, {model.num_layers}]",
                )


@contextlib.contextmanager
def _own_random_state() -> Iterator[None]:
    """mergekit seeds Python's, NumPy's and torch's global generators: put them back afterwards."""
    import numpy as np
    import torch

    python, numpy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy)


def weights_sha256(folder: ModelFolder) -> str:
    """The SHA-256 ftsdk's engine records for an input: of each tensor's bytes, by name (not sharding-dependent)."""
    import torch

    from ftsdk.merging.safetensors_io import Checkpoint

    checkpoint = Checkpoint(folder.path)
    try:
        lines = []
        for name in sorted(checkpoint.tensors):
            data = checkpoint.read(name).reshape(-1).view(torch.uint8).numpy().data
            lines.append(f"{name}:{hashlib.sha256(data).hexdigest()}\n")
    finally:
        checkpoint.close()
    return hashlib.sha256("".join(lines).encode()).hexdigest()


class MergekitRun:
    """A checked mergekit merge, ready to run into an output folder."""

    produces = "model"

    def __init__(self, merger: MergekitMerger, request: MergeRequest, raw: dict[str, Any],
                 document: MergeConfiguration, folders: dict[str, ModelFolder], seed: int) -> None:
        self.merger, self.request, self.raw, self.document = merger, request, raw, document
        self.folders, self.seed = folders, seed

    def run(self, folder: Path) -> dict[str, Any]:
        import torch
        from mergekit.merge import run_merge

        previous = torch.get_num_threads()
        torch.set_num_threads(self.request.threads or max(1, (os.cpu_count() or 2) - 1))
        try:
            with _own_random_state():
                run_merge(self.document, str(folder), self.merger._options(self.request, self.seed))
        finally:
            torch.set_num_threads(previous)
        (folder / "mergekit_config.yml").write_text(yaml.safe_dump(self.raw, sort_keys=False), encoding="utf-8")
        files = sorted(p.name for p in folder.iterdir() if p.suffix == ".safetensors" or p.name.endswith(".index.json"))
        return {
            "inputs": [self._describe(model) for model in self.folders.values()],
            "files": files,
            "seed": self.seed,
            "dtype": self.document.dtype,
            "out_dtype": self.document.out_dtype,
            "mergekit": {"version": importlib.metadata.version("mergekit"), "license": LICENSE,
                         "merge_method": self.document.merge_method},
        }

    def _describe(self, model: ModelFolder) -> dict[str, Any]:
        base = self.raw.get("base_model")
        return {
            "role": "base" if isinstance(base, str) and same_model(base, model.source.reference) else "model",
            "reference": model.source.reference,
            "path": str(model.path.resolve()),
            "parameters": None,
            "weights_sha256": weights_sha256(model),
            "config_sha256": hashlib.sha256((model.path / "config.json").read_bytes()).hexdigest(),
        }


@hookimpl
def register_mergers(register):
    register(MergekitMerger)
