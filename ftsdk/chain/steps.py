"""Each step type's checks (no heavy work: plugins, configs, inputs) and how it runs, through ftsdk's own APIs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftsdk import plugins
from ftsdk.artifacts import child_path
from ftsdk.chain.config import (
    EvaluateStep,
    ExportStep,
    MergeAdapterStep,
    MergeStep,
    QuantizeStep,
    StepConfig,
    TrainStep,
)
from ftsdk.chain.refs import (
    MODEL_KINDS,
    UNKNOWN,
    Artifact,
    Context,
    Prepared,
    external,
    require_kind,
)
from ftsdk.plugin.errors import ConfigError, DataError
from ftsdk.quantizing.calibration import BUILTIN, TextsConfig


def _plugin_record(kind: str, name: str) -> dict[str, str]:
    info = plugins.get(kind, name)
    return {"name": name, "distribution": info.distribution, "version": info.version}


def prepare_train(step: TrainStep, ctx: Context) -> Prepared:
    from ftsdk.models.spec import ModelSpec
    from ftsdk.plugin.settings import validate_config
    from ftsdk.safe_yaml import read_yaml_mapping
    from ftsdk.training.recipe import Recipe
    from ftsdk.training.tuner import Tuner

    if isinstance(step.recipe, Path):
        raw, base = read_yaml_mapping(step.recipe, "recipe"), step.recipe.parent
    else:
        raw, base = dict(step.recipe), None
    raw["output_dir"] = "chain"  # the chain decides where the output goes
    recipe = validate_config(Recipe, raw, where="recipe")
    if base is not None:
        recipe = recipe.model_copy(update=recipe._resolved_paths(base))
    uses: dict[str, Artifact] = {}
    if step.model is not None:
        model = ctx.lookup(step.model, "model")
        require_kind(model, ("model",), "model")
        uses["model"] = model
        recipe = recipe.model_copy(update={"model": ModelSpec(**{**recipe.model.model_dump(), "name": model.reference})})
    elif Path(recipe.model.name).exists():
        found = external("model", recipe.model.name)
        if found is not None:
            uses["model"] = found
    tuner = Tuner.from_recipe(recipe)  # plugins, their configs and the training settings
    tuner.adapter.check_training(tuner.training, tuner.objective)
    tuner.objective.check_training(tuner.training, tuner.adapter)
    data = recipe.training_data(f"the recipe of step '{step.name}'")
    sources = [source for source in (data.train, data.eval) if source is not None]
    files = [source for source in sources if isinstance(source, Path)]  # files and folders: fingerprinted by content
    for path in files:
        if not path.exists():
            raise DataError(f"data not found: {path}", hint="relative paths start at the recipe (or chain) file")

    def run(folder: Path) -> None:
        Tuner.from_recipe(recipe).fit(data.train, eval_data=data.eval, output_dir=folder, overwrite=True,
                                      columns=data.columns)

    settings = {"adapter": _plugin_record("adapter", recipe.adapter),
                "objective": _plugin_record("objective", recipe.objective),
                # `datasets` sources are fingerprinted by what they name (a hub data set's content is not hashed)
                "data": {"hub": [s.model_dump(mode="json") for s in sources if not isinstance(s, Path)],
                         "columns": data.columns},
                "recipe": recipe.model_dump(mode="json", exclude={"output_dir": True, "overwrite": True, "data": True,
                                                                  "model": {"name"} if "model" in uses else set()})}
    return Prepared(tuner.adapter.produces, uses, run, files, settings)


def prepare_merge_adapter(step: MergeAdapterStep, ctx: Context) -> Prepared:
    source = ctx.lookup(step.source, "source") if step.source else ctx.latest(("adapter",), "source")
    require_kind(source, ("adapter",), "source", hint="merge_adapter takes a PEFT adapter folder")
    uses = {"source": source}
    if step.base_model is not None:
        uses["base_model"] = ctx.lookup(step.base_model, "base_model", paths=True)
    elif "base" in ctx.inputs:
        uses["base_model"] = ctx.inputs["base"]
    if "base_model" in uses:
        require_kind(uses["base_model"], ("model",), "base_model")

    def run(folder: Path) -> None:
        from ftsdk.merging.adapter import merge_adapter

        base = uses.get("base_model")
        merge_adapter(source.path, folder, dtype=step.dtype, base_weights=step.base_weights,
                      base_model=base.reference if base else None, overwrite=True)

    return Prepared("model", uses, run, settings={"dtype": step.dtype, "base_weights": step.base_weights})


def prepare_merge(step: MergeStep, ctx: Context) -> Prepared:
    from ftsdk.merging import load_merge_config, merge
    from ftsdk.merging.request import build_request
    from ftsdk.safe_yaml import read_yaml_mapping

    raw = read_yaml_mapping(step.config, "merge config") if isinstance(step.config, Path) else dict(step.config)
    base_dir = step.config.parent if isinstance(step.config, Path) else None
    uses: dict[str, Artifact] = {}

    def refer(value: Any, label: str) -> Any:
        if not isinstance(value, str) or value == "base":
            return value
        if base_dir is not None and (base_dir / value).exists() and value not in ctx.made and value not in ctx.inputs:
            value = str(base_dir / value)
        artifact = ctx.lookup(value, label, paths=True)
        require_kind(artifact, ("model", "adapter"), label)
        uses[label] = artifact
        return artifact.reference

    models = raw.get("models") if isinstance(raw.get("models"), list) else []
    raw["models"] = [{**m, "model": refer(m.get("model"), f"config.models[{i}]")} if isinstance(m, dict) else m
                     for i, m in enumerate(models)]
    for key in ("base_model", "tokenizer_source"):
        if raw.get(key) is not None:
            raw[key] = refer(raw[key], f"config.{key}")
    raw.pop("output", None)
    config = load_merge_config(raw)
    build_request(config)  # the merger, its options and every input's options
    kinds = {a.kind for label, a in uses.items() if label.startswith("config.models")}
    produces = "adapter" if kinds == {"adapter"} else "model"

    def run(folder: Path) -> None:
        merge(config, output=folder, overwrite=True)

    by_path = {a.reference: label for label, a in uses.items()}
    dump = config.model_dump(mode="json", exclude={"output", "overwrite"})
    dump["models"] = [{**m, "model": by_path.get(m["model"], m["model"])} for m in dump["models"]]
    for key in ("base_model", "tokenizer_source"):
        dump[key] = by_path.get(dump[key], dump[key])
    return Prepared(produces, uses, run, settings={"merger": _plugin_record("merger", config.method), "config": dump})


def prepare_quantize(step: QuantizeStep, ctx: Context) -> Prepared:
    from ftsdk.quantizing.run import check_accepts, create_quantizer, quantize

    quantizer = create_quantizer(step.method, step.config)
    source = ctx.lookup(step.source, "source") if step.source else ctx.latest(quantizer.accepts, "source")
    if source.kind == "adapter" and "adapter" not in quantizer.accepts:
        raise ConfigError(f"quantizer '{step.method}' cannot quantize source '{source.name}': it is a PEFT adapter",
                          hint="add a merge_adapter step before it and quantize that (source: <its name>)")
    if source.kind in MODEL_KINDS:
        check_accepts(type(quantizer), source.kind, source.name)
    else:
        require_kind(source, quantizer.accepts, "source")
    files = []
    if quantizer.uses_calibration:
        step.calibration.check()
        if step.calibration.data != "builtin":
            files.append(Path(step.calibration.data))
    if source.step is None and source.alias is None:
        quantizer.check(source.path, source.kind)

    def run(folder: Path) -> None:
        quantize(source.reference, step.method, folder, config=quantizer.config,
                 calibration=step.calibration if quantizer.uses_calibration else None, overwrite=True)

    produces = "gguf" if quantizer.produces == "gguf" else "quantized"
    return Prepared(produces, {"source": source}, run, files,
                    {"quantizer": _plugin_record("quantizer", step.method),
                     "config": quantizer.config.model_dump(mode="json"),
                     "calibration": _texts_settings(step.calibration) if quantizer.uses_calibration else None})


def _texts_settings(texts: TextsConfig) -> dict[str, Any]:
    """The texts' options without the file's path (its content counts instead)."""
    return texts.model_dump(mode="json", exclude={"data"}) | {"builtin": texts.data == BUILTIN}


def models_of(names: list[str] | None, ctx: Context, field_name: str) -> dict[str, Artifact]:
    """The named artifacts (models only), or by default every model an earlier step made."""
    if names is None:
        found = {a.name: a for a in ctx.made.values() if a.kind in MODEL_KINDS}
        if not found:
            raise ConfigError(f"no earlier step made a model to {field_name}", hint=f"list them under {field_name}:")
        return found
    if not names:
        raise ConfigError(f"{field_name} is empty", hint="name chain inputs or earlier steps, or leave it out")
    found = {}
    for index, name in enumerate(names):
        artifact = ctx.lookup(name, f"{field_name}[{index}]")
        require_kind(artifact, MODEL_KINDS, f"{field_name}[{index}]")
        found[name] = artifact
    return found


def prepare_export(step: ExportStep, ctx: Context) -> Prepared:
    from ftsdk.chain.export import export_artifacts

    artifacts = models_of(step.artifacts, ctx, "artifacts")
    for name in artifacts:  # each is copied to <export>/<name>: refuse, before anything runs, a name leaving it
        child_path(Path("export"), name, "artifact name")
    evaluations = {a.name: a for a in ctx.made.values() if a.kind == "evaluation"}
    uses = {**{f"artifacts.{n}": a for n, a in artifacts.items()}, **{f"evaluations.{n}": a for n, a in evaluations.items()}}

    def run(folder: Path) -> None:
        export_artifacts(artifacts, evaluations, folder)

    return Prepared("export", uses, run, settings={"artifacts": list(artifacts)})


def prepare_evaluate(step: EvaluateStep, ctx: Context) -> Prepared:
    from ftsdk.chain.evaluate import check_evaluation, run_evaluation

    models = models_of(step.models, ctx, "models")
    reference = step.reference or next(iter(models))
    if reference not in models:
        models = {reference: ctx.lookup(reference, "reference"), **models}
    check_evaluation(models, models[reference], step.texts)
    files = [] if step.texts.data == "builtin" else [Path(step.texts.data)]

    def run(folder: Path) -> None:
        run_evaluation(models, reference, step, folder)

    settings = {"models": list(models), "reference": reference, "texts": _texts_settings(step.texts),
                "batch_size": step.batch_size}
    return Prepared("evaluation", {f"models.{n}": a for n, a in models.items()}, run, files, settings)


PREPARE: dict[str, Callable[[Any, Context], Prepared]] = {
    "train": prepare_train,
    "merge_adapter": prepare_merge_adapter,
    "merge": prepare_merge,
    "quantize": prepare_quantize,
    "evaluate": prepare_evaluate,
    "export": prepare_export,
}
#: the kind of artifact a step makes, assumed for later steps' checks when its own checks fail
NOMINAL_KIND = {"train": UNKNOWN, "merge_adapter": "model", "merge": UNKNOWN, "quantize": UNKNOWN,
                "evaluate": "evaluation", "export": "export"}


def prepare(step: StepConfig, ctx: Context) -> Prepared:
    """Check one step; raise the first problem as an FtsdkError."""
    return PREPARE[step.kind](step, ctx)
