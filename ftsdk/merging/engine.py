"""The streaming merge engine every tensor-wise merger runs on.

A :class:`TensorMerger` plugin writes only the math for one tensor (:meth:`TensorMerger.merge_tensor`).
The engine checks the inputs up front, resolves every option for every tensor (so a missing weight fails
before any work), then walks the tensors in name order (mergekit's order, which makes seeded random
methods reproduce mergekit's draws): a background thread reads and hashes the next tensor of every input
while the current one is merged and streamed into the output shards. Peak memory is a few tensors. The math
runs on every core but one (``threads``): the reader keeps one, and oversubscribed torch threads spin.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from abc import abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic_core import PydanticUndefined

from ftsdk.merging.inputs import ModelFolder, OutputTensor, TensorPlan, open_model, plan_tensors
from ftsdk.merging.safetensors_io import CODE_OF_NAME, DTYPE_NAMES, PlannedTensor, ShardedWriter
from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.jobs import MergeInput, MergeRequest
from ftsdk.plugin.kinds import Merger, PluginConfig
from ftsdk.plugin.per_layer import evaluate, layer_position

if TYPE_CHECKING:
    import torch

#: the next tensor's inputs are read during the current merge only when they are at most this big,
#: so the largest tensors (embeddings) are never held twice
PREFETCH_BYTES = 64 << 20
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "added_tokens.json",
    "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
)


@dataclass
class TensorJob:
    """One output tensor to merge. The input tensors are fresh buffers the merger may change in place."""

    name: str
    #: the base model's tensor (None when the method takes no base)
    base: torch.Tensor | None
    #: the other inputs' tensors, in config order (every input when the method takes no base)
    inputs: list[torch.Tensor]
    #: the method's options (``Config`` fields by name) resolved for this tensor
    options: dict[str, Any]
    #: each input's options (``InputParams`` fields by name) resolved for this tensor, aligned with ``inputs``
    params: list[dict[str, Any]]
    #: the merge's random generator, seeded once (None for deterministic methods)
    generator: torch.Generator | None


def _cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _value(value: Any, tensor: str, t: float) -> Any:
    """A setting evaluated for one tensor; other values as they are."""
    return evaluate(value, tensor, t) if isinstance(value, list) else value


def resolve_options(config: PluginConfig, tensor: str, t: float) -> dict[str, Any]:
    """The method's options for one tensor: gradients and filters evaluated, defaults where no filter matched."""
    resolved = {}
    for name, field in type(config).model_fields.items():
        value = getattr(config, name)
        if isinstance(value, list):
            value = _value(value, tensor, t)
            if value is None:
                if field.default is PydanticUndefined:
                    raise ConfigError(f"parameters.{field.alias or name}: no entry applies to tensor {tensor}",
                                      hint="add an entry without a filter as the last one")
                value = field.default
        resolved[name] = value
    return resolved


def resolve_input(layers: list[PluginConfig], tensor: str, t: float) -> tuple[dict[str, Any], list[str]]:
    """One input's options for one tensor, from the first layer that sets them (its own, then the defaults).

    Returns the values and the names of the options left without one (their default is None).
    """
    resolved, missing = {}, []
    for name, field in type(layers[0]).model_fields.items():
        value = None
        for layer in layers:
            if name in layer.model_fields_set:
                value = _value(getattr(layer, name), tensor, t)
                if value is not None:
                    break
        if value is None:
            value = field.default
        if value is None:
            missing.append(name)
        resolved[name] = value
    return resolved, missing


