"""mergekit documents ftsdk's engine cannot run, and their hand-over to the ``mergekit`` merger plugin.

A merge config in mergekit's spelling that uses something only mergekit implements (layer-range
``slices``, one of mergekit's own methods, ``tokenizer_source: union``, ``modules``, ``chat_template``)
is rewritten, before validation, into a config for the ``mergekit`` merger: the document itself goes
under ``parameters.config`` and the models it references become the inputs ftsdk checks, hashes and
records. ``backend`` chooses: ``auto`` (the default) hands over only what ftsdk's engine cannot run,
``mergekit`` hands over everything, ``ftsdk`` never hands over (such configs are refused). Pure Python:
nothing here imports torch or mergekit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

#: mergekit 0.1.5's methods that ftsdk's engine does not implement (a test compares this with mergekit's registry)
MERGEKIT_ONLY_METHODS = (
    "arcee_fusion", "karcher", "model_stock", "multislerp", "nearswap", "nuslerp", "passthrough", "ram",
    "ramplus_tl", "sce",
)
#: keys of a merge config that are ftsdk's own, never part of the mergekit document
FTSDK_KEYS = ("output", "overwrite", "max_shard_size", "threads", "backend")
BACKENDS = ("auto", "ftsdk", "mergekit")


def _num_layers(reference: str) -> int | None:
    """``num_hidden_layers`` from a local model folder's config.json (None when it cannot be read)."""
    path = Path(reference).expanduser() / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    layers = config.get("num_hidden_layers") or (config.get("text_config") or {}).get("num_hidden_layers")
    return layers if isinstance(layers, int) else None


def _slices_reason(slices: Any) -> str | None:
    if not isinstance(slices, list):
        return None
    if len(slices) != 1:
        return f"{len(slices)} entries under 'slices' (a layer-range merge)"
    only = slices[0]
    if not isinstance(only, Mapping):
        return None
    if any(only.get(key) is not None for key in ("parameters", "base_model", "residual_weight")):
        return "parameters, base_model or residual_weight inside a slice"
    for source in only.get("sources") or []:
        if not isinstance(source, Mapping) or source.get("layer_range") is None:
            continue
        layers = _num_layers(str(source.get("model", "")))
        if layers is not None and list(source["layer_range"]) != [0, layers]:
            return f"layer_range {list(source['layer_range'])} of {source.get('model')}, which has {layers} layers"
    return None


def mergekit_reason(raw: Mapping[str, Any]) -> str | None:
    """Why ftsdk's engine cannot run this mergekit-spelled config (so mergekit must), or None if it can."""
    method = raw.get("merge_method", raw.get("method"))
    if method in MERGEKIT_ONLY_METHODS:
        return f"method '{method}' is implemented by mergekit only"
    if raw.get("modules") is not None:
        return "per-module merges ('modules')"
    if raw.get("chat_template") is not None:
        return "a chat template rewrite ('chat_template')"
    tokenizer = raw.get("tokenizer")
    if raw.get("tokenizer_source") == "union" or (
        isinstance(tokenizer, Mapping) and (set(tokenizer) - {"source"} or tokenizer.get("source") == "union")
    ):
        return "a merged vocabulary (tokenizer_source: union, or tokenizer settings besides 'source')"
    return _slices_reason(raw.get("slices"))


def _model_fields(document: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], str]]:
    """(mapping, key) of every model reference in a mergekit document, in document order (a tokenizer
    source of 'base' or 'union' names no model)."""
    def sections(node: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], str]]:
        if isinstance(node.get("base_model"), str):
            yield node, "base_model"
        tokenizer = node.get("tokenizer")
        for holder, key in ((node, "tokenizer_source"), (tokenizer if isinstance(tokenizer, Mapping) else {}, "source")):
            if isinstance(holder.get(key), str) and holder[key] not in ("base", "union"):
                yield holder, key
        for entry in node.get("models") or []:
            if isinstance(entry, Mapping) and isinstance(entry.get("model"), str):
                yield entry, "model"
        for piece in node.get("slices") or []:
            if isinstance(piece, Mapping):
                if isinstance(piece.get("base_model"), str):
                    yield piece, "base_model"
                for source in piece.get("sources") or []:
                    if isinstance(source, Mapping) and isinstance(source.get("model"), str):
                        yield source, "model"

    yield from sections(document)
    for module in (document.get("modules") or {}).values():
        if isinstance(module, Mapping):
            yield from sections(module)


def referenced_models(document: Mapping[str, Any]) -> list[str]:
    """Every model a mergekit document names, once each, in document order."""
    return list(dict.fromkeys(node[key] for node, key in _model_fields(document)))


def map_references(document: dict[str, Any], change: Callable[[str], str]) -> dict[str, Any]:
    """A deep copy of the document with ``change`` applied to every model reference."""
    copy = json.loads(json.dumps(document))
    for node, key in _model_fields(copy):
        node[key] = change(node[key])  # type: ignore[index]
    return copy


def hand_over(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The config for the ``mergekit`` merger that runs ``raw`` (a mergekit document plus ftsdk's own keys).

    ``parameters.seed`` (ftsdk's spelling for random methods) becomes the merger's seed, mergekit's
    ``--random-seed``; the rest of the document goes to mergekit unchanged.
    """
    document = {key: value for key, value in raw.items() if key not in FTSDK_KEYS}
    if "method" in document:
        document["merge_method"] = document.pop("method")
    parameters = dict(document.get("parameters") or {})
    seed = parameters.pop("seed", None)
    if "parameters" in document:
        document["parameters"] = parameters
    base = document.get("base_model")
    models = [{"model": reference} for reference in referenced_models(document) if reference != base]
    options: dict[str, Any] = {"config": document}
    if seed is not None:
        options["seed"] = seed
    return {
        **{key: raw[key] for key in FTSDK_KEYS if key in raw and key != "backend"},
        "method": "mergekit",
        "backend": "mergekit",
        "base_model": base if isinstance(base, str) else None,
        "models": models or [{"model": base}],
        "parameters": options,
    }
