"""Conformance check of a quantizer: it writes a model its consumer (transformers or llama.cpp) loads and runs."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from ftsdk.plugin.kinds import Plugin, Quantizer
from ftsdk.testing.kit import (
    PluginRef,
    fail,
    plugin_class,
    require_installed,
    sample_ids,
)


def _check_facts(cls: type[Plugin], facts: Any, output: Path) -> None:
    if not isinstance(facts, dict):
        raise fail(cls.kind, cls.name, f"quantize() returned {type(facts).__name__}, not a dict of facts",
                   "return a dict with 'files' (the written names) and 'warnings' (strings)")
    try:
        json.dumps(facts)
    except TypeError as exc:
        raise fail(cls.kind, cls.name, f"the facts quantize() returned are not JSON: {exc}",
                   "return plain numbers, strings, lists and dicts: they go into ftsdk.json") from exc
    files, warnings = facts.get("files"), facts.get("warnings")
    if not isinstance(files, list) or not files:
        raise fail(cls.kind, cls.name, f"facts['files'] is {files!r}", "list the names of the files written")
    absent = [name for name in files if not (output / name).is_file()]
    if absent:
        raise fail(cls.kind, cls.name, f"facts['files'] names files that are not in the output: {absent}",
                   "list names relative to job.output, of files that exist")
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise fail(cls.kind, cls.name, f"facts['warnings'] is {warnings!r}",
                   "return a list of strings (empty when nothing needs the user's attention)")


def _source_logits(source: Path, ids: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()(input_ids=ids).logits[0]


def _transformers_logits(cls: type[Plugin], output: Path, ids: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(output).eval()
    except Exception as exc:
        raise fail(cls.kind, cls.name, f"transformers cannot load the output: {type(exc).__name__}: {exc}",
                   "write a complete transformers folder (config.json with its quantization_config, weights)") from exc
    with torch.no_grad():
        return model(input_ids=ids).logits[0].float()


def _gguf_logits(cls: type[Plugin], output: Path, ids: Any) -> Any:
    import numpy as np
    import torch
    from llama_cpp import Llama

    from ftsdk.gguf import gguf_file
    from ftsdk.plugin.errors import FtsdkError

    try:
        path = gguf_file(output)
    except FtsdkError as exc:
        raise fail(cls.kind, cls.name, exc.message, "a quantizer producing 'gguf' writes exactly one .gguf file") from exc
    try:
        llm = Llama(model_path=str(path), n_ctx=64, logits_all=True, n_threads=1, verbose=False)
    except Exception as exc:
        raise fail(cls.kind, cls.name, f"llama.cpp cannot load {path.name}: {exc}",
                   "write a GGUF llama.cpp reads (gguf-py's GGUFWriter, or llama.cpp's converter)") from exc
    tokens = ids[0].tolist()
    llm.eval(tokens)
    return torch.from_numpy(np.array(llm.scores[: len(tokens)], dtype=np.float32))


def check_quantizer_output_loads(
    plugin: PluginRef,
    config: Mapping[str, Any] | None,
    tmp_path: str | Path,
    *,
    source: str | Path | None = None,
    source_kind: str = "model",
    calibration: Sequence[str] | None = None,
    min_correlation: float | None = 0.5,
) -> dict[str, Any]:
    """The quantizer writes, into an empty folder, a model its consumer loads and runs like the source.

    ``source`` defaults to a fresh tiny model (pass a bigger one where a format needs rows divisible by 256).
    Checked: ``check()`` accepts the source; ``quantize()`` fills the output and returns JSON facts with
    ``files`` and ``warnings``; the output loads in its consumer (transformers for "model", llama.cpp for
    "gguf") and, for a model source, its logits correlate with the source's at least ``min_correlation``
    (None: not compared). Returns the facts.
    """
    from ftsdk.plugin.jobs import QuantizeJob

    cls = cast("type[Quantizer]", plugin_class(plugin, "quantizer"))
    require_installed(cls)
    tmp_path = Path(tmp_path)
    if source_kind not in cls.accepts:
        raise fail(cls.kind, cls.name, f"source_kind '{source_kind}' is not among accepts={cls.accepts}",
                   "pass a source kind the quantizer accepts")
    if source is None:
        from ftsdk.testing.tiny import build_tiny_model

        source = build_tiny_model(tmp_path / "source")
    source = Path(source)
    quantizer = cls(dict(config or {}))
    quantizer.check(source, source_kind)
    if cls.uses_calibration and calibration is None:
        from ftsdk.testing.inputs import calibration_texts

        calibration = calibration_texts()
    output = tmp_path / f"{cls.name}-quantized"
    output.mkdir()
    job = QuantizeJob(source=source, source_kind=source_kind, output=output,
                      calibration=list(calibration) if cls.uses_calibration and calibration else None)
    facts = quantizer.quantize(job)
    _check_facts(cls, facts, output)
    if source_kind != "model":
        return facts
    from transformers import AutoTokenizer

    ids = sample_ids(AutoTokenizer.from_pretrained(source))
    if cls.produces == "gguf":
        logits = _gguf_logits(cls, output, ids)
    elif cls.produces == "model":
        logits = _transformers_logits(cls, output, ids)
    else:
        raise fail(cls.kind, cls.name, f"produces is {cls.produces!r}", "set produces to 'model' or 'gguf'")
    reference = _source_logits(source, ids)
    if logits.shape != reference.shape or not bool(logits.isfinite().all()):
        raise fail(cls.kind, cls.name, f"the quantized model's logits have shape {tuple(logits.shape)} "
                   f"(source: {tuple(reference.shape)}) or are not finite", "keep the architecture and vocabulary")
    if min_correlation is not None:
        import torch

        correlation = torch.corrcoef(torch.stack([logits.flatten(), reference.flatten()]))[0, 1].item()
        if not math.isfinite(correlation) or correlation < min_correlation:
            raise fail(cls.kind, cls.name, f"the quantized model's logits correlate {correlation:.3f} with the "
                       f"source's (want >= {min_correlation})", "quantize the source's weights, in its layout")
    return facts
