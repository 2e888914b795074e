"""``ftsdk quantize``: a model folder to a smaller one (or a GGUF file) with a quantizer plugin."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ftsdk.plugin.errors import ConfigError


def add_commands(commands: argparse._SubParsersAction) -> None:
    quant = commands.add_parser("quantize", help="quantize a model with a quantizer plugin (bnb, gguf, gptq, awq...)")
    quant.add_argument("source", help="a transformers model folder, a PEFT adapter folder (where the method takes "
                       "one), an ftsdk output, or a model alias")
    quant.add_argument("--method", required=True, help="quantizer plugin name (see `ftsdk plugins`)")
    quant.add_argument("--output", required=True, help="the folder to write")
    quant.add_argument("--config", help="YAML file of the quantizer's options (see `ftsdk schema quantizer NAME`)")
    quant.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="one option, overriding --config; values are YAML (bits=8, type=q4_k_m); repeatable")
    quant.add_argument("--calibration", help="calibration data file (default: ftsdk's built-in texts)")
    quant.add_argument("--calibration-samples", type=int, help="calibration texts to draw (default 128)")
    quant.add_argument("--calibration-max-length", type=int, help="tokens per calibration text (default 512)")
    quant.add_argument("--calibration-seed", type=int, help="seed of the draw (default 0)")
    quant.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    quant.add_argument("--json", action="store_true", help="print the manifest's summary as JSON")
    quant.set_defaults(run=_cmd_quantize)


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``["a=1", "b.c=x"]`` -> ``{"a": 1, "b": {"c": "x"}}``; values are read as YAML."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r} is not of the form key=value", hint="e.g. --set bits=8")
        *parents, leaf = key.strip().split(".")
        place = options
        for part in parents:
            place = place.setdefault(part, {})
        place[leaf] = yaml.safe_load(raw) if raw.strip() else ""
    return options


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _merged(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def _cmd_quantize(args: argparse.Namespace) -> int:
    from ftsdk.safe_yaml import read_yaml_mapping

    config = read_yaml_mapping(args.config, "quantizer config") if args.config else {}
    config = _merged(config, parse_sets(args.set))
    calibration = {key: value for key, value in {
        "data": args.calibration, "samples": args.calibration_samples,
        "max_length": args.calibration_max_length, "seed": args.calibration_seed}.items() if value is not None}

    from ftsdk.artifacts import read_manifest
    from ftsdk.quantizing.run import human_size, quantize

    output = quantize(args.source, args.method, args.output, config=config, calibration=calibration,
                      overwrite=args.overwrite)
    manifest = read_manifest(output)
    if args.json:
        keys = ("kind", "quantizer", "size_bytes", "source_size_bytes", "warnings", "quality", "quantize_seconds")
        print(json.dumps({"output": str(output), **{k: manifest[k] for k in keys}}, indent=2))
        return 0
    before, after = manifest["source_size_bytes"], manifest["size_bytes"]
    options = ", ".join(f"{k}={v}" for k, v in manifest["quantizer"]["config"].items())
    print(f"quantized with {args.method} ({options}) in {manifest['quantize_seconds']:.1f}s: {output}")
    print(f"size: {human_size(before)} -> {human_size(after)} ({after / max(before, 1):.0%})")
    for name, value in manifest["quality"].items():
        print(f"quality: {name}: {value}")
    if manifest["warnings"]:
        print(f"{len(manifest['warnings'])} warning(s), also in {output}/ftsdk.json")
    return 0
