"""Input model folders and the up-front checks: one architecture, one set of tensors, compatible shapes.

Tied embeddings: a model saved with tied input/output embeddings has no ``lm_head.weight``; when other
inputs do have one, the tied model contributes its input embeddings in its place and the output is
written untied. Vocabulary sizes: see :func:`plan_tensors`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ftsdk.merging.safetensors_io import FLOAT_CODES, Checkpoint, TensorInfo
from ftsdk.plugin.errors import ConfigError, ModelLoadError
from ftsdk.plugin.jobs import MergeInput
from ftsdk.plugin.per_layer import layer_index

VOCAB_DOC = "see 'Vocabulary sizes' in docs/mergers.md"


@dataclass
class ModelFolder:
    """One input model: its folder, config.json and the headers of its weights."""

    source: MergeInput
    path: Path
    config: dict[str, Any]
    checkpoint: Checkpoint

    @property
    def label(self) -> str:
        return self.source.label

    @property
    def architecture(self) -> str:
        return ",".join(self.config.get("architectures") or []) or str(self.config.get("model_type", "?"))

    @property
    def vocab_size(self) -> int | None:
        return self.config.get("vocab_size") or (self.config.get("text_config") or {}).get("vocab_size")

    @cached_property
    def num_layers(self) -> int:
        indices = [layer_index(name) for name in self.checkpoint.tensors]
        return max((i for i in indices if i is not None), default=-1) + 1

    @cached_property
    def token_of_id(self) -> dict[int, str] | None:
        """id -> token from tokenizer.json (vocabulary and added tokens), or None without one."""
        path = self.path / "tokenizer.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        vocab = (data.get("model") or {}).get("vocab") or {}
        if isinstance(vocab, dict):
            tokens = {int(i): token for token, i in vocab.items()}
        else:  # unigram vocabularies are lists of [token, score]
            tokens = dict(enumerate(entry[0] for entry in vocab))
        tokens.update({int(added["id"]): added["content"] for added in data.get("added_tokens") or []})
        return tokens


def open_model(source: MergeInput) -> ModelFolder:
    """Find an input's folder and read its config and weight headers; errors name the input."""
    from ftsdk.models.loading import ALIASES, resolve

    reference = source.reference
    path = Path(resolve(reference).source) if reference in ALIASES else Path(reference).expanduser()
    if not path.is_dir():
        if "+" in reference and Path(reference.split("+")[0]).exists():
            raise ConfigError(f"{source.label}: mergekit's 'model+lora' form is not supported",
                              hint="merge the adapter into its model first (Chain.merge_adapter), or use peft_adapters")
        raise ModelLoadError(f"{source.label}: no such model folder",
                             hint="inputs are local folders written by save_pretrained (download hub models first)")
    if not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file():
            raise ConfigError(f"{source.label} is a PEFT adapter, not a model",
                              hint="merge adapters with method 'peft_adapters', or merge each into its base first")
        raise ModelLoadError(f"{source.label} has no config.json", hint="point at a folder written by save_pretrained")
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    try:
        checkpoint = Checkpoint(path)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{source.label}: {exc.message}", hint=exc.hint) from None
    return ModelFolder(source, path, config, checkpoint)


@dataclass(frozen=True)
class OutputTensor:
    """One tensor of the merged model and where each input's contribution comes from."""

    name: str
    shape: tuple[int, ...]
    #: per input (in the merge's input order): the tensor read from it
    sources: tuple[TensorInfo, ...]
    #: rows every input is cut or filled to (vocabulary alignment), None when shapes already agree
    rows: int | None = None

    @property
    def floating(self) -> bool:
        return all(s.dtype in FLOAT_CODES for s in self.sources)


@dataclass(frozen=True)
class TensorPlan:
    """The merged model's tensors, in processing order, and what changes in its config."""

    tensors: list[OutputTensor]
    #: True when some inputs have a separate output embedding and others are tied: the output is untied
    untie: bool
    #: the tokenizer source's vocab_size, which the output takes
    vocab_size: int | None


def check_architectures(models: list[ModelFolder]) -> None:
    """Refuse inputs of different architectures or layer counts, naming them."""
    first = models[0]
    for other in models[1:]:
        if other.architecture != first.architecture:
            raise ConfigError(
                f"inputs have different architectures: {first.label} is {first.architecture}, "
                f"{other.label} is {other.architecture}",
                hint="only models of one architecture can be merged",
            )
        if other.num_layers != first.num_layers:
            raise ConfigError(
                f"inputs have different numbers of layers: {first.label} has {first.num_layers}, "
                f"{other.label} has {other.num_layers}",
                hint="layer-range (frankenmerge) merges are not supported",
            )
    for model in models:
        span = model.source.layer_range
        if span is not None and tuple(span) != (0, model.num_layers):
            raise ConfigError(
                f"{model.label}: layer_range {list(span)} does not span its {model.num_layers} layers",
                hint="ftsdk's engine merges whole models; the mergekit merger runs layer slices (backend: auto)",
            )


