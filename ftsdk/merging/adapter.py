"""Merging a trained adapter into its base model: a plain model folder that loads without PEFT.

A QLoRA adapter was trained against the 4-bit weights, so by default it is merged into those weights
dequantized to full precision (``base_weights="as_trained"``): the merged model computes what the
adapted 4-bit model computed, never a re-quantized (lossy) merge. ``base_weights="original"`` merges into
the unquantized checkpoint instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from ftsdk import plugins
from ftsdk.artifacts import (
    MANIFEST_NAME,
    claim_output,
    read_manifest,
    sha256_file,
    write_output,
)
from ftsdk.models.loading import recorded_spec
from ftsdk.models.spec import ModelSpec
from ftsdk.plugin.errors import ConfigError

#: PEFT task types and the model head (a key of :data:`ftsdk.models.loading.HEADS`) that loads their base
HEAD_OF_TASK = {"SEQ_CLS": "sequence_classification"}
BaseWeights = Literal["as_trained", "original"]
#: what the merged model's manifest keeps of the run that trained the adapter
TRAINING_RECORD = ("adapter", "objective", "training", "data", "metrics")


def merge_adapter(
    adapter_dir: str | Path,
    output_dir: str | Path,
    *,
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
    device: Literal["auto", "cpu", "cuda"] = "cpu",
    base_weights: BaseWeights = "as_trained",
    base_model: str | None = None,
    overwrite: bool = False,
    trust_remote_code: bool = False,
) -> Path:
    """Merge the PEFT adapter in ``adapter_dir`` into its base and save a full model folder at ``output_dir``.

    The base is the one the folder's ``ftsdk.json`` names (written by :meth:`ftsdk.Tuner.fit`), else
    ``adapter_config.json``'s ``base_model_name_or_path``; ``base_model`` overrides both. It loads at
    ``dtype`` on ``device`` (``auto`` as in :class:`ftsdk.ModelSpec`: float32 on CPU). Adapters that cannot
    merge (prefix and prompt tuning) and full-model folders are refused before anything loads.
    The base model's own Python code (``auto_map``) runs only with ``trust_remote_code=True``: what the adapter
    folder records cannot allow it. The output may not overlap the adapter or the base model's folder.
    The output holds the merged weights, the tokenizer and a manifest recording the lineage.
    """
    adapter_dir = Path(adapter_dir)
    if base_weights not in ("as_trained", "original"):
        raise ConfigError(f"base_weights must be 'as_trained' or 'original', not {base_weights!r}")
    peft_config = _mergeable_config(adapter_dir)
    manifest = read_manifest(adapter_dir) if (adapter_dir / MANIFEST_NAME).is_file() else None
    spec = _base_spec(adapter_dir, manifest, peft_config, base_model, dtype, device, trust_remote_code)
    trained = manifest if base_model is None else None  # the plugins that trained it load its own base
    adapter = plugins.create("adapter", trained["adapter"]["name"], trained["adapter"]["config"]) if trained else None
    inputs = [("adapter", adapter_dir), ("base model", spec.name)]
    with claim_output(output_dir, overwrite=overwrite, inputs=inputs) as output:
        merged, tokenizer, record = _merged(adapter_dir, manifest, trained, adapter, spec, peft_config, base_weights)
        with write_output(output, kind="model", overwrite=overwrite, card=_model_card) as out:
            merged.save_pretrained(out.folder)
            tokenizer.save_pretrained(out.folder)
            out.manifest.update(record)
    return output


def _merged(
    adapter_dir: Path, manifest: dict[str, Any] | None, trained: dict[str, Any] | None, adapter: Any,
    spec: ModelSpec, peft_config: Any, base_weights: BaseWeights,
) -> tuple[Any, Any, dict[str, Any]]:
    """Load the base, merge the adapter into it; the merged model, its tokenizer and the output's own manifest fields."""
    from ftsdk.models.device import choose_placement
    from ftsdk.models.loading import load_model, load_tokenizer, resolve
    from ftsdk.models.peft_wrapping import load_adapter

    placement = choose_placement(spec.device, spec.dtype)
    resolved = resolve(spec)
    head = HEAD_OF_TASK.get(str(peft_config.task_type), "causal_lm")
    as_trained = adapter.load_options(placement, head) if adapter is not None and base_weights == "as_trained" else {}
    base = load_model(resolved, spec, placement, head=head, **as_trained)
    dequantized = getattr(base, "hf_quantizer", None) is not None
    if dequantized:  # the weights the adapter was trained on, in full precision (QLoRA)
        base = base.dequantize(dtype=placement.dtype).to(placement.device)
    if trained:  # e.g. the reward objective's one-output score head
        objective = plugins.create("objective", trained["objective"]["name"], trained["objective"]["config"])
        base = objective.prepare_model(base)
    merged = _merge(load_adapter(base, adapter_dir), peft_config)
    from_adapter = (adapter_dir / "tokenizer_config.json").is_file()
    if from_adapter:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(adapter_dir, trust_remote_code=spec.trust_remote_code)
    else:
        tokenizer = load_tokenizer(resolved, spec)
    record = {
        "merged_adapter": {
            "adapter_dir": str(adapter_dir.resolve()),
            "peft_type": _method(peft_config),
            "adapter_sha256": _weights_hash(adapter_dir),
            "trained_with": {key: manifest.get(key) for key in TRAINING_RECORD} if manifest else None,
        },
        "base_model": trained["base_model"] if trained else {"reference": spec.name, "spec": spec.model_dump()},
        "base_weights": "dequantized" if dequantized else base_weights,
        "placement": {"device": placement.device, "dtype": placement.dtype_name},
        "tokenizer_from": "adapter folder" if from_adapter else "base model",
    }
    return merged, tokenizer, record


