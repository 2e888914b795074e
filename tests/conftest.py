pytest_plugins = ["ftsdk.testing.fixtures"]
