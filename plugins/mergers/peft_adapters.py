"""LoRA adapters of one base combined into one adapter with PEFT's ``add_weighted_adapter``.

Exactness (the merged adapter's update versus the weighted sum of the inputs' updates, sum w_i * dW_i):
``cat`` is exact (ranks add up); ``svd`` is exact when ``svd_rank`` is at least the sum of the input
ranks, else the best approximation of that rank; ``linear``, ``ties``, ``dare_*`` and ``magnitude_prune``
mix the A and B matrices separately, so their update is not the weighted sum of the inputs' updates
(they also need equal ranks). Every combination PEFT would reject, or crash on, is refused before the
base model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, cast

from pydantic import Field, model_validator

from ftsdk import (
    ConfigError,
    MergeInput,
    Merger,
    MergeRequest,
    ModelLoadError,
    PluginConfig,
    Setting,
    SettingOf,
    hookimpl,
)
from ftsdk.artifacts import sha256_file
from ftsdk.merging.engine import TOKENIZER_FILES
from ftsdk.plugin.per_layer import evaluate, layer_position

if TYPE_CHECKING:
    from peft import LoraConfig

PRUNING = ("ties", "dare_linear", "dare_ties", "magnitude_prune")
EQUAL_RANKS = ("linear", *PRUNING)
Combination = Literal["cat", "svd", "linear", "ties", "dare_linear", "dare_ties", "magnitude_prune"]


class PeftAdaptersOptions(PluginConfig):
    """Options of PEFT's add_weighted_adapter."""

    combination_type: Combination = Field(
        "cat", description="How the adapters combine. cat (exact, ranks add up) and svd (exact when svd_rank >= the "
        "sum of the ranks) give the weighted sum of the updates; the others mix A and B separately and need equal "
        "ranks.",
    )
    svd_rank: int | None = Field(None, ge=1, description="Rank of an svd result; default: the largest input rank.")
    svd_clamp: float | None = Field(None, gt=0, le=1, description="svd: quantile at which to clamp U and V.")
    density: float | None = Field(
        None, gt=0, le=1, description="Fraction kept; required by ties, dare_linear, dare_ties and magnitude_prune."
    )
    majority_sign_method: Literal["total", "frequency"] = Field(
        "total", description="ties and dare_ties: elect signs from the summed values or from the sign counts."
    )
    seed: int | None = Field(None, ge=0, examples=[0], description="Seed for dare_*; none draws one (recorded in ftsdk.json).")

    @model_validator(mode="after")
    def _consistent(self) -> PeftAdaptersOptions:
        if self.combination_type in PRUNING and self.density is None:
            raise ValueError(f"combination_type {self.combination_type} needs a density")
        if self.combination_type not in PRUNING and self.density is not None:
            raise ValueError(f"density has no effect with combination_type {self.combination_type}")
        if self.combination_type != "svd" and (self.svd_rank is not None or self.svd_clamp is not None):
            raise ValueError("svd_rank and svd_clamp apply to combination_type svd only")
        return self


class PeftAdapterInput(PluginConfig):
    """Options of each adapter."""

    weight: Annotated[Setting, SettingOf()] = Field(
        1.0, description="Factor of this adapter's update (may be negative): a number, or with combination_type cat "
        "or svd also a per-layer gradient [0, 0.5, 1] or filtered entries [{filter: mlp, value: 0.7}, {value: 1}].",
    )


@dataclass(frozen=True)
class AdapterFolder:
    """One input adapter and its adapter_config.json."""

    source: MergeInput
    path: Path
    config: dict[str, Any]

    @property
    def rank(self) -> int:
        """The largest rank of the adapter (what PEFT compares)."""
        return max([self.config["r"], *(self.config.get("rank_pattern") or {}).values()])