def _merge(peft_model: Any, peft_config: Any) -> Any:
    """``merge_and_unload``, its failures turned into a ConfigError."""
    try:
        return peft_model.merge_and_unload()
    except (AttributeError, NotImplementedError, ValueError) as exc:
        raise ConfigError(
            f"PEFT cannot merge a {_method(peft_config)} adapter: {exc}",
            hint="serve it unmerged with peft.PeftModel.from_pretrained",
        ) from None


def _mergeable_config(adapter_dir: Path) -> Any:
    """The folder's PEFT config; refuses folders that hold no adapter or one that cannot be merged."""
    if not (adapter_dir / "adapter_config.json").is_file():
        manifest = read_manifest(adapter_dir) if (adapter_dir / MANIFEST_NAME).is_file() else {}
        if manifest.get("kind") == "model":
            raise ConfigError(
                f"{adapter_dir} holds a full model (adapter '{manifest['adapter']['name']}'): "
                "there is nothing to merge",
                hint="load it directly with transformers.AutoModelForCausalLM.from_pretrained",
            )
        raise ConfigError(f"{adapter_dir} is not a PEFT adapter folder (no adapter_config.json)",
                          hint="pass the output folder of a run with a PEFT adapter (lora, qlora, dora, ia3, peft)")
    from peft import PeftConfig

    config = PeftConfig.from_pretrained(str(adapter_dir))
    if config.is_prompt_learning:
        raise ConfigError(
            f"{adapter_dir} holds a {_method(config)} adapter: its trained virtual tokens are inputs, not weight "
            "updates, so no weight of the base can absorb them and it cannot be merged",
            hint="serve it unmerged with peft.PeftModel.from_pretrained (or Tuner.load), or train lora to merge",
        )
    return config


def _base_spec(
    adapter_dir: Path, manifest: dict[str, Any] | None, peft_config: Any, base_model: str | None, dtype: str,
    device: str, trust_remote_code: bool,
) -> ModelSpec:
    """How to load the base: the manifest's spec, else the adapter config's base; overrides applied.

    Whether the base's own code may run is the caller's ``trust_remote_code`` alone, never the manifest's.
    """
    spec: dict[str, Any] = dict(manifest["base_model"]["spec"]) if manifest else {}
    name = base_model or spec.get("name") or peft_config.base_model_name_or_path
    if not name:
        raise ConfigError(
            "the adapter folder does not say which base model it belongs to",
            hint="pass base_model= (the folder or hub id of the model it was trained on)",
        )
    if base_model:
        spec.pop("gguf_file", None)
    return recorded_spec(spec, f"{adapter_dir / MANIFEST_NAME} (base_model.spec)",
                         "pass --trust-remote-code to ftsdk merge-adapter (merge_adapter(..., trust_remote_code=True))",
                         trust_remote_code=trust_remote_code, name=name, dtype=dtype, device=device)


def _method(peft_config: Any) -> str:
    """The PEFT method's type name (LORA, IA3...)."""
    return str(getattr(peft_config.peft_type, "value", peft_config.peft_type))


def _weights_hash(adapter_dir: Path) -> str | None:
    weights = adapter_dir / "adapter_model.safetensors"
    return sha256_file(weights) if weights.is_file() else None


def _model_card(manifest: dict[str, Any]) -> str:
    merged = manifest["merged_adapter"]
    base = manifest["base_model"]
    return (
        f"---\nbase_model: {base.get('hub_id') or base['reference']}\ntags:\n- ftsdk\n- merged\n---\n\n"
        f"# Merged model\n\nThe {merged['peft_type']} adapter `{merged['adapter_dir']}` merged into "
        f"`{base['reference']}` ({manifest['base_weights']} base weights, {manifest['placement']['dtype']}) "
        f"with ftsdk {manifest['ftsdk_version']}.\n\n"
        "```python\nfrom transformers import AutoModelForCausalLM\n"
        "model = AutoModelForCausalLM.from_pretrained(\"PATH\")\n```\n\n"
        "Lineage and library versions: `ftsdk.json`.\n"
    )
