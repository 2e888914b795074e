"""ftsdk's conformance kit on the last-blocks adapter: the contract every plugin keeps, in a few lines."""

from __future__ import annotations

from pathlib import Path

from ftsdk_last_blocks import LastBlocksAdapter

from ftsdk.testing import conformance

PACKAGE = Path(__file__).resolve().parents[1]


def test_config_is_typed_and_documented():
    conformance.check_config(LastBlocksAdapter)


def test_found_through_its_entry_point(registered):
    conformance.check_registration("last-blocks", "adapter", pyproject=PACKAGE / "pyproject.toml")


def test_bad_options_are_typed_errors():
    conformance.check_typed_errors(LastBlocksAdapter)


def test_import_is_light():
    conformance.check_light_import("ftsdk_last_blocks", path=[PACKAGE])


def test_trains_and_its_output_reloads(tiny_model_dir, tmp_path):
    result = conformance.check_adapter_trains(LastBlocksAdapter, {"blocks": 1}, tmp_path, model_dir=tiny_model_dir)
    assert result.manifest["kind"] == "model"
