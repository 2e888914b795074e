"""The Trainer callback that seals each checkpoint once every process has written its part, then rotates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ftsdk.training.checkpoints import rotate, seal


class SealCheckpoints(TrainerCallback):
    """Seal ``checkpoint-N`` after the Trainer saved it; keep the newest ``keep`` complete ones and the best.

    The Trainer's own rotation is off (``save_total_limit=None``): it could delete the last sealed
    checkpoint before the new one is sealed.
    """

    def __init__(self, run_fingerprint: dict[str, Any], keep: int) -> None:
        self.run_fingerprint = run_fingerprint
        self.keep = keep

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every process has written its files (shards, RNG state) into the folder
        if state.is_world_process_zero:
            root = Path(args.output_dir)
            seal(root / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}", state.global_step, self.run_fingerprint)
            best = Path(state.best_model_checkpoint) if state.best_model_checkpoint else None
            rotate(root, self.keep, protect=best)  # keep-best restores that one at the end
