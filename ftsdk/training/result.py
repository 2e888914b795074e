"""What :meth:`ftsdk.Tuner.fit` returns: the run's figures, and the next steps (generate, evaluate, merge, reload)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftsdk.data.formats import Conversation

if TYPE_CHECKING:
    from ftsdk.evaluation.results import Comparison
    from ftsdk.training.tuner import Tuner

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
        from ftsdk.training.tuner import Tuner

        return Tuner.load(self.output_dir, trust_remote_code=trust_remote_code)

    def _tuned(self) -> Tuner:
        if self.tuner is None or self.tuner.model is None or self.tuner.output_dir != self.output_dir:
            self.tuner = self.reload()
        return self.tuner
