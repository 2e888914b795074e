"""Chains: the scripted path from a tuned model to shippable artifacts.

Modules: :mod:`~ftsdk.chain.config` (the YAML/Python model), :mod:`~ftsdk.chain.steps` (each step's checks and
run), :mod:`~ftsdk.chain.plan` (validating every step before any runs), :mod:`~ftsdk.chain.fingerprints`
(skipping what is up to date), :mod:`~ftsdk.chain.runner` (running, resuming, the artifacts table),
:mod:`~ftsdk.chain.evaluate` and :mod:`~ftsdk.chain.export` (those two steps), :mod:`~ftsdk.chain.api` (``Chain``).
Nothing heavy is imported here.
"""

from ftsdk.chain.api import Chain
from ftsdk.chain.config import ChainConfig
from ftsdk.chain.runner import ChainResult

__all__ = ["Chain", "ChainConfig", "ChainResult"]