def open_adapter(source: MergeInput) -> AdapterFolder:
    """Read an input adapter's config; refuse what add_weighted_adapter cannot combine."""
    path = Path(source.reference).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise ModelLoadError(f"{source.label} is not a PEFT adapter folder (no adapter_config.json)",
                             hint="peft_adapters merges LoRA adapters; merge full models with linear, ties, ...")
    config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    reasons = {
        "it is not a LoRA adapter": config.get("peft_type") != "LORA",
        "DoRA magnitudes cannot be combined": config.get("use_dora"),
        "it targets parameters (target_parameters)": config.get("target_parameters"),
    }
    for reason, applies in reasons.items():
        if applies:
            raise ConfigError(f"{source.label} cannot be merged with add_weighted_adapter: {reason}")
    return AdapterFolder(source, path, config)


class PeftAdaptersMerger(Merger):
    """Combine LoRA adapters trained on one base into one adapter."""

    name = "peft_adapters"
    summary = "LoRA adapters of one base combined with PEFT add_weighted_adapter (cat and svd are exact)"
    Config = PeftAdaptersOptions
    InputParams = PeftAdapterInput
    merges: ClassVar[str] = "adapters"
    requires = ("peft", "transformers", "torch")

    config: PeftAdaptersOptions

    def prepare(self, request: MergeRequest) -> AdapterMerge:
        adapters = [open_adapter(source) for source in request.others]
        if not adapters:
            raise ConfigError("peft_adapters needs at least one adapter under models")
        combination = self.config.combination_type
        varying = [a.source.label for a in adapters if isinstance(a.source.params.weight, list)]  # type: ignore[attr-defined]
        if varying and combination not in ("cat", "svd"):
            raise ConfigError(f"{', '.join(varying)}: a per-layer weight needs combination_type cat or svd, not "
                              f"{combination}", hint="use one number per adapter, or combination_type cat")
        if combination in EQUAL_RANKS and len({a.rank for a in adapters}) > 1:
            ranks = ", ".join(f"{a.source.label} r={a.rank}" for a in adapters)
            raise ConfigError(f"combination_type {combination} needs adapters of equal rank: {ranks}",
                              hint="use cat or svd for adapters of different ranks")
        if len({type(a.config["target_modules"]).__name__ for a in adapters}) > 1:
            raise ConfigError("the adapters mix target_modules given as a list and as a pattern",
                              hint="PEFT can only combine adapters whose target_modules are of one kind")
        if sum(bool(a.config.get("modules_to_save")) for a in adapters) > 1:
            raise ConfigError("more than one adapter has modules_to_save; those layers cannot be merged")
        base = self._base(request, adapters)
        seed = None
        if combination.startswith("dare"):
            seed = self.config.seed if self.config.seed is not None else secrets.randbits(31)
        return AdapterMerge(self.config, request, adapters, base, seed)

    def _base(self, request: MergeRequest, adapters: list[AdapterFolder]) -> Path:
        from ftsdk.models.loading import resolve

        if request.base is not None:
            reference = request.base.reference
        else:
            named = {a.config.get("base_model_name_or_path") for a in adapters}
            if len(named) != 1 or None in named:
                listing = ", ".join(f"{a.source.label}: {a.config.get('base_model_name_or_path')}" for a in adapters)
                raise ConfigError(f"the adapters do not name one base model ({listing})",
                                  hint="set base_model to the model they were all trained on")
            reference = str(named.pop())
        resolved = resolve(reference)
        if resolved.origin == "hub":
            raise ModelLoadError(f"base model {reference} is not a local folder",
                                 hint="download it first, or set base_model to a local folder")
        return Path(resolved.source)


def scale_updates(peft_model: Any, names: list[str], weights: list[Setting], num_layers: int) -> None:
    """Multiply each input's LoRA B, module by module, by its weight there (None: no filter matched, so 1).

    cat and svd combine the weighted updates ``sum(w_i * B_i A_i)`` linearly in each weight, so scaling B_i
    and combining with weight 1 gives exactly the per-layer weighted sum.
    """
    import torch

    with torch.no_grad():
        for module_name, module in peft_model.named_modules():
            t = layer_position(module_name, num_layers)
            for attribute in ("lora_B", "lora_embedding_B"):
                factors = getattr(module, attribute, None)
                for name, weight in zip(names, weights) if factors is not None else ():
                    if name in factors:
                        value = evaluate(weight, module_name, t)
                        tensor = factors[name]
                        (tensor.weight if hasattr(tensor, "weight") else tensor).mul_(1.0 if value is None else value)


