"""The evaluate step: perplexity of several artifacts on the very same token ids, each against a reference.

Texts are tokenized once, with the reference's tokenizer; transformers folders (plain, bitsandbytes, PEFT
adapters) are scored with :mod:`ftsdk.models.perplexity`, GGUF files with llama.cpp (:mod:`ftsdk.gguf.runtime`).
"""

from __future__ import annotations

import gc
import importlib.util
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftsdk.artifacts import library_versions, manifest_header, read_manifest, write_manifest
from ftsdk.chain.refs import Artifact
from ftsdk.plugin.errors import ConfigError, PluginUnavailableError
from ftsdk.quantizing.calibration import TextsConfig, select_texts

if TYPE_CHECKING:
    from ftsdk.chain.config import EvaluateStep



def check_evaluation(models: dict[str, Artifact], reference: Artifact, texts: TextsConfig) -> None:
    """Refuse, before anything runs, what cannot be scored."""
    if reference.kind == "gguf":
        raise ConfigError(f"reference '{reference.name}' is a GGUF model: the texts are tokenized with the "
                          "reference's transformers tokenizer", hint="make a transformers model the reference")
    if any(a.kind == "gguf" for a in models.values()) and importlib.util.find_spec("llama_cpp") is None:
        raise PluginUnavailableError("scoring a GGUF model needs llama-cpp-python", hint='pip install "ftsdk[gguf]"')
    texts.check()


def _folder(artifact: Artifact) -> str:
    """The artifact's folder (an alias resolved to its cached folder)."""
    if artifact.alias is not None:
        from ftsdk.models.loading import resolve

        return resolve(artifact.alias).source
    return str(artifact.path)


def _tokenizer_folder(artifact: Artifact) -> str:
    """Where the artifact's tokenizer is: its folder, or an adapter's base when the adapter has none."""
    if artifact.kind == "adapter" and not (artifact.path / "tokenizer_config.json").is_file():
        config = json.loads((artifact.path / "adapter_config.json").read_text(encoding="utf-8"))
        return str(config["base_model_name_or_path"])
    return _folder(artifact)


def _nll(artifact: Artifact, sequences: list[list[int]], batch_size: int, n_ctx: int) -> tuple[float, int]:
    """Summed negative log-likelihood of ``sequences`` under ``artifact``, and the predicted tokens."""
    if artifact.kind == "gguf":
        if (read_manifest(artifact.path).get("source") or {}).get("kind") == "adapter":
            raise ConfigError(f"'{artifact.name}' is a GGUF LoRA adapter: score the GGUF of the merged model instead")
        from ftsdk.gguf.runtime import gguf_sequence_nll, load_gguf

        llm = load_gguf(artifact.path, n_ctx=n_ctx)
        try:
            return gguf_sequence_nll(llm, sequences)
        finally:
            llm.close()
    from ftsdk.models.perplexity import sequence_nll

    if artifact.kind == "adapter":
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(str(artifact.path), trust_remote_code=False)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(_folder(artifact), device_map="cpu", trust_remote_code=False)
    return sequence_nll(model.eval(), sequences, batch_size=batch_size)


def run_evaluation(models: dict[str, Artifact], reference: str, step: EvaluateStep, folder: Path) -> None:
    """Score every model, write ``ftsdk.json`` (with the results) and a README table into ``folder``."""
    from transformers import AutoTokenizer

    from ftsdk.models.perplexity import encode_texts, perplexity_from_nll

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(_tokenizer_folder(models[reference]), trust_remote_code=False)
    texts = select_texts(step.texts, tokenizer)
    sequences = encode_texts(tokenizer, texts, max_length=step.texts.max_length)
    scores: dict[str, dict[str, Any]] = {}
    for name, artifact in models.items():
        print(f"  perplexity of {name} ({artifact.kind})")
        nll, tokens = _nll(artifact, sequences, step.batch_size, n_ctx=max(len(s) for s in sequences) + 8)
        scores[name] = {"kind": artifact.kind, **perplexity_from_nll(nll, tokens).as_dict()}
        gc.collect()
    base = scores[reference]["perplexity"]
    for entry in scores.values():
        entry["vs_reference"] = round(entry["perplexity"] / base - 1, 6)
    manifest = {
        **manifest_header("evaluation"),
        "metric": "perplexity",
        "reference": reference,
        "texts": step.texts.record() | {"used": len(sequences), "tokens": sum(len(s) for s in sequences)},
        "results": scores,
        "libraries": library_versions(),
        "evaluate_seconds": round(time.perf_counter() - started, 2),
    }
    write_manifest(folder, manifest)
    rows = "".join(f"| {n} | {e['kind']} | {e['perplexity']:.4f} | {e['vs_reference']:+.2%} |\n" for n, e in scores.items())
    (folder / "README.md").write_text(
        f"# Perplexity\n\n{len(sequences)} texts, {manifest['texts']['tokens']} tokens, tokenized once with the "
        f"tokenizer of `{reference}` (the reference).\n\n| artifact | kind | perplexity | vs {reference} |\n"
        f"|---|---|---|---|\n{rows}", encoding="utf-8")
