"""Chains: the scripted path from a tuned model to shippable artifacts."""
