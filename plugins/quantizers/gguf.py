"""GGUF for llama.cpp: a transformers folder (Llama, Mistral, Qwen2/2.5, Qwen3, Gemma 2/3, Phi-3) or a PEFT LoRA
adapter of one as one ``.gguf`` file.

Float types are written directly; quantized types go through an f32 (or bf16) intermediate that llama.cpp
quantizes in-process (``llama_cpp.llama_model_quantize``), listing (from its log) the tensors it kept at another
type (rows not fitting the type's blocks); the output is then scored against the source.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ftsdk import PluginConfig, Quantizer, hookimpl
from ftsdk.gguf.types import TYPES, predict_rows
from ftsdk.plugin.errors import ConfigError

if TYPE_CHECKING:
    from ftsdk.plugin.jobs import QuantizeJob

log = logging.getLogger("ftsdk.gguf")
TypeName = Literal[tuple(TYPES)]  # type: ignore[valid-type]


class GGUFConfig(PluginConfig):
    """Options of the gguf quantizer."""

    type: TypeName = Field(  # type: ignore[valid-type]
        "q4_k_m", description="GGUF type: f32, f16, bf16, or a llama.cpp quantization (q8_0, q6_k, q5_k_m, q4_k_m, "
        "q4_0, q3_k_m, q2_k...). q4_k_m is the usual size/quality trade-off. Adapters: f32, f16 or bf16.")
    intermediate: Literal["f32", "bf16"] = Field(
        "f32", description="Precision of the temporary GGUF that llama.cpp quantizes from: f32 rounds once; bf16 "
        "halves the temporary file and matches bf16 checkpoints exactly.")
    verify: bool = Field(True, description="Score the GGUF against the source on a few texts (same token ids) and "
                         "record log-prob, top-1 and perplexity figures; out-of-tolerance results become warnings.")
    verify_texts: list[str] | None = Field(None, min_length=1, description="Texts to verify on (default: a few "
                                           "built-in ones covering prose, digits, code and chat markers).")
    on_misfit: Literal["warn", "error"] = Field(
        "warn", description="What to do when some tensor rows do not fit the type's blocks (256 for k-quants, 32 "
        "for legacy quants) and llama.cpp would keep them at another type: warn, or refuse before any work.")
    threads: int | None = Field(None, ge=1, description="Threads llama.cpp quantizes with (default: all cores).")
    pre_tokenizer: str | None = Field(None, description="llama.cpp pre-tokenizer name (tokenizer.ggml.pre) when "
                                      "it cannot be recognised from tokenizer.json (recognised: gpt-2, smollm, qwen2, "
                                      "llama-bpe).")
    base_model: str | None = Field(None, description="Adapters: the base model folder (default: the adapter's "
                                   "base_model_name_or_path); its config.json is needed, and its weights to verify.")


class GGUFQuantizer(Quantizer):
    """Write one GGUF file for llama.cpp (llama-cpp-python, Ollama, LM Studio)."""

    name = "gguf"
    summary = "GGUF for llama.cpp: f32/f16/bf16 or llama.cpp quantizations (q8_0, q4_k_m...), and GGUF LoRA adapters"
    Config = GGUFConfig
    requires = ("gguf", "llama_cpp", "transformers", "safetensors")
    install_hint = 'pip install "ftsdk[gguf]"  (compiles llama.cpp: set CMAKE_ARGS="-DGGML_NATIVE=OFF" for portable builds)'
    produces = "gguf"
    accepts = ("model", "adapter")

    config: GGUFConfig

    def check(self, source: Path, source_kind: str) -> None:
        if source_kind == "adapter":
            from ftsdk.gguf.lora import ADAPTER_TYPES, check_adapter

            if self.config.type not in ADAPTER_TYPES:
                raise ConfigError(f"a GGUF LoRA adapter is written in {', '.join(ADAPTER_TYPES)}, not "
                                  f"{self.config.type}", hint="set type: f16 (or merge the adapter and quantize that)")
            check_adapter(source, self.config.base_model)
            return
        self.predicted_misfits(source, announce=True)

    def predicted_misfits(self, source: Path, *, announce: bool = False) -> dict[str, str]:
        """Check the model folder cheaply and predict, from config.json, the tensors that will not fit the type."""
        from ftsdk.gguf.convert import caveats, check_model_config, row_sizes
        from ftsdk.gguf.vocab import pre_tokenizer_name, read_tokenizer_json

        config = check_model_config(source)
        if announce:
            for caveat in caveats(config):
                log.warning("%s: %s", source, caveat)
        tokenizer_json = read_tokenizer_json(source)
        if self.config.pre_tokenizer is None:
            pre_tokenizer_name(tokenizer_json, source)
        misfits, quantized = predict_rows(row_sizes(config), TYPES[self.config.type])
        listed = "; ".join(f"{family} -> {why}" for family, why in misfits.items())
        if not quantized:
            raise ConfigError(f"{source}: no weight of this model can be stored as {self.config.type}: {listed}",
                              hint="pick a type whose block divides the rows (q8_0/q4_0: 32; k-quants: 256), or f16")
        if misfits and self.config.on_misfit == "error":
            raise ConfigError(f"{source}: some weights cannot be stored as {self.config.type}: {listed}",
                              hint="set on_misfit: warn to accept llama.cpp's fallback types, or pick a type whose "
                              "block divides the rows (q8_0/q4_0: 32; k-quants: 256)")
        if misfits and announce:
            log.warning("%s: llama.cpp will keep some weights at another type than %s: %s",
                        source, self.config.type, listed)
        return misfits

    def quantize(self, job: QuantizeJob) -> dict[str, Any]:
        if job.source_kind == "adapter":
            return self._adapter(job)
        return self._model(job)

    def _model(self, job: QuantizeJob) -> dict[str, Any]:
        from ftsdk.gguf.convert import caveats, check_model_config, convert_model
        from ftsdk.gguf.quantize import TensorReport, quantize_gguf
        from ftsdk.gguf.runtime import llama_log_level

        self.predicted_misfits(job.source)
        cfg, gguf_type = self.config, TYPES[self.config.type]
        out = job.output / f"model-{cfg.type}.gguf"
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        if gguf_type.is_float:
            converted = convert_model(job.source, out, cfg.type, pre_tokenizer=cfg.pre_tokenizer)
            seconds["convert"] = time.perf_counter() - start
            report = TensorReport(types=converted["tensor_types"])
        else:
            # named after the temporary output folder, so the next write of this output removes it after a kill
            with tempfile.TemporaryDirectory(prefix=f"{job.output.name}.gguf-intermediate-",
                                             dir=job.output.parent) as tmp:
                intermediate = Path(tmp) / f"model-{cfg.intermediate}.gguf"
                converted = convert_model(job.source, intermediate, cfg.intermediate, pre_tokenizer=cfg.pre_tokenizer)
                seconds["convert"] = time.perf_counter() - start
                with llama_log_level():
                    report = quantize_gguf(intermediate, out, cfg.type, threads=cfg.threads)
                seconds["quantize"] = time.perf_counter() - start - seconds["convert"]
        if not gguf_type.is_float and report.quantized == 0:
            out.unlink()
            raise ConfigError(f"llama.cpp quantized no tensor of {job.source} to {cfg.type}: every weight stayed "
                              f"{', '.join(report.types)}", hint="pick a type whose block divides the rows, or f16")
        problems = [w for w in [report.warning(cfg.type)] if w]
        if problems and cfg.on_misfit == "error":
            out.unlink()
            raise ConfigError(problems[0], hint="set on_misfit: warn to accept llama.cpp's fallback types")
        problems += caveats(check_model_config(job.source))
        facts: dict[str, Any] = {
            "architecture": converted["architecture"],
            "type": cfg.type,
            "intermediate": None if gguf_type.is_float else cfg.intermediate,
            "pre_tokenizer": converted["pre_tokenizer"],
            "tensor_types": report.types,
            "misfit_tensors": report.misfits,
            "size_bytes": out.stat().st_size,
        }
        facts["verification"] = self._verify(out, job.source, problems, seconds)
        return self._finish(facts, out, problems, seconds)

    def _adapter(self, job: QuantizeJob) -> dict[str, Any]:
        from ftsdk.gguf.convert import convert_model
        from ftsdk.gguf.lora import base_folder, convert_adapter

        cfg = self.config
        out = job.output / f"lora-{cfg.type}.gguf"
        start = time.perf_counter()
        facts = convert_adapter(job.source, out, cfg.type, base=cfg.base_model)
        seconds = {"convert": time.perf_counter() - start}
        facts["size_bytes"] = out.stat().st_size
        problems: list[str] = []
        if cfg.verify:
            base = base_folder(job.source, cfg.base_model)
            with tempfile.TemporaryDirectory(prefix=f"{job.output.name}.gguf-base-",
                                             dir=job.output.parent) as tmp:
                base_gguf = Path(tmp) / f"base-{cfg.type}.gguf"
                convert_model(base, base_gguf, cfg.type, pre_tokenizer=cfg.pre_tokenizer)
                facts["verification"] = self._verify(base_gguf, base, problems, seconds, lora=out,
                                                     reference_adapter=job.source)
        return self._finish(facts, out, problems, seconds)

    def _verify(self, gguf_path: Path, reference: Path, problems: list[str], seconds: dict[str, float],
                **adapter: Any) -> dict[str, Any] | None:
        if not self.config.verify:
            return None
        from ftsdk.gguf.verify import DEFAULT_TEXTS, compare_with_transformers

        start = time.perf_counter()
        figures = compare_with_transformers(gguf_path, reference, self.config.verify_texts or DEFAULT_TEXTS, **adapter)
        seconds["verify"] = time.perf_counter() - start
        problems += [f"verification against {reference}: {failure}" for failure in figures["failures"]]
        return figures

    @staticmethod
    def _finish(facts: dict[str, Any], out: Path, problems: list[str], seconds: dict[str, float]) -> dict[str, Any]:
        for problem in problems:
            warnings.warn(problem, stacklevel=3)
            log.warning(problem)
        verification = facts.get("verification")
        quality = {} if not verification else {
            "perplexity": {"source": round(verification["perplexity_reference"], 4),
                           "quantized": round(verification["perplexity_gguf"], 4),
                           "ratio": round(verification["perplexity_ratio"], 4)},
            "top1_agreement": round(verification["top1_agreement"], 4),
            "verified": verification["passed"],
        }
        return {"files": [out.name], "warnings": problems, **facts, "quality": quality,
                "seconds": {step: round(value, 3) for step, value in seconds.items()}}


@hookimpl
def register_quantizers(register):
    register(GGUFQuantizer)
