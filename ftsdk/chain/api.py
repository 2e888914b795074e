"""``Chain``: the Python face of a chain, the same model as the YAML file (:class:`ChainConfig`).

    Chain(adapter="runs/quickstart").merge_adapter("merged") \\
        .quantize("gguf", "q4", config={"type": "q4_k_m"}).evaluate().export().run("build/chain")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ftsdk.chain.config import ChainConfig, load_chain_config, validate_step, with_overrides
from ftsdk.chain.plan import Plan, make_plan
from ftsdk.chain.runner import ChainResult, run_plan
from ftsdk.plugin.settings import validate_config
from ftsdk.quantizing.calibration import TextsConfig


class Chain:
    """Steps from a tuned model to shippable artifacts. Each method adds a step and returns the chain.

    Keyword arguments name the chain's inputs (model folders, adapter folders, aliases): later steps refer to
    them, and to earlier steps, by name. Nothing runs until :meth:`run`, which first validates every step.
    """

    def __init__(self, workdir: str | Path | None = None, *, name: str | None = None, **inputs: str | Path) -> None:
        self.config = validate_config(ChainConfig, {"name": name, "workdir": Path(workdir) if workdir else None,
                                                    "inputs": {k: str(v) for k, v in inputs.items()}}, where="chain")

    @classmethod
    def from_config(cls, config: ChainConfig | Mapping[str, Any]) -> Chain:
        """A chain from a :class:`ChainConfig` or its mapping (relative paths start at the current folder)."""
        chain = cls()
        chain.config = load_chain_config(config)
        return chain

    @classmethod
    def from_yaml(cls, path: str | Path, *, inputs: Mapping[str, str | Path] | None = None,
                  workdir: str | Path | None = None) -> Chain:
        """A chain from its YAML file (relative paths start at the file); ``inputs``/``workdir`` override it."""
        chain = cls()
        chain.config = with_overrides(load_chain_config(path), inputs=inputs, workdir=workdir)
        return chain

    def to_yaml(self) -> str:
        """The chain as YAML, the same file ``ftsdk chain`` runs."""
        import yaml

        return yaml.safe_dump(self.config.model_dump(mode="json", exclude_defaults=True), sort_keys=False)

    def _add(self, **fields: Any) -> Chain:
        clean = {k: v for k, v in fields.items() if v is not None}
        self.config.steps = [*self.config.steps, validate_step(clean, len(self.config.steps))]
        return self

    def train(self, name: str, recipe: str | Path | Mapping[str, Any], *, model: str | None = None,
              output: str | Path | None = None) -> Chain:
        """Train with a recipe (file or mapping; its output_dir is the step's output); ``model`` trains a chain model."""
        return self._add(step="train", name=name, recipe=recipe if isinstance(recipe, Mapping) else Path(recipe),
                         model=model, output=output)

    def merge_adapter(self, name: str = "merged", *, source: str | None = None, base_model: str | None = None,
                      dtype: str | None = None, output: str | Path | None = None) -> Chain:
        """Merge an adapter (default: the latest) into its base (default: the input 'base', else its own record)."""
        return self._add(step="merge_adapter", name=name, source=source, base_model=base_model, dtype=dtype,
                         output=output)

    def merge(self, name: str, config: str | Path | Mapping[str, Any], *, output: str | Path | None = None) -> Chain:
        """Merge models with a merger plugin; the merge config's models may name chain inputs and steps."""
        return self._add(step="merge", name=name, config=config if isinstance(config, Mapping) else Path(config),
                         output=output)

    def quantize(self, method: str, name: str | None = None, *, source: str | None = None,
                 config: Mapping[str, Any] | None = None,
                 calibration: TextsConfig | Mapping[str, Any] | str | Path | None = None,
                 output: str | Path | None = None) -> Chain:
        """Quantize a model (default: the latest one ``method`` takes) with a quantizer plugin."""
        if isinstance(calibration, (str, Path)):
            calibration = {"data": calibration}
        return self._add(step="quantize", method=method, name=name, source=source, config=config,
                         calibration=calibration, output=output)

    def evaluate(self, name: str = "evaluation", *, models: Iterable[str] | None = None, reference: str | None = None,
                 texts: TextsConfig | Mapping[str, Any] | str | Path | None = None,
                 output: str | Path | None = None) -> Chain:
        """Perplexity of ``models`` (default: every model made so far) against ``reference`` (default: the first)."""
        if isinstance(texts, (str, Path)):
            texts = {"data": texts, "samples": 64}
        return self._add(step="evaluate", name=name, models=list(models) if models is not None else None,
                         reference=reference, texts=validate_config(TextsConfig, texts, where="texts") if texts
                         is not None else None, output=output)

    def export(self, name: str = "dist", *, artifacts: Iterable[str] | None = None,
               output: str | Path | None = None) -> Chain:
        """Copy ``artifacts`` (default: every model made) into one folder with a manifest and usage notes."""
        return self._add(step="export", name=name, artifacts=list(artifacts) if artifacts is not None else None,
                         output=output)

    def plan(self, workdir: str | Path | None = None, *, force: bool | Iterable[str] = False) -> Plan:
        """Validate every step (plugins, configs, inputs, outputs) without running any; raise one ConfigError."""
        return make_plan(self.config, workdir, force)

    def run(self, workdir: str | Path | None = None, *, force: bool | Iterable[str] = False,
            resume: bool = False) -> ChainResult:
        """Validate, then run every step that is not up to date.

        ``force``: True, or step names, to rebuild even if up to date. ``resume``: continue the failed run
        recorded in the workdir (an error if the last run did not fail).
        """
        return run_plan(self.plan(workdir, force=force), resume=resume)
