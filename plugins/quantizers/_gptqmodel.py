"""What the gptq and awq quantizers share: GPT-QModel on the chosen device, checks that read only
``config.json``, and the perplexity of the quantized model against its source on held-out texts.

GPT-QModel (``gptqmodel``) is the maintained successor of AutoGPTQ and AutoAWQ; transformers loads its
GPTQ output through ``optimum`` + ``gptqmodel`` and its AWQ output through ``gptqmodel``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ftsdk import PluginConfig
from ftsdk.plugin.errors import ConfigError, ModelLoadError, PluginError

if TYPE_CHECKING:
    from ftsdk.plugin.jobs import QuantizeJob

REQUIRES = ("gptqmodel", "optimum")
#: a perplexity ratio (quantized / source) above this becomes a warning
WARN_RATIO = 1.2


class GPTQModelConfig(PluginConfig):
    """Options both GPT-QModel quantizers take."""

    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to quantize: auto picks the CUDA GPU when there is one (GPT-QModel's GPU "
        "kernels), else the CPU (its torch kernels; fine for small models, slow for billions of parameters).")
    batch_size: int = Field(1, ge=1, le=512, description="Calibration texts per forward pass while quantizing.")
    quality_samples: int = Field(
        16, ge=0, le=1024, description="Held-out texts on which the perplexity of the quantized model is compared "
        "with the source's (ftsdk's built-in passages not used for calibration); 0 skips the comparison.")
    quality_texts: list[str] | None = Field(
        None, min_length=1, description="Texts to compare perplexities on instead of the built-in passages "
        "(keep them out of the calibration set).")


def resolve_device(device: str) -> str:
    """``cuda`` or ``cpu``; refuses ``cuda`` without a visible GPU."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is visible", hint="use device: auto or cpu")
    return "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"


def quantized_linears(source: Path) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of every linear layer GPT-QModel quantizes (all but the output head).

    The model is built on the meta device from ``config.json`` alone: no weight is read.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(source)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot read the architecture of {source}: {exc}",
                             hint="give a causal language model folder written by save_pretrained") from exc
    head = model.get_output_embeddings()
    return {name: (module.in_features, module.out_features) for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not head}


def check_widths(method: str, source: Path, group_size: int, allowed_sizes: Sequence[int]) -> dict[str, tuple[int, int]]:
    """Refuse a group size that does not divide every quantized layer's input width, naming the layers and the
    group sizes that would fit; return the layers' widths."""
    linears = quantized_linears(source)
    if not linears:
        raise ConfigError(f"{method}: {source} has no linear layer to quantize")
    bad = {n: s for n, s in linears.items() if group_size != -1 and s[0] % group_size}
    if bad:
        fits = [g for g in allowed_sizes if g == -1 or all(s[0] % g == 0 for s in linears.values())]
        listed = ", ".join(f"{n} ({s[0]} inputs)" for n, s in list(bad.items())[:3])
        raise ConfigError(
            f"{method} group_size {group_size} does not divide the input width of {len(bad)} of the "
            f"{len(linears)} layers to quantize: {listed}{', ...' if len(bad) > 3 else ''}",
            hint=f"use group_size {' or '.join(str(g) for g in sorted(fits, reverse=True))}")
    return linears


def worker_env() -> dict[str, str]:
    """The environment of the quantizing process: GPT-QModel's CPU worker pool sized to the cores this process
    may use (``GPTQMODEL_CPU_WORKERS``, read when GPT-QModel builds its pool), unless the user set it."""
    env = dict(os.environ)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env.setdefault("GPTQMODEL_CPU_WORKERS", str(cores))
    return env


def run_gptqmodel(job: QuantizeJob, config_class: str, config_kwargs: dict[str, Any], device: str, backend: str,
                  batch_size: int) -> list[dict]:
    """Quantize ``job.source`` on the calibration texts with GPT-QModel and save into ``job.output``, in a child
    process; returns GPT-QModel's per-module log (layer, module, loss...).

    A child process because GPT-QModel ends the whole interpreter (``os._exit(1)``) when a worker thread fails,
    sets environment variables and patches transformers on import: none of that reaches the caller.
    """
    if not job.calibration:
        raise ConfigError("GPT-QModel needs calibration texts and none were given",
                          hint="give a calibration data file, or leave calibration unset for the built-in texts")
    with tempfile.TemporaryDirectory(prefix="ftsdk-gptqmodel-") as scratch:
        spec = Path(scratch) / "job.json"
        spec.write_text(json.dumps({
            "source": str(job.source.resolve()), "output": str(job.output.resolve()), "calibration": list(job.calibration),
            "config_class": config_class, "config": config_kwargs, "device": device, "backend": backend,
            "batch_size": batch_size, "log": str(Path(scratch) / "log.json"),
        }), encoding="utf-8")
        # in the scratch folder: GPT-QModel writes its logs/ folder into the working directory
        done = subprocess.run([sys.executable, "-m", __name__, str(spec)], env=worker_env(), cwd=scratch, check=False)
        if done.returncode != 0:
            raise PluginError(f"GPT-QModel failed (exit {done.returncode}) quantizing {job.source}; its error is "
                              "printed above", hint="run again with device: cpu, or report the error upstream")
        return json.loads((Path(scratch) / "log.json").read_text(encoding="utf-8"))