def _tied_names(models: list[ModelFolder], missing: set[str]) -> dict[str, str]:
    """Output-embedding name -> input-embedding name for the names some inputs lack (from transformers)."""
    import transformers

    for model in models:
        for arch in model.config.get("architectures") or []:
            keys = getattr(getattr(transformers, arch, None), "_tied_weights_keys", None)
            if isinstance(keys, dict):
                return {target: source for target, source in keys.items() if target in missing}
    return {}


def _source_names(models: list[ModelFolder]) -> dict[str, list[str]]:
    """Output name -> the tensor name read from each input, filling untied output embeddings for tied models."""
    names = [set(m.checkpoint.tensors) for m in models]
    union = set().union(*names)
    missing = {n for n in union if not all(n in s for s in names)}
    tied = _tied_names(models, missing) if missing else {}
    sources: dict[str, list[str]] = {}
    for name in sorted(union):
        per_model = []
        for model, present in zip(models, names):
            if name in present:
                per_model.append(name)
            elif name in tied and tied[name] in present and model.config.get("tie_word_embeddings", True):
                per_model.append(tied[name])
            else:
                holders = [m.label for m, s in zip(models, names) if name in s]
                raise ConfigError(
                    f"tensor {name} is in {', '.join(holders)} but not in {model.label}",
                    hint="inputs must have the same tensors (same architecture and size)",
                )
        sources[name] = per_model
    return sources


def plan_tensors(models: list[ModelFolder], tokenizer_source: ModelFolder) -> TensorPlan:
    """Check that every tensor can be merged and say where each input's part comes from.

    Vocabulary sizes: when the only shape difference is the number of rows of the embedding tensors
    (each input's ``vocab_size``), and every input's tokenizer gives the same token for every id both
    have, each input is cut or filled to the tokenizer source's row count; rows an input lacks are
    taken from the tokenizer source. Otherwise the merge is refused with the models and sizes named.
    """
    check_architectures(models)
    tensors = []
    for name, names in _source_names(models).items():
        infos = tuple(m.checkpoint.tensors[n] for m, n in zip(models, names))
        shapes = {info.shape for info in infos}
        if len(shapes) == 1:
            tensors.append(OutputTensor(name, infos[0].shape, infos))
            continue
        rows = _aligned_rows(name, models, infos, tokenizer_source)
        tensors.append(OutputTensor(name, (rows, *infos[0].shape[1:]), infos, rows))
    untie = any(len({source.name for source in t.sources}) > 1 for t in tensors)
    return TensorPlan(tensors, untie, tokenizer_source.vocab_size)


def _aligned_rows(name: str, models: list[ModelFolder], infos: tuple[TensorInfo, ...], source: ModelFolder) -> int:
    listing = ", ".join(f"{m.label} {list(i.shape)}" for m, i in zip(models, infos))
    is_vocab = all(
        i.shape[1:] == infos[0].shape[1:] and len(i.shape) >= 1 and i.shape[0] == m.vocab_size
        for m, i in zip(models, infos)
    )
    if not is_vocab:
        raise ConfigError(f"tensor {name} has different shapes: {listing}",
                          hint="only models of one architecture and size can be merged")
    reference = source.token_of_id
    for model in models:
        if model is source:
            continue
        tokens = model.token_of_id
        if reference is None or tokens is None:
            raise ConfigError(
                f"vocabulary sizes differ ({listing}) and {model.label if tokens is None else source.label} "
                "has no tokenizer.json to check that token ids agree",
                hint=VOCAB_DOC,
            )
        common = min(model.vocab_size or 0, source.vocab_size or 0)
        for token_id in range(common):
            if tokens.get(token_id) != reference.get(token_id):
                raise ConfigError(
                    f"vocabulary sizes differ ({listing}) and the tokenizers disagree: token id {token_id} is "
                    f"{tokens.get(token_id)!r} in {model.label} but {reference.get(token_id)!r} in {source.label}",
                    hint="merge models that share a tokenizer; " + VOCAB_DOC,
                )
    return next(i for m, i in zip(models, infos) if m is source).shape[0]
