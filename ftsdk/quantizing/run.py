"""Quantizing a model with a quantizer plugin: ``quantize(source, method, output) -> Path``.

Everything that can fail cheaply fails first (plugin lookup and its packages, the config, the kind of source,
the plugin's own ``check``, the output folder, the calibration file); then the plugin writes into a temporary
folder that becomes the output, with ``ftsdk.json`` (lineage, sizes, warnings, quality) and a model card.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ftsdk import plugins
from ftsdk.artifacts import (
    MANIFEST_NAME,
    claim_output,
    producer,
    read_manifest,
    sha256_file,
    write_output,
)
from ftsdk.plugin.errors import ConfigError, ModelLoadError
from ftsdk.plugin.jobs import QuantizeJob
from ftsdk.plugin.kinds import PluginConfig, Quantizer
from ftsdk.plugin.settings import validate_config
from ftsdk.quantizing.calibration import BUILTIN, TextsConfig, select_texts

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
#: warnings printed at most; the manifest keeps them all
MAX_PRINTED_WARNINGS = 10
#: how each kind of source is described in errors
KIND_WORDS = {"model": "a transformers model folder", "adapter": "a PEFT adapter folder",
              "quantized": "an already quantized model", "gguf": "a GGUF file"}


@dataclass(frozen=True)
class Source:
    """A model on disk and what it is."""

    path: Path
    #: "model", "adapter", "quantized" (a transformers folder with a quantization_config) or "gguf"
    kind: str
    #: its ``ftsdk.json`` when ftsdk wrote it
    manifest: dict[str, Any] | None


def classify_source(source: str | Path) -> Source:
    """What ``source`` is: a transformers folder, a PEFT adapter folder, a quantized model or a GGUF file.

    A model alias (``smollm2-135m``) resolves to its cached folder.
    """
    path = Path(source).expanduser()
    if not path.exists():
        from ftsdk.models.loading import ALIASES, resolve

        if str(source) in ALIASES:
            path = Path(resolve(str(source)).source)
        else:
            raise ModelLoadError(f"source {path} does not exist", hint="give a model folder, an adapter folder "
                                 f"or a model alias ({', '.join(ALIASES)})")
    if path.is_file():
        if path.suffix == ".gguf":
            return Source(path, "gguf", None)
        raise ModelLoadError(f"source {path} is a file, not a model folder", hint="give the folder that holds it")
    manifest = read_manifest(path) if (path / MANIFEST_NAME).is_file() else None
    if (path / "adapter_config.json").is_file():
        return Source(path, "adapter", manifest)
    if (path / "config.json").is_file():
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        return Source(path, "quantized" if config.get("quantization_config") else "model", manifest)
    if any(path.glob("*.gguf")):
        return Source(path, "gguf", manifest)
    raise ModelLoadError(f"{path} holds no model: no config.json, adapter_config.json or .gguf file",
                         hint="give a folder written by save_pretrained, a PEFT adapter folder or an ftsdk output")


def check_accepts(quantizer: type[Quantizer], kind: str, source: str | Path) -> None:
    """Refuse a kind of source the quantizer does not take, saying what to do instead."""
    if kind in quantizer.accepts:
        return
    if kind == "adapter":
        hint = f"merge the adapter first: ftsdk merge-adapter {source} merged/ (then quantize merged/)"
    elif kind in ("quantized", "gguf"):
        hint = "quantize the unquantized model it was made from"
    else:
        hint = f"'{quantizer.name}' takes {' or '.join(KIND_WORDS[k] for k in quantizer.accepts)}"
    raise ConfigError(f"quantizer '{quantizer.name}' cannot quantize {source}: it is {KIND_WORDS[kind]}", hint=hint)


def create_quantizer(method: str, config: PluginConfig | Mapping[str, Any] | None) -> Quantizer:
    """The quantizer plugin ``method`` built from ``config`` (unknown names, missing packages, bad options fail here)."""
    return cast(Quantizer, plugins.create("quantizer", method, config))


def texts_config(calibration: TextsConfig | Mapping[str, Any] | str | Path | None) -> TextsConfig:
    """Calibration options from a TextsConfig, a mapping, or just a data file (None: the built-in texts)."""
    if isinstance(calibration, (str, Path)):
        calibration = {"data": calibration}
    return validate_config(TextsConfig, calibration, where="calibration")


def quantize(
    source: str | Path,
    method: str,
    output: str | Path,
    *,
    config: PluginConfig | Mapping[str, Any] | None = None,
    calibration: TextsConfig | Mapping[str, Any] | str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Quantize ``source`` with the quantizer plugin ``method``; return the output folder.

    ``calibration`` (for quantizers that calibrate) is a data file, or options: ``data``, ``samples``,
    ``max_length``, ``seed`` (see :class:`ftsdk.quantizing.calibration.TextsConfig`); by default ftsdk's built-in texts.
    """
    quantizer = create_quantizer(method, config)
    texts = texts_config(calibration)
    if quantizer.uses_calibration:
        texts.check()
    found = classify_source(source)
    check_accepts(type(quantizer), found.kind, source)
    calibration_file = texts.data if quantizer.uses_calibration and texts.data != BUILTIN else None
    inputs = [("source", found.path), ("calibration data", calibration_file)]
    with claim_output(output, overwrite=overwrite, inputs=inputs) as target:
        quantizer.check(found.path, found.kind)
        started = time.perf_counter()
        calibration_texts = _calibration(found, texts) if quantizer.uses_calibration else None
        with write_output(target, kind=quantizer.produces, overwrite=overwrite, card=_model_card) as out:
            facts = dict(quantizer.quantize(QuantizeJob(found.path, found.kind, out.folder, calibration_texts)))
            manifest = out.manifest
            manifest.update(_facts(quantizer, found, out.folder, facts, texts if calibration_texts else None,
                                   time.perf_counter() - started))
    shown = manifest["warnings"][:MAX_PRINTED_WARNINGS]
    for warning in shown:
        print(f"warning: {warning}")
    if len(manifest["warnings"]) > len(shown):
        print(f"warning: ... and {len(manifest['warnings']) - len(shown)} more, listed in {target / MANIFEST_NAME}")
    return target


