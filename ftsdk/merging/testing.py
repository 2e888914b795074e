"""Fine-tunes of a tiny model written on the fly, for testing mergers (ftsdk's own and third parties').

    base = build_tiny_model(tmp / "base")                 # ftsdk.testing.tiny
    tuned = make_finetunes(base, tmp)                     # {"dense": ..., "sparse": ..., "conflict": ...}
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

Change = Callable[[str, "torch.Tensor"], "torch.Tensor"]


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder (all its safetensors shards)."""
    from ftsdk.merging.safetensors_io import Checkpoint

    checkpoint = Checkpoint(Path(folder))
    try:
        return {name: checkpoint.read(name) for name in checkpoint.tensors}
    finally:
        checkpoint.close()


def write_weights(folder: Path, tensors: dict[str, torch.Tensor], shards: int = 1) -> None:
    """Write tensors with safetensors, split into ``shards`` files with an index when more than one."""
    from safetensors.torch import save_file

    names = sorted(tensors)
    if shards == 1:
        save_file({n: tensors[n].contiguous() for n in names}, folder / "model.safetensors", metadata={"format": "pt"})
        return
    weight_map: dict[str, str] = {}
    for index in range(shards):
        file = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        part = names[index::shards]
        save_file({n: tensors[n].contiguous() for n in part}, folder / file, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, file)
    index_file = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index_file), encoding="utf-8")


def variant(base: Path, folder: Path, change: Change, *, shards: int = 1) -> Path:
    """A copy of the model folder ``base`` (config, tokenizer) whose weights are ``change(name, tensor)``."""
    folder = Path(folder)
    shutil.copytree(base, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.safetensors.index.json"))
    weights = read_weights(base)
    write_weights(folder, {name: change(name, tensor) for name, tensor in weights.items()}, shards)
    return folder


def make_finetunes(base: Path, root: Path, seed: int = 0) -> dict[str, Path]:
    """Three fine-tunes of ``base`` with different task vectors, stored in ``base``'s dtypes.

    ``dense``: small changes everywhere; ``sparse``: larger changes on about 10% of the entries;
    ``conflict``: mostly the opposite of ``dense`` (sign conflicts for TIES), plus noise. The changes are
    drawn and added in float32, then rounded once to each tensor's own dtype: a bfloat16 base gives pure
    bfloat16 fine-tunes (the draws, and so the float32 fine-tunes, do not depend on the base's dtype).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    dense = {name: 0.01 * torch.randn(t.shape, generator=generator) for name, t in read_weights(base).items()}

    def changed(change: Change) -> Change:
        def apply(name: str, tensor: torch.Tensor) -> torch.Tensor:
            if not tensor.is_floating_point():
                return tensor
            return change(name, tensor.to(torch.float32)).to(tensor.dtype)

        return apply

    def sparse(name: str, tensor: torch.Tensor) -> torch.Tensor:
        keep = torch.rand(tensor.shape, generator=generator) < 0.1
        return tensor + 0.02 * torch.randn(tensor.shape, generator=generator) * keep

    def conflict(name: str, tensor: torch.Tensor) -> torch.Tensor:
        return tensor - 0.8 * dense[name] + 0.003 * torch.randn(tensor.shape, generator=generator)

    return {
        "dense": variant(base, root / "dense", changed(lambda name, t: t + dense[name])),
        "sparse": variant(base, root / "sparse", changed(sparse)),
        "conflict": variant(base, root / "conflict", changed(conflict)),
    }
