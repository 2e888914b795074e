"""Open candidates as backends, loading each base model once and reusing it for its adapters."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftsdk.evaluation.backends import Backend, GgufBackend, TransformersBackend
from ftsdk.evaluation.spec import CandidateSpec
from ftsdk.models.loading import recorded_spec
from ftsdk.models.spec import ModelSpec
from ftsdk.plugin.errors import ConfigError, ModelLoadError


def adapter_base(spec: CandidateSpec) -> ModelSpec:
    """The base model of an adapter candidate: ``spec.base``, else what its ftsdk.json or adapter_config.json names.

    The base's own code may run only if the candidate itself says ``trust_remote_code``; what the adapter's
    ftsdk.json records is never trusted.
    """
    trust = spec.trust_remote_code
    if spec.base:
        return ModelSpec(name=spec.base, trust_remote_code=trust)
    folder = Path(spec.source)
    manifest = folder / "ftsdk.json"
    if manifest.is_file():
        base = json.loads(manifest.read_text(encoding="utf-8")).get("base_model", {}).get("spec")
        if base:
            return recorded_spec(base, f"candidate '{spec.name}': {manifest} (base_model.spec)",
                                 "set trust_remote_code: true in the candidate, or pass --trust-remote-code to "
                                 "ftsdk eval", trust_remote_code=trust)
    named = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not named:
        raise ConfigError(f"candidate '{spec.name}': cannot tell the base model of adapter {folder}",
                          hint="give base: MODEL in the candidate")
    return ModelSpec(name=named, trust_remote_code=trust)


def gguf_file(source: str) -> Path:
    """The .gguf file a GGUF candidate names (a file, or a folder holding exactly one)."""
    path = Path(source)
    if path.is_file():
        return path
    found = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if len(found) != 1:
        raise ConfigError(f"{source}: expected one .gguf file, found {len(found)}", hint="point source at the file")
    return found[0]


class CandidatePool:
    """Loads candidates on demand; base models stay loaded (for adapters and prompted variants) until closed."""

    def __init__(self) -> None:
        self._bases: dict[str, tuple[Any, Any]] = {}

    def _base(self, spec: ModelSpec) -> tuple[Any, Any]:
        from ftsdk.models.device import choose_placement
        from ftsdk.models.loading import load_model, load_tokenizer, resolve

        resolved = resolve(spec)
        if resolved.source not in self._bases:
            model = load_model(resolved, spec, choose_placement(spec.device, spec.dtype)).eval()
            self._bases[resolved.source] = (model, load_tokenizer(resolved, spec))
        return self._bases[resolved.source]

    @contextlib.contextmanager
    def open(self, spec: CandidateSpec) -> Iterator[Backend]:
        """A backend for ``spec``; an adapter is taken off its (shared) base afterwards."""
        kind = spec.resolved_kind()
        if kind == "gguf":
            from ftsdk.gguf.runtime import load_gguf

            llm = load_gguf(gguf_file(spec.source))
            try:
                yield GgufBackend(llm)
            finally:
                llm.close()
            return
        if kind in ("model", "merged"):
            model = ModelSpec(name=spec.source, trust_remote_code=spec.trust_remote_code)
            yield TransformersBackend(*self._base(model))
            return
        from ftsdk.models.peft_wrapping import load_adapter

        base, tokenizer = self._base(adapter_base(spec))
        try:
            tuned = load_adapter(base, spec.source, adapter_name=spec.name).eval()
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"candidate '{spec.name}': cannot load adapter {spec.source}: {exc}",
                                 hint="is it an adapter of this base? set base: in the candidate") from None
        try:
            yield TransformersBackend(tuned, tokenizer)
        finally:
            if hasattr(tuned.base_model, "unload"):  # LoRA-style adapters live inside the base's layers
                tuned.base_model.unload()

    def close(self) -> None:
        self._bases.clear()
