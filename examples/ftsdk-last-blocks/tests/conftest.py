import ftsdk_last_blocks
import pytest

from ftsdk import plugins
from ftsdk.testing import conformance

pytest_plugins = ["ftsdk.testing.fixtures"]


@pytest.fixture
def registered():
    """The plugin active in ftsdk: found through its entry point if installed, else registered in-process."""
    with conformance.registered(ftsdk_last_blocks, name="last-blocks-under-test"):
        yield plugins.get("adapter", "last-blocks")
