"""Tuner: the application-facing API. Choose a model, an adapter and an objective; fit; generate."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ftsdk import __version__, plugins
from ftsdk.artifacts import atomic_output_dir, check_output_dir, library_versions, read_manifest, write_manifest
from ftsdk.config import ModelSpec, Recipe, TrainingConfig
from ftsdk.data.formats import Conversation
from ftsdk.data.loading import DataSet, load_dataset
from ftsdk.device import torch_threads
from ftsdk.training import mixed_precision
from ftsdk.errors import ConfigError
from ftsdk.kinds import Adapter, Objective
from ftsdk.models import ALIASES, DEFAULT_MODEL, ResolvedModel, load_tokenizer, resolve
from ftsdk.validation import validate_config

LIBRARIES = ("ftsdk", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "tokenizers")
Prompt = str | Conversation


@dataclass
class FitResult:
    """What :meth:`Tuner.fit` produced."""

    output_dir: Path
    metrics: dict[str, float]
    manifest: dict[str, Any]
    log_history: list[dict[str, Any]]


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
    ) -> None:
        spec = {"name": model} if isinstance(model, str) else model
        self.model_spec: ModelSpec = validate_config(ModelSpec, spec, where="model")
        self.adapter: Adapter = plugins.create("adapter", adapter, adapter_config)  # type: ignore[assignment]
        self.objective: Objective = plugins.create("objective", objective, objective_config)  # type: ignore[assignment]
        self.training: TrainingConfig = validate_config(TrainingConfig, training, where="training")
        self.model: Any = None
        self.tokenizer: Any = None
        #: the folder this tuner last wrote (fit) or opened (load)
        self.output_dir: Path | None = None
        self._resolved: ResolvedModel | None = None

    @classmethod
    def from_recipe(cls, recipe: Recipe | str | Path) -> Tuner:
        """A Tuner configured like a YAML recipe (``ftsdk train`` uses this)."""
        if not isinstance(recipe, Recipe):
            recipe = Recipe.from_yaml(recipe)
        return cls(
            recipe.model,
            adapter=recipe.adapter,
            objective=recipe.objective,
            adapter_config=recipe.adapter_config,
            objective_config=recipe.objective_config,
            training=recipe.training,
        )

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Tuner:
        """A Tuner configured exactly as the run that wrote ``manifest`` (an ``ftsdk.json``): fit it to reproduce."""
        return cls(
            manifest["base_model"]["spec"],
            adapter=manifest["adapter"]["name"],
            objective=manifest["objective"]["name"],
            adapter_config=manifest["adapter"]["config"],
            objective_config=manifest["objective"]["config"],
            training=manifest["training"],
        )

    @classmethod
    def load(cls, output_dir: str | Path) -> Tuner:
        """Reopen a trained output folder (its manifest names the base model and plugins) for generation."""
        manifest = read_manifest(output_dir)
        if "adapter" not in manifest:  # a complete model folder, e.g. an adapter merged into its base
            tuner = cls(str(output_dir))
            tuner._load_base()
            tuner.output_dir = Path(output_dir)
            return tuner
        tuner = cls.from_manifest(manifest)
        if manifest["kind"] == "adapter":
            from peft import PeftModel

            base, _ = tuner._load_base()
            tuner.model = PeftModel.from_pretrained(base, str(output_dir))
        else:  # a full model: its folder holds the weights and the tokenizer
            tuner._load_base(ResolvedModel(str(output_dir), "local", str(output_dir)))
        tuner.output_dir = Path(output_dir)
        return tuner

    # -- training ---------------------------------------------------------------------------------

    def fit(
        self,
        data: str | Path,
        *,
        eval_data: str | Path | None = None,
        output_dir: str | Path,
        overwrite: bool = False,
    ) -> FitResult:
        """Validate the data, train, and write the result atomically to ``output_dir``."""
        task = self.objective.data_task
        train_set = load_dataset(data, task)
        eval_set = load_dataset(eval_data, task) if eval_data is not None else None
        output = check_output_dir(output_dir, overwrite)
        self.adapter.check_training(self.training, self.objective)
        self._check_pairing()

        with torch_threads(self.training.threads):
            outcome, manifest, seconds = self._train(train_set, eval_set, output, overwrite)
        from ftsdk.report import summary_line

        print(summary_line(outcome.metrics, seconds, output))
        self.output_dir = output
        return FitResult(output, outcome.metrics, manifest, outcome.log_history)

    def _train(
        self, train_set: DataSet, eval_set: DataSet | None, output: Path, overwrite: bool
    ) -> tuple[Any, dict[str, Any], float]:
        import transformers

        from ftsdk.progress import LossProgressBar
        from ftsdk.report import model_card, plot_losses
        from ftsdk.training import TrainJob

        transformers.set_seed(self.training.seed)
        model, tokenizer = self._load_base()
        self.adapter.check(model)
        model = self.model = self.adapter.wrap(model)
        progress = LossProgressBar(f"{self.adapter.name}+{self.objective.name}")
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="ftsdk-work-") as work, atomic_output_dir(output, overwrite=overwrite) as tmp:
            job = TrainJob(
                model=model,
                tokenizer=tokenizer,
                train_examples=train_set.examples,
                eval_examples=eval_set.examples if eval_set else None,
                training=self.training,
                placement=self._placement(),
                work_dir=Path(work),
                callbacks=[progress],
            )
            outcome = self.objective.train(job)
            seconds = time.perf_counter() - started
            self.adapter.save(model, str(tmp))
            tokenizer.save_pretrained(tmp)
            (tmp / "log_history.json").write_text(json.dumps(outcome.log_history, indent=1), encoding="utf-8")
            plotted = plot_losses(outcome.log_history, tmp / "loss.png", title=f"{output.name}: loss")
            manifest = self._manifest(train_set, eval_set, outcome.metrics, seconds, plotted is not None)
            write_manifest(tmp, manifest)
            (tmp / "README.md").write_text(model_card(manifest), encoding="utf-8")
        return outcome, manifest, seconds

    def merge_adapter(self, output_dir: str | Path, **options: Any) -> Path:
        """Merge the adapter this tuner trained or loaded into its base; see :func:`ftsdk.export.merge_adapter`."""
        if self.output_dir is None:
            raise ConfigError("this tuner has no adapter to merge yet", hint="call fit() first, or use Tuner.load()")
        from ftsdk.export import merge_adapter

        return merge_adapter(self.output_dir, output_dir, **options)

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
        from ftsdk.generation import generate_replies

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
        from ftsdk.device import choose_placement

        return choose_placement(self.model_spec.device, self.model_spec.dtype)

    def _load_base(self, resolved: ResolvedModel | None = None) -> tuple[Any, Any]:
        self._resolved = resolved or resolve(self.model_spec)
        self.tokenizer = load_tokenizer(self._resolved, self.model_spec)
        head = self.objective.model_head
        loaded = self.adapter.load_model(self._resolved, self.model_spec, self._placement(), head)
        self.model = self.objective.prepare_model(loaded)
        return self.model, self.tokenizer

    def _manifest(
        self,
        train_set: DataSet,
        eval_set: DataSet | None,
        metrics: dict[str, float],
        seconds: float,
        loss_plot: bool,
    ) -> dict[str, Any]:
        assert self._resolved is not None
        placement = self._placement()
        alias = ALIASES.get(self.model_spec.name)

        def producer(kind: str, plugin: Any) -> dict[str, Any]:
            info = plugins.get(kind, plugin.name)
            return {
                "name": plugin.name,
                "distribution": info.distribution,
                "version": info.version,
                "config": plugin.config.model_dump(mode="json"),
            }

        return {
            "ftsdk_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "kind": self.adapter.produces,
            "adapter": producer("adapter", self.adapter),
            "objective": producer("objective", self.objective),
            "base_model": {
                "reference": self._resolved.reference,
                "origin": self._resolved.origin,
                "source": self._resolved.source,
                "hub_id": alias.hub_id if alias else (self._resolved.source if self._resolved.origin == "hub" else None),
                "spec": self.model_spec.model_dump(mode="json"),
            },
            "training": self.training.model_dump(mode="json"),
            "seed": self.training.seed,
            "placement": {
                "device": placement.device,
                "dtype": placement.dtype_name,
                "mixed_precision": mixed_precision(self.training, placement),
            },
            "data": {"train": train_set.summary(), "eval": eval_set.summary() if eval_set else None},
            "metrics": metrics,
            "train_seconds": round(seconds, 2),
            "loss_plot": "loss.png" if loss_plot else None,
            "libraries": library_versions(*LIBRARIES),
        }
