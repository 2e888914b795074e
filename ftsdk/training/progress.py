"""A training progress bar that shows the loss, and the summary printed when training ends."""

from __future__ import annotations

import time
from typing import Any

from tqdm.auto import tqdm
from transformers import TrainerCallback


class LossProgressBar(TrainerCallback):
    """One tqdm bar over optimizer steps, with the latest train and eval loss in its postfix."""

    def __init__(self, description: str = "training") -> None:
        self.description = description
        self.bar: tqdm | None = None
        self.postfix: dict[str, str] = {}
        self.started = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.perf_counter()
        self.bar = tqdm(total=state.max_steps, desc=self.description, unit="step", dynamic_ncols=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.bar is None or not logs:
            return
        for key, label in (("loss", "loss"), ("eval_loss", "eval"), ("reward", "reward"), ("learning_rate", "lr")):
            if key in logs:
                self.postfix[label] = f"{logs[key]:.3g}" if label == "lr" else f"{logs[key]:.4f}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started
