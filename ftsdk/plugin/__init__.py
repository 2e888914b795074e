"""The ground floor: the contract between ftsdk's core and every plugin, built-in or third-party.

It imports only the standard library, pydantic and pluggy: the kinds of plugin and their options base
(:mod:`.kinds`, :mod:`.settings`, :mod:`.per_layer`), the jobs the core hands them (:mod:`.jobs`), the hooks
that register them and the registry that finds them (:mod:`.hookspecs`, :mod:`.registry`), and the errors
(:mod:`.errors`). Plugin authors import from :mod:`ftsdk`, which re-exports this and the helpers built on it.
"""
