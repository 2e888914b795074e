"""The export step: the chosen artifacts copied into one folder, with a manifest and a README that says how to run each."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ftsdk import __version__
from ftsdk.artifacts import MANIFEST_NAME, child_path, manifest_header, read_manifest, sha256_file, write_manifest
from ftsdk.chain.refs import Artifact
from ftsdk.quantizing.run import human_size


def quality_of(name: str, evaluations: dict[str, Artifact]) -> dict[str, Any]:
    """What the evaluations measured of artifact ``name``: ``{evaluation: {perplexity, vs_reference...}}``."""
    found = {}
    for evaluation, artifact in evaluations.items():
        result = read_manifest(artifact.path).get("results", {}).get(name)
        if result is not None:
            found[evaluation] = {k: v for k, v in result.items() if k != "kind"} | {
                "reference": read_manifest(artifact.path)["reference"]}
    return found


def _usage(name: str, artifact: Artifact, folder: Path) -> str:
    if artifact.kind == "gguf":
        file = next((folder / name).glob("*.gguf")).name
        return (f"llama.cpp: `llama-cli -m {name}/{file} -cnv`; Python: `from llama_cpp import Llama; "
                f"Llama(model_path=\"{name}/{file}\").create_chat_completion(messages=[...])`")
    if artifact.kind == "adapter":
        return f"`peft.AutoPeftModelForCausalLM.from_pretrained(\"{name}\")`"
    return f"`transformers.AutoModelForCausalLM.from_pretrained(\"{name}\")`"


def export_artifacts(artifacts: dict[str, Artifact], evaluations: dict[str, Artifact], folder: Path) -> None:
    """Copy each artifact to ``folder/<name>``; write ``ftsdk.json`` (files, sizes, hashes, lineage, quality)."""
    shipped: dict[str, Any] = {}
    for name, artifact in artifacts.items():
        target = child_path(folder, name, "artifact name")  # never outside the export folder
        if artifact.path.is_file():
            target.mkdir()
            shutil.copy2(artifact.path, target / artifact.path.name)
        else:
            shutil.copytree(artifact.path, target)
        files = {p.relative_to(target).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                 for p in sorted(target.rglob("*")) if p.is_file()}
        made_by = read_manifest(target) if (target / MANIFEST_NAME).is_file() else {}
        shipped[name] = {
            "kind": artifact.kind,
            "from": str(artifact.path),
            "size_bytes": sum(f["bytes"] for f in files.values()),
            "files": files,
            "producer": {k: made_by[k] for k in ("quantizer", "merger", "adapter", "merged_adapter") if k in made_by},
            "quality": quality_of(name, evaluations) | ({"quantizer": made_by["quality"]} if made_by.get("quality")
                                                        else {}),
            "usage": _usage(name, artifact, folder),
        }
    manifest = {
        **manifest_header("export"),
        "artifacts": shipped,
        "evaluations": {name: read_manifest(a.path)["results"] for name, a in evaluations.items()},
    }
    write_manifest(folder, manifest)
    rows = "".join(f"| `{n}/` | {a['kind']} | {human_size(a['size_bytes'])} | {a['usage']} |\n"
                   for n, a in shipped.items())
    (folder / "README.md").write_text(
        f"# Artifacts\n\nMade by an ftsdk chain ({__version__}). Each folder keeps its own `ftsdk.json` (lineage: "
        f"inputs, hashes, plugins and configs); `ftsdk.json` here lists every file with its SHA-256.\n\n"
        f"| folder | kind | size | how to run it |\n|---|---|---|---|\n{rows}", encoding="utf-8")