class AdapterMerge:
    """A checked adapter merge, ready to run."""

    produces = "adapter"

    def __init__(self, options: PeftAdaptersOptions, request: MergeRequest, adapters: list[AdapterFolder],
                 base: Path, seed: int | None) -> None:
        self.options, self.request, self.adapters, self.base, self.seed = options, request, adapters, base, seed

    def run(self, folder: Path) -> dict[str, Any]:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        from ftsdk.models.peft_wrapping import without_unused_backends

        dtype = getattr(torch, self.request.dtype or "float32")
        model = AutoModelForCausalLM.from_pretrained(self.base, dtype=dtype)
        names = [f"input{i}" for i in range(len(self.adapters))]
        with without_unused_backends(model):
            peft_model = PeftModel.from_pretrained(model, self.adapters[0].path, adapter_name=names[0])
            for name, adapter in zip(names[1:], self.adapters[1:]):
                peft_model.load_adapter(adapter.path, adapter_name=name)
        weights = [a.source.params.weight for a in self.adapters]  # type: ignore[attr-defined]
        if any(isinstance(w, list) for w in weights):  # per-layer weights: scale each update, combine with weight 1
            scale_updates(peft_model, names, weights, model.config.num_hidden_layers)
            weights = [1.0] * len(names)
        with torch.random.fork_rng(devices=[]):
            if self.seed is not None:
                torch.manual_seed(self.seed)
            peft_model.add_weighted_adapter(
                names, weights, "default", combination_type=self.options.combination_type,
                svd_rank=self.options.svd_rank, svd_clamp=self.options.svd_clamp, density=self.options.density,
                majority_sign_method=self.options.majority_sign_method,
            )
        peft_model.set_adapter("default")
        for name in names:
            peft_model.delete_adapter(name)
        merged = cast("LoraConfig", peft_model.peft_config["default"])
        merged.use_rslora = False  # the inputs' scalings are already in A (PEFT keeps rsLoRA's sqrt(r) otherwise)
        merged.base_model_name_or_path = self.request.base.reference if self.request.base else str(self.base)
        peft_model.save_pretrained(str(folder))
        tokenizer = self._tokenizer_folder()
        for name in TOKENIZER_FILES:
            if (tokenizer / name).is_file():
                shutil.copy2(tokenizer / name, folder / name)
        return {
            "inputs": [self._describe(a) for a in self.adapters] + [self._describe_base()],
            "files": sorted(p.name for p in folder.iterdir()),
            "seed": self.seed,
            "rank": merged.r,
        }

    def _tokenizer_folder(self) -> Path:
        """The tokenizer source when it is an adapter saved with its tokenizer, else the base model."""
        chosen = next((a.path for a in self.adapters if a.source is self.request.tokenizer_source), None)
        return chosen if chosen is not None and (chosen / "tokenizer_config.json").is_file() else self.base

    @staticmethod
    def _describe(adapter: AdapterFolder) -> dict[str, Any]:
        weights = adapter.path / "adapter_model.safetensors"
        return {
            "role": "adapter",
            "reference": adapter.source.reference,
            "path": str(adapter.path.resolve()),
            "parameters": adapter.source.params.model_dump(mode="json"),
            "rank": adapter.rank,
            "weights_sha256": sha256_file(weights) if weights.is_file() else None,
        }

    def _describe_base(self) -> dict[str, Any]:
        files = sorted(self.base.glob("*.safetensors"))
        combined = hashlib.sha256("".join(f"{f.name}:{sha256_file(f)}\n" for f in files).encode()).hexdigest()
        return {"role": "base", "reference": str(self.base), "path": str(self.base.resolve()), "parameters": {},
                "weights_sha256": combined}


@hookimpl
def register_mergers(register):
    register(PeftAdaptersMerger)
