"""TRL's SFTTrainer with replay rows in its batches and, when asked, a KL pull toward the base model on them."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from trl import SFTTrainer

from ftsdk.training.replay import REPLAY_COLUMN, ReplayCollator, kl_to_base


class ReplaySFTTrainer(SFTTrainer):
    """Keeps each row's replay flag through TRL's collator; adds ``kl_weight`` x :func:`kl_to_base` on the replay
    rows of each training batch and logs it as ``kl_to_base``.

    The base is the same PEFT model with its adapter disabled; a model without adapter (full fine-tuning) gets a
    frozen copy taken before the first step.
    """

    def __init__(self, *args: Any, kl_weight: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kl_weight = kl_weight
        self.data_collator = ReplayCollator(self.data_collator)
        self._frozen_base = None
        if kl_weight and not _has_adapter(self.model):
            self._frozen_base = copy.deepcopy(self.model).eval().requires_grad_(False)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if REPLAY_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, REPLAY_COLUMN]

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        rows = inputs.pop(REPLAY_COLUMN, None)
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        if not self.kl_weight or not model.training or rows is None or not rows.any():
            return result
        kl = self.replay_kl(model, inputs, rows)
        self._metrics["train"]["kl_to_base"].append(kl.item())
        # like TRL's MoE aux loss: a per-micro-batch mean, so spread it over the accumulation steps
        steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
        extra = self.kl_weight * kl / steps
        return (result[0] + extra, result[1]) if return_outputs else result + extra

    def replay_kl(self, model: Any, inputs: dict[str, Any], rows: Any) -> Any:
        """KL(base || tuned) on the trained tokens of the batch's replay rows (with gradients for the tuned side)."""
        sub = {key: inputs[key][rows] for key in ("input_ids", "attention_mask") if key in inputs}
        logits = model(**sub, use_cache=False).logits
        with torch.no_grad(), self._base(model) as base:
            base_logits = base(**sub, use_cache=False).logits
        return kl_to_base(logits, base_logits, inputs["labels"][rows])

    @contextlib.contextmanager
    def _base(self, model: Any) -> Iterator[Any]:
        if self._frozen_base is not None:
            yield self._frozen_base
            return
        with self.accelerator.unwrap_model(model).disable_adapter():
            yield model


def _has_adapter(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)
