"""StrictModel: a field that takes true/false or named values takes exactly those, never truthy text or numbers."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import ValidationError

from ftsdk.plugin.settings import StrictModel


class Options(StrictModel):
    mode: Literal["auto"] | bool = "auto"


@pytest.mark.parametrize("value", ["auto", True, False])
def test_a_named_value_or_a_bool_is_taken(value):
    assert Options(mode=value).mode == value


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, "Auto"])
def test_truthy_text_and_numbers_are_refused(value):
    with pytest.raises(ValidationError):
        Options(mode=value)