class TensorMerger(Merger):
    """A merger computed tensor by tensor on the streaming engine: subclasses implement :meth:`merge_tensor`."""

    #: whether the base model is the reference point (task vectors); if not, it is one more input
    uses_base: ClassVar[bool] = True
    #: how many inputs other than the base the method takes
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = None

    @abstractmethod
    def merge_tensor(self, job: TensorJob) -> torch.Tensor:
        """Merge one tensor; the result has the inputs' shape (any floating dtype: the engine casts it)."""

    def check_tensor(self, name: str, options: dict[str, Any], params: list[dict[str, Any]]) -> None:
        """Raise ConfigError if the options resolved for one tensor cannot work (called before merging)."""

    def random_seed(self) -> int | None:
        """The seed of the merge's random generator, drawn once per merge; None for deterministic methods."""
        return None

    def prepare(self, request: MergeRequest) -> StreamingMerge:
        if self.uses_base and request.base is None:
            raise ConfigError(f"method '{self.name}' needs a base_model",
                              hint="name the model the others were tuned from")
        counted = request.others if self.uses_base else request.inputs
        wanted = f"{self.min_inputs}" if self.max_inputs == self.min_inputs else f"at least {self.min_inputs}"
        if len(counted) < self.min_inputs or (self.max_inputs is not None and len(counted) > self.max_inputs):
            role = "models besides the base model" if self.uses_base else "models"
            raise ConfigError(f"method '{self.name}' takes {wanted} {role}, got {len(counted)}")
        models = [open_model(source) for source in request.inputs]
        plan = plan_tensors(models, models[request.inputs.index(request.tokenizer_source)])
        return StreamingMerge(self, request, models, plan, self._resolve_all(request, models, plan))

    def _resolve_all(
        self, request: MergeRequest, models: list[ModelFolder], plan: TensorPlan
    ) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        merged = [m for m in models if not (self.uses_base and m.source is request.base)]
        resolved = []
        missing: dict[tuple[str, str], str] = {}
        for tensor in plan.tensors:
            t = layer_position(tensor.name, models[0].num_layers)
            options = resolve_options(self.config, tensor.name, t)
            params = []
            for model in merged:
                values, absent = resolve_input([model.source.params, request.defaults], tensor.name, t)
                params.append(values)
                for name in absent:
                    missing.setdefault((model.label, name), tensor.name)
            if not missing:
                self.check_tensor(tensor.name, options, params)
            resolved.append((options, params))
        if missing:
            lines = [f"{label}: no {name} for tensor {example}" for (label, name), example in missing.items()]
            raise ConfigError(f"method '{self.name}' is missing options:\n  " + "\n  ".join(lines),
                              hint="set them in the model's parameters, or for every model under 'parameters'")
        return resolved


