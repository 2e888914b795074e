"""Texts shipped with ftsdk: ``passages.jsonl``, varied short English prose, code and dialogue written for ftsdk.

Quantizers calibrate on them and chains score perplexity on them when no data file is given.
"""
