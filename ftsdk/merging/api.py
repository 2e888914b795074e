"""``merge(config) -> Path``: validate everything, then merge into an atomically written output folder."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ftsdk.artifacts import check_output_dir, claim_output, producer, write_output
from ftsdk.merging.config import MergeConfig, load_merge_config
from ftsdk.merging.request import build_request
from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.kinds import Merger


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
        with write_output(target, kind=prepared.produces, overwrite=replace,
                          card=lambda manifest: _model_card(manifest, merge_config)) as out:
            facts = prepared.run(out.folder)
            out.manifest.update(_facts(merger, merge_config, facts, time.perf_counter() - started))
    return target


def _facts(merger: Merger, config: MergeConfig, facts: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The merged output's own manifest fields."""
    return {
        "merger": producer("merger", merger, by_alias=True),
        **facts,
        "merge_config": config.model_dump(mode="json", exclude={"output", "overwrite"}),
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