class StreamingMerge:
    """A checked tensor-wise merge, ready to stream into an output folder."""

    produces = "model"

    def __init__(
        self,
        merger: TensorMerger,
        request: MergeRequest,
        models: list[ModelFolder],
        plan: TensorPlan,
        resolved: list[tuple[dict[str, Any], list[dict[str, Any]]]],
    ) -> None:
        self.merger, self.request, self.models, self.plan, self.resolved = merger, request, models, plan, resolved
        self.seed = merger.random_seed()
        self.base_index = request.inputs.index(request.base) if merger.uses_base and request.base else None
        self.source_index = request.inputs.index(request.tokenizer_source)
        self.compute_dtypes = [self._compute_dtype(t) for t in plan.tensors]
        out_code = CODE_OF_NAME[request.out_dtype] if request.out_dtype else None
        self.layout = [
            PlannedTensor(t.name, out_code if out_code and t.floating else code, t.shape)
            for t, code in zip(plan.tensors, self.compute_dtypes)
        ]
        self.digests: list[dict[str, str]] = [{} for _ in models]

    def _compute_dtype(self, tensor: OutputTensor) -> str:
        codes = {s.dtype for s in tensor.sources}
        if not tensor.floating:
            if len(codes) > 1:
                raise ConfigError(f"tensor {tensor.name} is not floating point and its dtype differs between inputs")
            return codes.pop()
        if self.request.dtype:
            return CODE_OF_NAME[self.request.dtype]
        import torch

        promoted = getattr(torch, DTYPE_NAMES[tensor.sources[0].dtype])
        for code in codes:
            promoted = torch.promote_types(promoted, getattr(torch, DTYPE_NAMES[code]))
        return CODE_OF_NAME[str(promoted).removeprefix("torch.")]

    def run(self, folder: Path) -> dict[str, Any]:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.request.threads or max(1, _cores() - 1))
        try:
            return self._stream(folder)
        finally:
            torch.set_num_threads(previous)

    def _stream(self, folder: Path) -> dict[str, Any]:
        import torch
        from tqdm.auto import tqdm

        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        writer = ShardedWriter(folder, self.layout, self.request.max_shard_size)
        total = sum(t.nbytes for t in self.layout)
        count = len(self.plan.tensors)
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="ftsdk-read") as pool, tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"merging ({self.merger.name})",
                dynamic_ncols=True,
            ) as bar:
                upcoming: Future[list[torch.Tensor]] | None = pool.submit(self._load, 0)
                for index, planned in enumerate(self.layout):
                    loaded = upcoming.result() if upcoming is not None else self._load(index)
                    upcoming = None
                    if index + 1 < count and self._input_bytes(index + 1) <= PREFETCH_BYTES:
                        upcoming = pool.submit(self._load, index + 1)
                    merged = self._merge(index, loaded, generator)
                    del loaded
                    writer.write(planned.name, merged.to(getattr(torch, DTYPE_NAMES[planned.dtype])))
                    del merged
                    bar.update(planned.nbytes)
            files = writer.close()
        except BaseException:
            writer.abort()
            raise
        finally:
            for model in self.models:
                model.checkpoint.close()
        self._write_config(folder)
        return {
            "inputs": [self._describe(model, digests) for model, digests in zip(self.models, self.digests)],
            "files": files,
            "tensors": count,
            "seed": self.seed,
            "dtype": self.request.dtype,
            "out_dtype": self.request.out_dtype,
            "vocab_size": self.plan.vocab_size,
            "untied_embeddings": self.plan.untie,
        }

    def _input_bytes(self, index: int) -> int:
        return sum(source.nbytes for source in self.plan.tensors[index].sources)

    def _load(self, index: int) -> list[torch.Tensor]:
        """Every input's part of one output tensor, hashed as read, aligned in rows, cast to the compute dtype."""
        import torch

        tensor = self.plan.tensors[index]
        parts = []
        for model, source, digests in zip(self.models, tensor.sources, self.digests):
            part = model.checkpoint.read(source.name)
            if source.name not in digests:
                digests[source.name] = hashlib.sha256(part.reshape(-1).view(torch.uint8).numpy().data).hexdigest()
            parts.append(part)
        if tensor.rows is not None:
            fill = parts[self.source_index]
            parts = [p[: tensor.rows] if len(p) >= tensor.rows else torch.cat([p, fill[len(p) :]]) for p in parts]
        dtype = getattr(torch, DTYPE_NAMES[self.compute_dtypes[index]])
        return [p.to(dtype) for p in parts]

    def _merge(self, index: int, parts: list[torch.Tensor], generator: torch.Generator | None) -> torch.Tensor:
        import torch

        tensor = self.plan.tensors[index]
        if not tensor.floating:
            if any(not torch.equal(parts[0], p) for p in parts[1:]):
                raise ConfigError(f"tensor {tensor.name} is not floating point and differs between inputs",
                                  hint="such buffers must be equal in every input")
            return parts[0]
        base = parts[self.base_index] if self.base_index is not None else None
        others = [p for i, p in enumerate(parts) if i != self.base_index]
        options, params = self.resolved[index]
        merged = self.merger.merge_tensor(TensorJob(tensor.name, base, others, options, params, generator))
        if merged.shape != tensor.shape:
            raise RuntimeError(f"merger '{self.merger.name}' returned shape {tuple(merged.shape)} for {tensor.name}")
        return merged

    def _describe(self, model: ModelFolder, digests: dict[str, str]) -> dict[str, Any]:
        source: MergeInput = model.source
        combined = hashlib.sha256("".join(f"{name}:{digests[name]}\n" for name in sorted(digests)).encode())
        return {
            "role": "base" if source is self.request.base else "model",
            "reference": source.reference,
            "path": str(model.path.resolve()),
            "parameters": source.params.model_dump(mode="json", by_alias=True, exclude_unset=True),
            "weights_sha256": combined.hexdigest(),
            "config_sha256": hashlib.sha256((model.path / "config.json").read_bytes()).hexdigest(),
        }

    def _write_config(self, folder: Path) -> None:
        """config.json from the base (else first) model with the merged vocabulary, tying and dtype; tokenizer files."""
        base = self.request.base
        donor = self.models[self.request.inputs.index(base) if base is not None else 0]
        config = dict(donor.config)
        if self.plan.vocab_size is not None and "vocab_size" in config:
            config["vocab_size"] = self.plan.vocab_size
        if self.plan.untie:
            config["tie_word_embeddings"] = False
        dtype = self.request.out_dtype or self.request.dtype
        if dtype:
            config["dtype"] = dtype
            if "torch_dtype" in config:
                config["torch_dtype"] = dtype
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if (donor.path / "generation_config.json").is_file():
            shutil.copy2(donor.path / "generation_config.json", folder / "generation_config.json")
        tokenizer = self.models[self.source_index].path
        for name in TOKENIZER_FILES:
            if (tokenizer / name).is_file():
                shutil.copy2(tokenizer / name, folder / name)
