"""``merge(config) -> Path``: validate everything, then merge into an atomically written output folder."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from ftsdk import __version__, plugins
from ftsdk.artifacts import atomic_output_dir, check_output_dir, claim_output, library_versions, write_manifest
from ftsdk.merging.config import MergeConfig, load_merge_config
from ftsdk.merging.request import build_request
from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.kinds import Merger

LIBRARIES = ("ftsdk", "torch", "safetensors", "transformers", "peft")


def merge(
    config: MergeConfig | Mapping[str, Any] | str | Path,
    *,
    output: str | Path | None = None,
    overwrite: bool | None = None,
) -> Path:
    """Merge the models a config names (a YAML path, a mapping or a :class:`MergeConfig`); return the output.

    Every check (method, options, input folders, architectures, tensor names and shapes, vocabularies)
    runs before any weight is read; the output folder appears only once complete, with ``ftsdk.json``.
    """
    merge_config = load_merge_config(config)
    target = Path(output) if output is not None else merge_config.output
    if target is None:
        raise ConfigError("the merge has no output folder", hint="set 'output' in the config or pass output=")
    replace = merge_config.overwrite if overwrite is None else overwrite
    check_output_dir(target, replace)
    merger, request = build_request(merge_config)
    inputs = [("input " + ("base_model" if i.index is None else f"models[{i.index}]"), i.reference)
              for i in request.inputs]
    with claim_output(target, overwrite=replace, inputs=inputs):
        prepared = merger.prepare(request)
        started = time.perf_counter()
        with atomic_output_dir(target, overwrite=replace) as folder:
            facts = prepared.run(folder)
            manifest = _manifest(merger, merge_config, prepared.produces, facts, time.perf_counter() - started)
            write_manifest(folder, manifest)
            (folder / "README.md").write_text(_model_card(manifest, merge_config), encoding="utf-8")
    return target


def _manifest(
    merger: Merger, config: MergeConfig, produces: str, facts: dict[str, Any], seconds: float
) -> dict[str, Any]:
    info = plugins.get("merger", merger.name)
    return {
        "ftsdk_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "kind": produces,
        "merger": {
            "name": merger.name,
            "distribution": info.distribution,
            "version": info.version,
            "config": merger.config.model_dump(mode="json", by_alias=True),
        },
        **facts,
        "merge_config": config.model_dump(mode="json", exclude={"output", "overwrite"}),
        "libraries": library_versions(*LIBRARIES),
        "merge_seconds": round(seconds, 2),
    }


def _model_card(manifest: dict[str, Any], config: MergeConfig) -> str:
    inputs = "\n".join(
        f"- {item['role']}: `{item['reference']}` {item['parameters'] or ''}".rstrip() for item in manifest["inputs"]
    )
    recipe = yaml.safe_dump(config.model_dump(mode="json", exclude={"output", "overwrite"}, exclude_defaults=True),
                            sort_keys=False)
    engine = manifest.get("mergekit")
    if engine:  # the mergekit merger: its document is the recipe, and mergekit did the merge
        recipe = yaml.safe_dump(manifest["merger"]["config"]["config"], sort_keys=False)
        engine = (f" The merge itself was computed by [mergekit](https://github.com/arcee-ai/mergekit) "
                  f"{engine['version']} ({engine['license']}), method `{engine['merge_method']}`; "
                  "`mergekit_config.yml` reruns it with `mergekit-yaml`.")
    return (
        f"# Merged {manifest['kind']}\n\nMade with ftsdk {manifest['ftsdk_version']} using the "
        f"`{manifest['merger']['name']}` merger.{engine or ''}\n\n## Inputs\n\n{inputs}\n\n"
        f"## Configuration\n\n```yaml\n{recipe}```\n\nContent hashes and library versions: `ftsdk.json`.\n"
    )