def _worker(spec_path: str) -> None:
    """The child process: load, quantize, save, write the per-module log."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    import gptqmodel

    quantize_config = getattr(gptqmodel, spec["config_class"])(**spec["config"])
    model = gptqmodel.GPTQModel.load(spec["source"], quantize_config, device=spec["device"])
    log = model.quantize(spec["calibration"], batch_size=spec["batch_size"], backend=spec["backend"])
    model.save(spec["output"])
    entries = [{k: str(v) for k, v in entry.items()} for entries in (log or {}).values() for entry in entries]
    Path(spec["log"]).write_text(json.dumps(entries), encoding="utf-8")


def loss_summary(log: list[dict]) -> dict[str, Any]:
    """Mean and worst per-module reconstruction loss GPT-QModel reported."""
    losses = [float(entry["loss"]) for entry in log if _is_number(entry.get("loss"))]
    if not losses:
        return {}
    return {"modules": len(losses), "mean": sum(losses) / len(losses), "max": max(losses)}


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def held_out_texts(config: GPTQModelConfig, calibration: Sequence[str]) -> list[str]:
    """The texts the perplexities are compared on: the user's, or built-in passages not calibrated on."""
    if config.quality_texts:
        return list(config.quality_texts)
    from ftsdk.quantizing.calibration import builtin_texts

    used = {text[:64] for text in calibration}
    return [text for text in builtin_texts() if text[:64] not in used][: config.quality_samples]


def compare_perplexity(source: Path, output: Path, texts: list[str], device: str) -> dict[str, Any]:
    """Perplexity of the source and of the quantized model (loaded by transformers) on ``texts``, same dtype."""
    import gc

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftsdk.models.perplexity import perplexity

    dtype = torch.float16 if device == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(source)
    values = {}
    for name, folder in (("source", source), ("quantized", output)):
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, device_map={"": device}).eval()
        values[name] = perplexity(model, tokenizer, texts)
        del model
        gc.collect()
    ratio = values["quantized"].value / values["source"].value
    return {"source": round(values["source"].value, 4), "quantized": round(values["quantized"].value, 4),
            "ratio": round(ratio, 4), "texts": len(texts), "tokens": values["source"].tokens}


def quantize_and_score(job: QuantizeJob, config: GPTQModelConfig, config_class: str, config_kwargs: dict[str, Any],
                       backends: dict[str, str], method: str) -> dict[str, Any]:
    """The whole job: quantize with GPT-QModel, then compare perplexities; the facts for the manifest.

    ``config_class`` and ``config_kwargs`` make GPT-QModel's quantize config (``GPTQConfig``, ``AWQConfig``);
    ``backends`` names its packing backend (a ``gptqmodel.BACKEND`` value) for "cpu" and "cuda".
    """
    device = resolve_device(config.device)
    log = run_gptqmodel(job, config_class, config_kwargs, device, backends[device], config.batch_size)
    warnings: list[str] = []
    quality: dict[str, Any] = {}
    losses = loss_summary(log)
    if losses:
        quality["layer_loss"] = losses
    if config.quality_samples or config.quality_texts:
        texts = held_out_texts(config, job.calibration or [])
        if texts:
            figures = compare_perplexity(job.source, job.output, texts, device)
            quality["perplexity"] = figures
            if figures["ratio"] > WARN_RATIO:
                warnings.append(f"{method}: perplexity rose from {figures['source']} to {figures['quantized']} "
                                f"(x{figures['ratio']}) on {figures['texts']} held-out texts; try more bits, a "
                                "smaller group_size or more calibration texts")
        else:
            warnings.append(f"{method}: no held-out text was left to compare perplexities on (every built-in "
                            "passage was used for calibration); set quality_texts")
    return {
        "files": sorted(p.name for p in job.output.iterdir() if p.is_file()),
        "warnings": warnings,
        "quality": quality,
        "device": device,
        "backend": backends[device],
        "calibration_texts": len(job.calibration or []),
        "quantization_config": _saved_quantization_config(job.output),
    }


def _saved_quantization_config(output: Path) -> dict[str, Any]:
    import json

    config = json.loads((output / "config.json").read_text(encoding="utf-8")).get("quantization_config", {})
    return {k: v for k, v in config.items() if k != "meta"}


if __name__ == "__main__":
    _worker(sys.argv[1])
