"""Conformance check of a merger: it merges tiny fine-tunes (or adapters) through ``ftsdk.merge``, keeps
every tensor's shape and dtype, loads in transformers or PEFT, repeats itself exactly, and refuses inputs
that do not fit with a typed error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ftsdk.artifacts import read_manifest
from ftsdk.plugin.errors import FtsdkError
from ftsdk.plugin.kinds import Plugin
from ftsdk.testing.kit import (
    PluginRef,
    active,
    fail,
    plugin_class,
    require_installed,
    sample_ids,
)


def _tensors(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    tensors: dict[str, Any] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def _inputs(cls: type[Plugin], base: Path, root: Path, kind: str, dtype: str) -> list[Path]:
    """Two (or the merger's ``max_inputs``) inputs besides the base: fine-tunes, or LoRA adapters."""
    count = min(2, getattr(cls, "max_inputs", None) or 2)
    if kind == "adapters":
        from ftsdk.testing.inputs import make_lora_adapter

        return [make_lora_adapter(base, root / f"adapter-{i}", rank=4, seed=i + 1) for i in range(count)]
    from ftsdk.merging.testing import make_finetunes

    tuned = make_finetunes(base, root / "finetunes")
    names = ["dense", "sparse"][:count]
    if dtype == "float32":
        return [tuned[n] for n in names]
    from ftsdk.testing.inputs import cast_model

    return [cast_model(tuned[n], root / f"{n}-{dtype}", dtype) for n in names]


def _merge(name: str, models: Sequence[Path], base: Path, parameters: Mapping[str, Any], output: Path) -> Path:
    from ftsdk.merging import merge

    return merge({"method": name, "models": [{"model": str(m)} for m in models], "base_model": str(base),
                  "parameters": dict(parameters), "output": str(output)})


def _check_layout(cls: type[Plugin], merged: dict[str, Any], reference: dict[str, Any], *, shapes: bool) -> None:
    missing = sorted(set(reference) - set(merged))
    extra = sorted(set(merged) - set(reference))
    if missing or extra:
        raise fail(cls.kind, cls.name, f"the output's tensors differ from the inputs': missing {missing[:5]}, "
                   f"extra {extra[:5]}", "write one output tensor per input tensor, under the same name")
    for name, tensor in merged.items():
        if tensor.dtype != reference[name].dtype:
            raise fail(cls.kind, cls.name, f"tensor {name} is {tensor.dtype} but the inputs are "
                       f"{reference[name].dtype}", "write each tensor in the inputs' dtype (cast the result back)")
        if shapes and tensor.shape != reference[name].shape:
            raise fail(cls.kind, cls.name, f"tensor {name} has shape {tuple(tensor.shape)}, the inputs "
                       f"{tuple(reference[name].shape)}", "merged tensors keep the inputs' shapes")


def _check_loads(cls: type[Plugin], output: Path, base: Path, produces: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        if produces == "adapter":
            from peft import PeftModel

            model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(output))
        else:
            model = AutoModelForCausalLM.from_pretrained(output)
        with torch.no_grad():
            logits = model.eval()(input_ids=sample_ids(AutoTokenizer.from_pretrained(output))).logits
    except Exception as exc:
        raise fail(cls.kind, cls.name, f"the merged {produces} does not load and run: {type(exc).__name__}: {exc}",
                   "write config, weights and tokenizer files as save_pretrained does") from exc
    if not bool(logits.isfinite().all()):
        raise fail(cls.kind, cls.name, "the merged model computes non-finite logits", "check the merge math")


def _check_refuses_misfit(cls: type[Plugin], name: str, base: Path, root: Path, parameters: Mapping[str, Any],
                          kind: str) -> None:
    """Inputs that do not fit fail with a typed error, before any output is written: for a model merge, models
    whose matrices are one column short of the base's; for an adapter merge, a model folder given as adapter."""
    from ftsdk.merging.testing import variant

    if kind == "adapters":
        misfit, what = base, "a model folder given as an adapter"
    else:
        misfit = variant(base, root / "misfit", lambda n, t: t[..., :-1] if t.dim() == 2 else t)
        what = "models whose tensors do not fit the base"
    count = min(2, getattr(cls, "max_inputs", None) or 2)
    output = root / "misfit-out"
    try:
        _merge(name, [misfit] * count, base, parameters, output)
    except FtsdkError:
        pass
    except Exception as exc:
        raise fail(cls.kind, cls.name, f"merging {what} raised {type(exc).__name__}: {exc}", "check the inputs in prepare() and raise ftsdk.ConfigError "
                   "naming the input at fault") from exc
    else:
        raise fail(cls.kind, cls.name, f"merging {what} raised no error",
                   "compare the inputs' tensor names and shapes in prepare() and raise ftsdk.ConfigError")
    if output.exists():
        raise fail(cls.kind, cls.name, "a refused merge left an output folder behind",
                   "raise from prepare(), before anything is written")


def example_parameters(cls: type[Plugin]) -> dict[str, Any]:
    """Values for the options a merge needs but no default gives, from their fields' ``examples``.

    A method option without a default, an input option whose default is None (such as a required ``weight``) or
    a method option whose default None means "draw one" (a ``seed``) takes its field's first example, so the
    kit (and ``ftsdk plugin check merger NAME --full``) can merge with no parameters given.
    """
    found: dict[str, Any] = {}
    for model in (cls.Config, getattr(cls, "InputParams", None)):
        for name, field in (model.model_fields.items() if model is not None else ()):
            if field.examples and (field.is_required() or field.default is None):
                found[field.alias or name] = field.examples[0]
    return found


def check_merger(
    plugin: PluginRef,
    tmp_path: str | Path,
    *,
    parameters: Mapping[str, Any] | None = None,
    inputs: str | None = None,
    base: str | Path | None = None,
    deterministic: bool = True,
    dtypes: Sequence[str] = ("float32", "bfloat16"),
) -> None:
    """The merger merges a tiny base and its fine-tunes (``inputs="adapters"``: LoRA adapters of it).

    Run through :func:`ftsdk.merge` with ``parameters`` (the merge config's top-level parameters: method
    options and per-input defaults such as ``weight``) over :func:`example_parameters`, once per input dtype in
    ``dtypes``. ``inputs`` defaults to the merger's ``merges`` attribute. Checked: the
    output keeps every tensor's name and dtype (and shape, for models; an adapter merge may change the rank),
    loads in transformers (or PEFT) and computes finite logits; merging again gives bitwise equal tensors
    when ``deterministic`` (give random methods a ``seed``); inputs that do not fit the base fail with a
    typed ftsdk error and leave no output.
    """
    import torch

    cls = plugin_class(plugin, "merger")
    require_installed(cls)
    root = Path(tmp_path)
    parameters = example_parameters(cls) | dict(parameters or {})
    inputs = inputs or cls.merges
    if base is None:
        from ftsdk.testing.tiny import build_tiny_model

        base = build_tiny_model(root / "base")
    base = Path(base)
    with active(cls):
        for dtype in dtypes if inputs == "models" else dtypes[:1]:
            folder = root / dtype
            models = _inputs(cls, base, folder, inputs, dtype)
            base_of_dtype = base if dtype == "float32" or inputs == "adapters" else _cast_base(base, folder, dtype)
            merged = _merge(cls.name, models, base_of_dtype, parameters, folder / "merged")
            produces = read_manifest(merged)["kind"]
            tensors = _tensors(merged)
            _check_layout(cls, tensors, _tensors(models[0]), shapes=inputs == "models")
            _check_loads(cls, merged, base, produces)
            if deterministic:
                again = _tensors(_merge(cls.name, models, base_of_dtype, parameters, folder / "again"))
                changed = [n for n, t in tensors.items() if not torch.equal(t, again[n])]
                if changed:
                    raise fail(cls.kind, cls.name, f"merging the same inputs twice gave different tensors "
                               f"({', '.join(changed[:3])}...)", "make the merge deterministic: seed every "
                               "random draw from the config (or pass deterministic=False for unseeded methods)")
        _check_refuses_misfit(cls, cls.name, base, root, parameters, inputs)


def _cast_base(base: Path, folder: Path, dtype: str) -> Path:
    from ftsdk.testing.inputs import cast_model

    return cast_model(base, folder / "base", dtype)
