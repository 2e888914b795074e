"""Write a plugin package from the templates of its kind: pyproject with the ``ftsdk`` entry point, the
plugin module (a class with a typed Config, registered by a ``@hookimpl``), a README and kit-based tests."""

from __future__ import annotations

import re
import string
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from ftsdk import __version__
from ftsdk.plugin.errors import ConfigError, OutputExistsError
from ftsdk.plugin.hookspecs import HOOK_OF_KIND

#: a plugin name: lowercase words of letters and digits joined by "-" or "_", starting with a letter
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
#: template file -> path in the package (``{module}`` is filled in)
LAYOUT = {
    "common/pyproject.toml.tmpl": "pyproject.toml",
    "common/README.md.tmpl": "README.md",
    "common/conftest.py.tmpl": "tests/conftest.py",
    "{kind}/plugin.py.tmpl": "{module}/__init__.py",
    "{kind}/test_plugin.py.tmpl": "tests/test_{module}.py",
}


@dataclass(frozen=True)
class PluginNames:
    """Every name derived from the plugin's name, as the templates use them."""

    name: str  # the plugin's name in ftsdk and its entry point: my-adapter
    kind: str  # adapter
    dist: str  # the distribution: ftsdk-my-adapter
    module: str  # the import name: ftsdk_my_adapter
    cls: str  # the plugin class: MyAdapter
    ftsdk_version: str


def plugin_names(name: str, kind: str) -> PluginNames:
    """Check ``name`` and ``kind`` and derive the package, module and class names."""
    if kind not in HOOK_OF_KIND:
        raise ConfigError(f"unknown plugin kind '{kind}'", hint=f"kinds are: {', '.join(HOOK_OF_KIND)}")
    if name.startswith(("ftsdk-", "ftsdk_")):
        raise ConfigError(f"plugin name '{name}' starts with 'ftsdk'",
                          hint=f"give the plugin's own name ('{name[6:]}'): the package is called ftsdk-NAME")
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"'{name}' is not a valid plugin name",
            hint="use lowercase letters and digits, words joined by '-' or '_', starting with a letter "
            "(e.g. my-adapter)",
        )
    words = re.split(r"[-_]", name)
    cls = "".join(word.capitalize() for word in words)
    if not cls.endswith(kind.capitalize()):
        cls += kind.capitalize()
    module = "ftsdk_" + "_".join(words)
    return PluginNames(name, kind, "ftsdk-" + "-".join(words), module, cls, __version__)


def _check_free(names: PluginNames) -> None:
    from ftsdk import plugins

    info = plugins.registry().plugins.get((names.kind, names.name))
    if info is not None:
        raise ConfigError(f"{names.kind} '{names.name}' already exists (from {info.distribution})",
                          hint="choose another name: two plugins of one kind cannot share a name")


def new_plugin(name: str, kind: str, directory: str | Path = ".") -> Path:
    """Write the package ``ftsdk-NAME/`` for a plugin of ``kind`` under ``directory``; return its folder.

    The package installs with pip, registers through the ``ftsdk`` entry-point group, and its tests (run with
    ``pytest`` in the folder) pass as generated: they run ftsdk's conformance kit on a tiny model.
    """
    names = plugin_names(name, kind)
    _check_free(names)
    target = Path(directory) / names.dist
    if target.exists():
        raise OutputExistsError(f"{target} already exists", hint="choose another name or directory, or remove it")
    templates = resources.files("ftsdk.scaffold") / "templates"
    values = asdict(names)
    usage = (templates / kind / "usage.md.tmpl").read_text(encoding="utf-8")
    values["usage"] = string.Template(usage).substitute(values).strip()
    rendered = {}
    for template, path in LAYOUT.items():
        source = templates / template.format(kind=kind)
        rendered[path.format(module=names.module)] = string.Template(source.read_text(encoding="utf-8")).substitute(
            values
        )
    for path, text in rendered.items():
        file = target / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text, encoding="utf-8")
    return target