def _calibration(found: Source, texts: TextsConfig) -> list[str]:
    from transformers import AutoTokenizer

    return select_texts(texts, AutoTokenizer.from_pretrained(found.path, trust_remote_code=False))


def weight_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of each weight file in ``folder`` (or of the file itself), by name."""
    files = [folder] if folder.is_file() else sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    return {p.name: sha256_file(p) for p in files}


def file_sizes(folder: Path) -> dict[str, int]:
    """Bytes of every file in ``folder`` (recursively, by relative path); of the file itself for a file."""
    if folder.is_file():
        return {folder.name: folder.stat().st_size}
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def _facts(quantizer: Quantizer, found: Source, folder: Path, facts: dict[str, Any],
           calibration: TextsConfig | None, seconds: float) -> dict[str, Any]:
    """The quantized output's own manifest fields."""
    sizes = file_sizes(folder)
    source_sizes = file_sizes(found.path)
    return {
        "quantizer": producer("quantizer", quantizer),
        "source": {"path": str(found.path.resolve()), "kind": found.kind, "weights_sha256": weight_hashes(found.path),
                   "manifest": found.manifest},
        "calibration": calibration.record() if calibration else None,
        "files": sizes,
        "size_bytes": sum(sizes.values()),
        "source_size_bytes": sum(source_sizes.values()),
        "warnings": [str(w) for w in facts.pop("warnings", [])],
        "quality": facts.pop("quality", {}),
        "facts": {k: v for k, v in facts.items() if k != "files"},
        "quantize_seconds": round(seconds, 2),
    }


def _model_card(manifest: dict[str, Any]) -> str:
    q = manifest["quantizer"]
    options = ", ".join(f"{k}={v}" for k, v in q["config"].items()) or "defaults"
    ratio = manifest["size_bytes"] / max(manifest["source_size_bytes"], 1)
    warnings = "".join(f"- {w}\n" for w in manifest["warnings"])
    quality = "".join(f"- {k}: {v}\n" for k, v in manifest["quality"].items())
    return (
        f"---\ntags:\n- ftsdk\n- quantized\n- {q['name']}\n---\n\n"
        f"# Quantized model ({q['name']})\n\n`{manifest['source']['path']}` quantized with the `{q['name']}` "
        f"quantizer ({options}) by ftsdk {manifest['ftsdk_version']}.\n\n"
        f"Size: {human_size(manifest['size_bytes'])} ({ratio:.0%} of the source's "
        f"{human_size(manifest['source_size_bytes'])}).\n\n"
        + (f"## Quality\n\n{quality}\n" if quality else "")
        + (f"## Warnings\n\n{warnings}\n" if warnings else "")
        + "Lineage (source hashes, config, library versions): `ftsdk.json`.\n"
    )


def human_size(size: float) -> str:
    """Bytes as text: ``1.5 MB``."""
    units = ("B", "KB", "MB", "GB", "TB")
    step = 0
    while size >= 1000 and step < len(units) - 1:
        size, step = size / 1000, step + 1
    return f"{size:.0f} B" if step == 0 else f"{size:.1f} {units[step]}"
