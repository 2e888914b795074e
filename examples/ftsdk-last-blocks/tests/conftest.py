pytest_plugins = ["ftsdk.testing.fixtures"]

import pytest  # noqa: E402

import ftsdk_last_blocks  # noqa: E402
from ftsdk import plugins  # noqa: E402


@pytest.fixture
def registered():
    """The plugin active in ftsdk: found through its entry point if installed, else registered in-process."""
    if ("adapter", "last-blocks") in plugins.registry().plugins:
        yield plugins.get("adapter", "last-blocks")
        return
    name = plugins.register(ftsdk_last_blocks, name="last-blocks-under-test")
    try:
        yield plugins.get("adapter", "last-blocks")
    finally:
        plugins.unregister(name=name)
