"""Option fields shared by the built-in mergers (mergekit's names, meanings and defaults)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ftsdk import Setting, SettingOf

#: an input's weight: required (None means "not given"); any sign; may vary by layer or tensor name
Weight = Annotated[Setting | None, SettingOf()]
#: a fraction in [0, 1] that may vary by layer or tensor name
Fraction = Annotated[Setting, SettingOf(ge=0, le=1)]
#: the fraction of a task vector kept, in (0, 1]: 0 would drop the whole vector (weight 0 says that plainly)
Density = Annotated[Setting, SettingOf(gt=0, le=1)]

WEIGHT = Field(
    None,
    examples=[1.0],
    description="Required. How much this input counts: a number, a per-layer gradient such as [0, 0.5, 1], "
    "or filtered entries such as [{filter: mlp, value: 0.7}, {value: 0.3}]. Any sign: a negative weight "
    "extrapolates away from a model (linear) or subtracts its task vector (task arithmetic).",
)
