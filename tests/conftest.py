import pytest

pytest_plugins = ["ftsdk.testing.fixtures"]


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if anything resolves a model: errors must come before that."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the error")

    monkeypatch.setattr("ftsdk.models.loading.resolve", refuse)  # every caller looks it up at call time
