"""Tuner: the application-facing API (choose a model, an adapter and an objective; fit; generate), and the
FitResult a fit returns: its figures and the next steps (generate, evaluate, merge, reload)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftsdk import plugins
from ftsdk.artifacts import (
    check_output_dir,
    claim_output,
    library_versions,
    manifest_header,
    read_manifest,
)
from ftsdk.data.formats import Conversation
from ftsdk.data.loading import DataSet, load_dataset
from ftsdk.data.sources import Source
from ftsdk.models import loading
from ftsdk.models.device import ThreadChoice, choose_threads, torch_threads
from ftsdk.models.loading import DEFAULT_MODEL, ResolvedModel, load_model, load_tokenizer
from ftsdk.models.spec import ModelSpec
from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.kinds import Adapter, Objective
from ftsdk.plugin.settings import validate_config
from ftsdk.training.distributed.config import DistributedConfig
from ftsdk.training.recipe import Recipe, TrainingConfig
from ftsdk.training.save import TrainedRun, run_record, save_run
from ftsdk.training.trainer import mixed_precision

if TYPE_CHECKING:
    from ftsdk.evaluation.results import Comparison


Prompt = str | Conversation


@dataclass
class FitResult:
    """What :meth:`Tuner.fit` produced, and what to do with it next::

        result = tuner.fit("train.jsonl", output_dir="runs/first")
        result.generate("Where is my order #LM-1234?")      # the tuned model replies
        result.evaluate("val.jsonl")                         # base vs tuned report, into runs/first/eval
        result.merge("runs/first-merged")                    # the adapter merged into its base: a plain model
        tuner = result.reload()                              # Tuner.load of runs/first

    ``generate`` and ``evaluate`` use the tuner that trained it while that tuner still holds this fit's model,
    else the folder reloaded; ``merge`` is :func:`ftsdk.merging.adapter.merge_adapter`.
    """

    output_dir: Path
    metrics: dict[str, float]
    manifest: dict[str, Any]
    log_history: list[dict[str, Any]]
    #: what ``ftsdk data check`` found in the data trained on, by split (the training report shows it)
    data_checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    tuner: Tuner | None = field(default=None, repr=False, compare=False)

    def generate(self, prompts: Prompt | list[Prompt], **options: Any) -> str | list[str]:
        """Reply with the tuned model: :meth:`Tuner.generate` (max_new_tokens, temperature, batch_size)."""
        return self._tuned().generate(prompts, **options)

    def evaluate(self, data: str | Path, **options: Any) -> Comparison:
        """Compare the base and the tuned model on held-out ``data``: :meth:`Tuner.evaluate`."""
        return self._tuned().evaluate(data, **options)

    def merge(self, output_dir: str | Path, **options: Any) -> Path:
        """Merge the trained adapter into its base model, written to ``output_dir``; see
        :func:`ftsdk.merging.adapter.merge_adapter` for ``options`` (dtype, base_weights, overwrite, ...)."""
        from ftsdk.merging.adapter import merge_adapter

        return merge_adapter(self.output_dir, output_dir, **options)

    def reload(self, *, trust_remote_code: bool = False) -> Tuner:
        """A fresh :class:`Tuner` with this output loaded (:meth:`Tuner.load`)."""
        return Tuner.load(self.output_dir, trust_remote_code=trust_remote_code)

    def _tuned(self) -> Tuner:
        if self.tuner is None or self.tuner.model is None or self.tuner.output_dir != self.output_dir:
            self.tuner = self.reload()
        return self.tuner


class Tuner:
    """Fine-tune a model with one adapter plugin and one objective plugin.

    Everything is validated here, before any model is loaded::

        tuner = Tuner("smollm2-135m", adapter="lora", objective="sft", adapter_config={"r": 16})
        result = tuner.fit("train.jsonl", eval_data="val.jsonl", output_dir="runs/first")
        print(tuner.generate("Where is my order #LM-1234?"))
    """

    def __init__(
        self,
        model: str | ModelSpec | Mapping[str, Any] = DEFAULT_MODEL,
        *,
        adapter: str = "lora",
        objective: str = "sft",
        adapter_config: Mapping[str, Any] | None = None,
        objective_config: Mapping[str, Any] | None = None,
        training: TrainingConfig | Mapping[str, Any] | None = None,
        distributed: DistributedConfig | Mapping[str, Any] | None = None,
        chat_template: str | None = None,
    ) -> None:
        spec = {"name": model} if isinstance(model, str) else model
        recipe = Recipe.model_construct(  # each part validated here, where errors name it
            model=validate_config(ModelSpec, spec, where="model"),
            adapter=adapter,
            adapter_config=dict(adapter_config or {}),
            objective=objective,
            objective_config=dict(objective_config or {}),
            training=validate_config(TrainingConfig, training, where="training"),
            distributed=None if distributed is None else validate_config(DistributedConfig, distributed,
                                                                         where="distributed"),
            chat_template=chat_template,
        )
        self._setup(recipe)

    def _setup(self, recipe: Recipe) -> None:
        """Take the model, plugins and settings of a validated ``recipe``; create the plugins (validating their
        options) and read the chat template."""
        from ftsdk.data.templates import load_chat_template

        #: the chat template chosen by name or file (None: the tokenizer's own), and its checked Jinja text
        self.chat_template_name = recipe.chat_template
        self.chat_template = load_chat_template(recipe.chat_template) if recipe.chat_template else None
        self.model_spec: ModelSpec = recipe.model
        self.adapter: Adapter = plugins.create("adapter", recipe.adapter, recipe.adapter_config)  # type: ignore[assignment]
        self.objective: Objective = plugins.create(  # type: ignore[assignment]
            "objective", recipe.objective, recipe.objective_config)
        self.training: TrainingConfig = recipe.training
        self.distributed: DistributedConfig | None = recipe.distributed
        self.model: Any = None
        self.tokenizer: Any = None
        #: the folder this tuner last wrote (fit) or opened (load)
        self.output_dir: Path | None = None
        self._resolved: ResolvedModel | None = None
        self._threads: ThreadChoice | None = None

    @classmethod
    def from_recipe(cls, recipe: Recipe | str | Path) -> Tuner:
        """A Tuner configured like a YAML recipe (``ftsdk train`` uses this)."""
        tuner = cls.__new__(cls)
        tuner._setup(recipe if isinstance(recipe, Recipe) else Recipe.from_yaml(recipe))
        return tuner

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], *, trust_remote_code: bool = False) -> Tuner:
        """A Tuner configured exactly as the run that wrote ``manifest`` (an ``ftsdk.json``): fit it to reproduce.

        The base model's own code runs only with ``trust_remote_code=True``; a manifest asking for it is refused.
        """
        from ftsdk.models.loading import recorded_spec

        spec = recorded_spec(manifest["base_model"]["spec"], "the manifest's base_model.spec",
                             "Tuner.load(folder, trust_remote_code=True) or "
                             "Tuner.from_manifest(manifest, trust_remote_code=True)",
                             trust_remote_code=trust_remote_code)
        distributed = manifest.get("distributed")  # the config, and the world size it ran with
        return cls(
            spec,
            adapter=manifest["adapter"]["name"],
            objective=manifest["objective"]["name"],
            adapter_config=manifest["adapter"]["config"],
            objective_config=manifest["objective"]["config"],
            training=manifest["training"],
            distributed={k: v for k, v in distributed.items() if k != "world_size"} if distributed else None,
            chat_template=manifest.get("chat_template"),
        )

    @classmethod
    def load(cls, output_dir: str | Path, *, trust_remote_code: bool = False) -> Tuner:
        """Reopen a trained output folder (its manifest names the base model and plugins) for generation.

        Model code shipped with the base (``auto_map``) runs only with ``trust_remote_code=True``, whatever
        the folder records.
        """
        manifest = read_manifest(output_dir)
        if "adapter" not in manifest:  # a complete model folder, e.g. an adapter merged into its base
            tuner = cls({"name": str(output_dir), "trust_remote_code": trust_remote_code})
            tuner._load_base()
            tuner.output_dir = Path(output_dir)
            return tuner
        tuner = cls.from_manifest(manifest, trust_remote_code=trust_remote_code)
        if manifest["kind"] == "adapter":
            from ftsdk.models.peft_wrapping import load_adapter

            base, _ = tuner._load_base()
            tuner.model = load_adapter(base, output_dir)
        else:  # a full model: its folder holds the weights and the tokenizer
            tuner._load_base(ResolvedModel(str(output_dir), "local", str(output_dir)))
        tuner.output_dir = Path(output_dir)
        return tuner

    # -- training ---------------------------------------------------------------------------------

    def fit(
        self,
        data: Source | Mapping[str, Any],
        *,
        eval_data: Source | Mapping[str, Any] | None = None,
        output_dir: str | Path,
        overwrite: bool = False,
        resume: bool | str | Path = False,
        force_resume: bool = False,
        columns: Mapping[str, str] | None = None,
    ) -> FitResult:
        """Validate the data, train, and write the result atomically to ``output_dir``.

        ``data`` and ``eval_data`` are files, folders or ``datasets`` sources (``{"hub": "org/name"}``);
        ``columns`` renames their columns to ftsdk's names (see docs/data.md).

        With ``training.save_steps`` sealed checkpoints go to ``<output_dir>.checkpoints`` (removed once the
        output is written). ``resume=True`` continues from the newest complete one there, ``resume=PATH`` from
        that checkpoint or folder; a checkpoint of a different run (data, settings, versions) is refused
        unless ``force_resume``.
        """
        task = self.objective.data_task
        train_set = load_dataset(data, task, columns=columns)
        eval_set = load_dataset(eval_data, task, columns=columns) if eval_data is not None else None
        from ftsdk.training.distributed.world import current_world

        world = current_world()
        inputs = [("training data", train_set.path), ("eval data", eval_set.path if eval_set else None),
                  ("base model", self.model_spec.name)]
        # the main process holds the output's lock from here to the written output; the others only read
        with claim_output(output_dir, overwrite=overwrite, inputs=inputs) if world.is_main else \
                contextlib.nullcontext(check_output_dir(output_dir, overwrite)) as output:
            run, manifest, checks = self._fit(train_set, eval_set, output, overwrite, world, resume, force_resume)
        from ftsdk.training.report import summary_line

        if world.is_main:
            print(summary_line(run.outcome.metrics, run.seconds, output))
        self.output_dir = output
        return FitResult(output, run.outcome.metrics, manifest, run.outcome.log_history, checks, self)

    def _fit(
        self, train_set: DataSet, eval_set: DataSet | None, output: Path, overwrite: bool, world: Any,
        resume: bool | str | Path, force_resume: bool,
    ) -> tuple[TrainedRun, dict[str, Any], dict[str, dict[str, Any]]]:
        self.adapter.check_training(self.training, self.objective)
        self._check_pairing()
        from ftsdk.training.tracking import check_trackers

        check_trackers(self.training.report_to)
        from ftsdk.training.trainer import check_optimizer

        check_optimizer(self.training)
        from ftsdk.training.early_stopping import check_eval_metric

        check_eval_metric(self.training, self.objective.data_task, eval_set.examples if eval_set else None)
        from ftsdk.training.checkpoints import checkpoints_dir, plan_resume
        from ftsdk.training.distributed.strategies import check_strategy
        from ftsdk.training.distributed.world import check_world

        check_world(self.distributed, world, self._placement().device)
        check_strategy(self.distributed, self.training.save_steps)
        run_fingerprint = self._fingerprint(train_set, eval_set, world.size)
        start = plan_resume(checkpoints_dir(output), resume=resume, force=force_resume, overwrite=overwrite,
                            run_fingerprint=run_fingerprint, is_main=world.is_main)
        self._threads = choose_threads(self.training.threads, processes=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        if world.is_main:
            placement = self._placement()
            print(f"training on {placement.device} in {placement.dtype_name}, {self._threads.describe()}")
        with torch_threads(self._threads.threads):
            return self._train(train_set, eval_set, output, overwrite, start, run_fingerprint)

    def _train(
        self, train_set: DataSet, eval_set: DataSet | None, output: Path, overwrite: bool, start: Any,
        run_fingerprint: dict[str, Any],
    ) -> tuple[TrainedRun, dict[str, Any], dict[str, dict[str, Any]]]:
        import contextlib
        import shutil

        import transformers

        from ftsdk.plugin.jobs import TrainJob
        from ftsdk.training.checkpoint_callback import SealCheckpoints
        from ftsdk.training.checkpoints import checkpoints_dir
        from ftsdk.training.distributed.strategies import full_parameters
        from ftsdk.training.distributed.world import current_world, pin_device
        from ftsdk.training.progress import LossProgressBar

        world = current_world()
        pin_device(world, self._placement().device)
        transformers.set_seed(self.training.seed)
        model, tokenizer = self._load_base()
        self.adapter.check(model)
        model = self.model = self.adapter.wrap(model)
        if self.distributed is not None and self.distributed.strategy == "fsdp2" and world.distributed:
            from ftsdk.training.distributed.fsdp import shard_model

            shard_model(model, self.distributed, world, self._placement().device,
                        mixed_precision(self.training, self._placement()))
        callbacks: list[Any] = [LossProgressBar(f"{self.adapter.name}+{self.objective.name}")] if world.is_main else []
        checkpoints = checkpoints_dir(output)
        if self.training.save_steps:
            callbacks.append(SealCheckpoints(run_fingerprint, self.training.save_total_limit))
        from ftsdk.training.tracking import RunTracking

        tracking = RunTracking.for_run(self.training, output, run_fingerprint, resume=start is not None) \
            if world.is_main else None
        if tracking is not None:
            callbacks += tracking.callbacks()
        from ftsdk.training.early_stopping import best_callbacks

        callbacks += best_callbacks(self.training, eval_set.examples if eval_set else None)
        keeps_checkpoints = bool(self.training.save_steps or start)
        started = time.perf_counter()
        with contextlib.ExitStack() as stack:
            work = checkpoints if keeps_checkpoints else stack.enter_context(
                tempfile.TemporaryDirectory(prefix="ftsdk-work-"))
            job = TrainJob(
                model=model,
                tokenizer=tokenizer,
                train_examples=train_set.examples,
                eval_examples=eval_set.examples if eval_set else None,
                training=self.training,
                placement=self._placement(),
                work_dir=Path(work),
                callbacks=callbacks,
                distributed=self.distributed,
                resume_from=start.path if start else None,
                run_name=tracking.run_name if tracking else None,
            )
            if start is None:  # a resumed run takes its weights from the checkpoint
                self.adapter.initialize(model, job)
            from ftsdk.training.trainer import check_trained

            outcome = check_trained(self.objective.train(job), self.objective.name)
            run = TrainedRun(model, tokenizer, outcome, train_set, eval_set, time.perf_counter() - started)
            checks: dict[str, dict[str, Any]] = {}
            with full_parameters(model, world.is_main):  # every process gathers; the main one writes
                if world.is_main:
                    manifest, checks = save_run(self, run, output, overwrite)
                    if tracking is not None:
                        tracking.finish(output, outcome.metrics)
            if not world.is_main:
                manifest = {**manifest_header(self.adapter.produces), **run_record(self, run), "loss_plot": None}
        if keeps_checkpoints and world.is_main:
            shutil.rmtree(checkpoints, ignore_errors=True)  # the run is complete: its output replaces them
        return run, manifest, checks

    def merge_adapter(self, output_dir: str | Path, **options: Any) -> Path:
        """Merge the adapter this tuner trained or loaded into its base; see :func:`ftsdk.merging.adapter.merge_adapter`."""
        if self.output_dir is None:
            raise ConfigError("this tuner has no adapter to merge yet", hint="call fit() first, or use Tuner.load()")
        from ftsdk.merging.adapter import merge_adapter

        return merge_adapter(self.output_dir, output_dir, **options)

    def evaluate(
        self,
        data: str | Path,
        *,
        prompts: Mapping[str, str] | None = None,
        forgetting: bool | Mapping[str, Any] = True,
        generation: Mapping[str, Any] | None = None,
        output_dir: str | Path | None = None,
        overwrite: bool = False,
        **options: Any,
    ) -> Comparison:
        """Compare the base model, the base with each system prompt of ``prompts`` ({name: prompt}) and the tuned
        model on the held-out ``data``, with the forgetting check (base vs tuned) unless ``forgetting=False``
        (a mapping gives its options: threshold, category_threshold, max_new_tokens, file).

        The report goes to ``output_dir`` (default: ``eval/`` inside the trained folder). ``options`` are more
        :class:`ftsdk.evaluation.spec.EvalConfig` fields (task, labels, constrained, follow, limit, ...).
        """
        from ftsdk.evaluation.backends import TransformersBackend
        from ftsdk.evaluation.run import evaluate

        if self.model is None or self.output_dir is None:
            raise ConfigError("this tuner has no tuned model to evaluate", hint="call fit() first, or use Tuner.load()")
        gen = dict(generation or {})
        candidates = [{"name": "base", "source": self.model_spec.name, "kind": "model", "generation": gen}]
        candidates += [{"name": name, "source": self.model_spec.name, "kind": "model", "system_prompt": prompt,
                        "generation": gen} for name, prompt in (prompts or {}).items()]
        candidates.append({"name": "tuned", "source": str(self.output_dir), "generation": gen})
        config = {"data": data, "candidates": candidates, "baseline": "base",
                  "forgetting": {"enabled": isinstance(forgetting, Mapping) or bool(forgetting), "compare": ["tuned"],
                                 **(forgetting if isinstance(forgetting, Mapping) else {})},
                  "output_dir": self.output_dir / "eval" if output_dir is None else output_dir,
                  "overwrite": overwrite, **options}
        tuned = TransformersBackend(self.model, self.tokenizer)
        opened = {"tuned": tuned}
        if hasattr(self.model, "disable_adapter"):  # a PEFT model answers as its base with the adapter disabled
            base = TransformersBackend(self.model, self.tokenizer, adapter_off=True)
            opened.update({c["name"]: base for c in candidates[:-1]})
        return evaluate(config, opened=opened)

    # -- inference --------------------------------------------------------------------------------

    def generate(
        self,
        prompts: Prompt | list[Prompt],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        batch_size: int = 8,
    ) -> str | list[str]:
        """Reply to one prompt (a string or a conversation) or a list of them, with the tuned model."""
        from ftsdk.models.generation import generate_replies

        single = isinstance(prompts, str) or (
            isinstance(prompts, list) and bool(prompts) and isinstance(prompts[0], dict)
        )
        batch = [prompts] if single else list(prompts)  # type: ignore[list-item]
        conversations = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in batch]
        if self.model is None:
            self._load_base()
        replies = generate_replies(
            self.model,
            self.tokenizer,
            conversations,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            batch_size=batch_size,
            progress=len(conversations) > batch_size,
        )
        return replies[0] if single else replies

    # -- helpers ----------------------------------------------------------------------------------

    def _check_pairing(self) -> None:
        """Refuse, before loading anything, an adapter that cannot serve the objective."""
        head = self.objective.model_head
        if head not in self.adapter.heads:
            raise ConfigError(
                f"adapter '{self.adapter.name}' cannot train a {head} head, which objective "
                f"'{self.objective.name}' needs (it supports: {', '.join(self.adapter.heads)})",
                hint="choose an adapter that lists this head (see docs/objectives.md)",
            )
        self.objective.check_training(self.training, self.adapter)

    def _placement(self) -> Any:
        from ftsdk.models.device import choose_placement

        return choose_placement(self.model_spec.device, self.model_spec.dtype)

    def _load_base(self, resolved: ResolvedModel | None = None) -> tuple[Any, Any]:
        self._resolved = resolved or loading.resolve(self.model_spec)
        self.tokenizer = load_tokenizer(self._resolved, self.model_spec)
        if self.chat_template is not None:
            self.tokenizer.chat_template = self.chat_template  # saved with the output's tokenizer
        head = self.objective.model_head
        placement = self._placement()
        loaded = load_model(self._resolved, self.model_spec, placement, head=head,
                            **self.adapter.load_options(placement, head))
        self.model = self.objective.prepare_model(loaded)
        return self.model, self.tokenizer

    def _fingerprint(self, train_set: DataSet, eval_set: DataSet | None, world_size: int) -> dict[str, Any]:
        """What a checkpoint must share with this run to be continued by it (see ftsdk.training.checkpoints)."""
        from ftsdk.training.checkpoints import fingerprint

        def plugin(kind: str, instance: Any) -> dict[str, Any]:
            info = plugins.get(kind, instance.name)
            return {"name": instance.name, "version": info.version, "config": instance.config.model_dump(mode="json")}

        def content(data: DataSet | None) -> dict[str, Any] | None:
            return None if data is None else {"sha256": data.sha256, "rows": len(data.examples)}

        return fingerprint(
            model=self.model_spec.model_dump(mode="json"),
            adapter=plugin("adapter", self.adapter),
            objective=plugin("objective", self.objective),
            training=self.training.model_dump(mode="json"),
            data={"train": content(train_set), "eval": content(eval_set)},
            distributed=self.distributed.model_dump(mode="json") if self.distributed else None,
            world_size=world_size,
            libraries=library_versions(),
        )
