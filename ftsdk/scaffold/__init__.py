"""``ftsdk plugin new``: scaffold an installable third-party plugin package.

    from ftsdk.scaffold import new_plugin
    new_plugin("my-adapter", "adapter", "plugins/")   # writes plugins/ftsdk-my-adapter/
"""

from ftsdk.scaffold.generator import PluginNames, new_plugin, plugin_names

__all__ = ["PluginNames", "new_plugin", "plugin_names"]
