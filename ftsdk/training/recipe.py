"""Typed run configuration: the model, the training hyperparameters, the data and the recipe file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ftsdk.data.sources import HubData
from ftsdk.data.templates import BUILTIN_TEMPLATES
from ftsdk.models.spec import ModelSpec
from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.settings import StrictModel, validate_config
from ftsdk.safe_yaml import read_yaml_mapping
from ftsdk.training.distributed.config import DistributedConfig

#: the largest step count (max_steps, logging/eval/save intervals) a recipe may name
MAX_STEPS = 1_000_000_000
#: the largest seed: numpy's generators (which transformers.set_seed seeds too) take 32-bit seeds
MAX_SEED = 2**32 - 1


class TrainingConfig(StrictModel):
    """Hyperparameters shared by every objective."""

    epochs: float = Field(1.0, gt=0, le=100, description="Passes over the training data.")
    max_steps: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="Stop after this many optimizer steps (overrides epochs)."
    )
    learning_rate: float = Field(
        2e-4, gt=0, lt=1, description="Peak learning rate. LoRA: 1e-4 to 5e-4; full fine-tuning: 1e-5 to 5e-5."
    )
    batch_size: int = Field(4, ge=1, le=4096, description="Examples per device per step.")
    gradient_accumulation: int = Field(1, ge=1, le=1024, description="Steps whose gradients add up to one update.")
    max_length: int = Field(1024, ge=8, le=1_048_576, description="Tokens per example; longer rows are truncated.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Fraction of steps spent warming up the learning rate.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
                          "cosine_with_min_lr", "polynomial", "inverse_sqrt", "warmup_stable_decay"] = Field(
        "cosine", description="Learning-rate schedule after warm-up (transformers' schedulers; see docs/training.md)."
    )
    lr_cycles: int = Field(
        1, ge=1, le=1000, description="cosine_with_restarts: how many cosine cycles, each restarting at the peak."
    )
    lr_power: float = Field(1.0, gt=0, le=10, description="polynomial: the decay's power (1 is linear).")
    lr_min_ratio: float = Field(
        0.0, ge=0, lt=1, description="polynomial, cosine_with_min_lr, warmup_stable_decay: the final learning rate "
        "as a share of the peak.",
    )
    lr_decay_steps: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="warmup_stable_decay (required): optimizer steps of the final decay; "
        "the learning rate stays at its peak between warm-up and decay.",
    )
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw", "paged_adamw_8bit", "adafactor", "sgd", "adagrad",
                       "rmsprop", "lion", "lion_8bit", "ademamix", "ademamix_8bit"] = Field(
        "adamw", description="adamw: torch's (fused) AdamW; *_8bit, paged_*, lion*, ademamix*: bitsandbytes' "
        "(ftsdk[bnb]); adafactor: transformers'; sgd, adagrad, rmsprop: torch's.",
    )
    adam_betas: tuple[float, float] = Field(
        (0.9, 0.999), description="Adam-family (adamw*, lion*, ademamix*) decay rates of the moment estimates."
    )
    adam_epsilon: float = Field(1e-8, gt=0, lt=1, description="Adam-family denominator term.")
    momentum: float = Field(0.0, ge=0, lt=1, description="sgd and rmsprop: momentum (0.9 is common for sgd).")
    weight_decay: float = Field(0.0, ge=0, lt=1, description="Decoupled weight decay (AdamW-family) or L2 penalty.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm; 0 disables clipping.")
    seed: int = Field(42, ge=0, le=MAX_SEED, description="Seed for initialisation, shuffling and dropout.")
    logging_steps: int = Field(5, ge=1, le=MAX_STEPS, description="Log the training loss every this many steps.")
    eval_steps: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="Evaluate every this many steps; None evaluates once per epoch."
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    head_on_trained_positions: bool = Field(
        True, description="Compute the LM head and the loss only at the positions that are trained (the replies), "
        "not at every position: the same loss and gradients, faster and leaner. TRL does this on CUDA; ftsdk on "
        "every device (sft, grpo). False scores every position and masks the rest (TRL's CPU behaviour).",
    )
    group_by_length: bool = Field(
        False, description="Batch rows of similar length together (transformers' length-grouped sampler, "
        "shuffled mega-batches of 50 batches): far less padding, so faster steps; the order of rows changes, "
        "so the trajectory differs from a plain shuffle.",
    )
    padding_free: Literal["auto"] | bool = Field(
        "auto", description="sft: put each batch's rows end to end in one row with restarting position ids, no "
        "padding (TRL's padding_free; rows still attend only to themselves). auto: on only on CUDA with a varlen "
        "kernel (attn_implementation flash_attention_2/3), where it wins; off elsewhere (on CPU it is exact but "
        "not faster: SDPA builds a dense block-diagonal mask). Not with replay.",
    )
    torch_compile: bool = Field(
        False, description="Compile the model with torch.compile (transformers' torch_compile): the first steps "
        "pay the compile time; off by default because on CPU it did not pay for itself in short runs.",
    )
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto",
        description="Autocast precision: auto = bf16 where the device computes bf16 natively (recent GPUs, CPUs "
        "with AVX512-BF16 or AMX), else none.",
    )
    threads: int | None = Field(
        None, ge=1, le=1024, description="CPU threads for torch; None: the cores idle when training starts (at least 1)."
    )
    save_steps: int | None = Field(
        None,
        ge=1,
        le=MAX_STEPS,
        description="Write a resumable checkpoint (weights, optimizer, scheduler, RNG, data position) every this "
        "many optimizer steps into `<output_dir>.checkpoints`; None writes none. Resume with `ftsdk train --resume`.",
    )
    save_total_limit: int = Field(2, ge=1, le=10_000, description="Keep at most this many newest complete checkpoints.")
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list,
        description="Experiment trackers that receive the hyperparameters, the resolved plugin configs and data "
        "hashes, per-step and eval metrics, and the run's report and manifest (extras: ftsdk[tensorboard], "
        "ftsdk[mlflow], ftsdk[wandb]). MLflow and W&B read their usual environment variables.",
    )
    run_name: str | None = Field(
        None, min_length=1, description="The trackers' run name; None: the output folder's name."
    )
    eval_metric: str = Field(
        "eval_loss", min_length=1, max_length=200,
        description="The eval metric keep_best and early stopping follow: eval_loss, accuracy (label replies "
        "generated on the eval split) or field_match (JSON replies), or any metric the objective logs at "
        "evaluation (e.g. rewards/accuracies for dpo).",
    )
    greater_is_better: bool | None = Field(
        None, description="Whether a higher eval_metric is better; None: lower for losses, higher otherwise."
    )
    keep_best: bool = Field(
        False, description="Restore the checkpoint with the best eval_metric at the end; it becomes the output "
        "and the manifest records it under `best`.",
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, le=10_000, description="Stop after this many evaluations without an improvement of "
        "eval_metric; None never stops early.",
    )
    early_stopping_threshold: float = Field(
        0.0, ge=0, description="How much eval_metric must improve (absolute) to reset the patience."
    )
    eval_generation_limit: int | None = Field(
        None, ge=1, le=1_000_000, description="accuracy / field_match: generate for at most this many eval "
        "examples at each evaluation; None: all.",
    )

    @model_validator(mode="after")
    def _best_checkpoint_is_saved(self) -> TrainingConfig:
        if self.keep_best and self.save_steps is not None and self.eval_steps != self.save_steps:
            raise ValueError("keep_best with save_steps needs eval_steps equal to save_steps, so every evaluated "
                             "step is a checkpoint the best can be restored from")
        if self.early_stopping_threshold and self.early_stopping_patience is None:
            raise ValueError("early_stopping_threshold needs early_stopping_patience")
        if (self.lr_scheduler == "warmup_stable_decay") != (self.lr_decay_steps is not None):
            raise ValueError("lr_decay_steps is given with lr_scheduler warmup_stable_decay, and only then")
        misplaced = [name for name, value, default, schedulers in (
            ("lr_cycles", self.lr_cycles, 1, ("cosine_with_restarts",)),
            ("lr_power", self.lr_power, 1.0, ("polynomial",)),
            ("lr_min_ratio", self.lr_min_ratio, 0.0, ("polynomial", "cosine_with_min_lr", "warmup_stable_decay")),
        ) if value != default and self.lr_scheduler not in schedulers]
        if misplaced:
            raise ValueError(f"{', '.join(misplaced)} has no effect with lr_scheduler {self.lr_scheduler}")
        if self.momentum and self.optimizer not in ("sgd", "rmsprop"):
            raise ValueError(f"momentum has no effect with optimizer {self.optimizer} (sgd and rmsprop take it)")
        if not all(0 <= beta < 1 for beta in self.adam_betas):
            raise ValueError("adam_betas must both be in [0, 1)")
        return self


class DataSpec(StrictModel):
    """Where the training data lives."""

    train: Path | HubData = Field(
        description="Training data: a file (JSONL, JSON, CSV, TXT, Parquet, Arrow), a folder of such files, or a "
        "`datasets` source `{hub: org/name, split: train}` (see docs/data.md)."
    )
    eval: Path | HubData | None = Field(None, description="Held-out data for evaluation loss during training.")
    columns: dict[str, str] = Field(
        default_factory=dict, description="Rename source columns to ftsdk's names, e.g. `{question: prompt}`."
    )


class Recipe(StrictModel):
    """A whole training run, as written in a YAML recipe for ``ftsdk train``."""

    model: ModelSpec = Field(default_factory=ModelSpec, description="The base model.")
    adapter: str = Field("lora", description="Adapter plugin name (see `ftsdk plugins`).")
    adapter_config: dict[str, Any] = Field(default_factory=dict, description="Options of the adapter plugin.")
    objective: str = Field("sft", description="Objective plugin name (see `ftsdk plugins`).")
    objective_config: dict[str, Any] = Field(default_factory=dict, description="Options of the objective plugin.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Shared hyperparameters.")
    data: DataSpec | None = Field(
        None, description="Training and evaluation files (needed to train; `ftsdk estimate` reads no data)."
    )
    chat_template: str | None = Field(
        None, description="Chat template to train with: chatml, qwen, llama3, mistral, gemma, phi3, or a Jinja file "
        "(relative to the recipe); None keeps the tokenizer's own. Saved with the output's tokenizer.",
    )
    output_dir: Path | None = Field(
        None, description="Where the trained adapter or model is written (needed by `ftsdk train`, or --output-dir)."
    )
    overwrite: bool = Field(False, description="Replace a non-empty output_dir.")
    distributed: DistributedConfig | None = Field(
        None, description="Train with several processes (DDP, FSDP2, DeepSpeed ZeRO); see docs/distributed.md."
    )

    @classmethod
    def from_yaml(cls, path: str | Path) -> Recipe:
        """Read a recipe; relative paths inside it are relative to the recipe file."""
        path = Path(path)
        recipe = validate_config(cls, read_yaml_mapping(path, "recipe"), where=str(path))
        return recipe.model_copy(update=recipe._resolved_paths(path.parent))

    def training_data(self, where: str = "the recipe") -> DataSpec:
        """The data section, which training needs (estimating does not)."""
        if self.data is None:
            raise ConfigError(f"{where} has no data section: training needs one",
                              hint="add  data: {train: train.jsonl, eval: val.jsonl}  (eval is optional)")
        return self.data

    def _resolved_paths(self, base: Path) -> dict[str, Any]:
        def resolve(p: Any) -> Any:
            return p if not isinstance(p, Path) or p.is_absolute() else base / p

        data = self.data and self.data.model_copy(
            update={"train": resolve(self.data.train), "eval": resolve(self.data.eval)}
        )
        model = self.model
        if not Path(model.name).is_absolute() and (base / model.name).exists():
            model = model.model_copy(update={"name": str(base / model.name)})
        template = self.chat_template
        if template and template not in BUILTIN_TEMPLATES and not Path(template).is_absolute() \
                and (base / template).is_file():
            template = str(base / template)
        objective_config = self.objective_config
        replay = objective_config.get("replay")
        if isinstance(replay, dict) and isinstance(replay.get("data"), str) and replay["data"] != "general":
            # sft's replay file (ftsdk.training.replay); "general" names the shipped set
            objective_config = {**objective_config, "replay": {**replay, "data": str(resolve(Path(replay["data"])))}}
        return {"data": data, "output_dir": resolve(self.output_dir), "model": model, "chat_template": template,
                "objective_config": objective_config}
