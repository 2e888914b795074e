"""``ftsdk merge`` and ``ftsdk merge-adapter``: several models into one, an adapter into its base."""

from __future__ import annotations

import argparse
import json


def add_commands(commands: argparse._SubParsersAction) -> None:
    merging = commands.add_parser("merge", help="merge models or LoRA adapters from a YAML config (mergekit's work)")
    merging.add_argument("config", help="path of the merge config (see examples/merges/)")
    merging.add_argument("--output", help="override the config's output folder")
    merging.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    merging.set_defaults(run=_cmd_merge)

    unmerged = commands.add_parser("merge-adapter", help="merge a trained adapter into its base: a plain model folder")
    unmerged.add_argument("adapter_dir", help="the adapter folder (a run's output_dir or any PEFT adapter folder)")
    unmerged.add_argument("output_dir", help="where the merged model goes")
    unmerged.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                          help="precision of the merged model (auto: float32 on CPU)")
    unmerged.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where to merge (%(default)s)")
    unmerged.add_argument("--base-weights", default="as_trained", choices=["as_trained", "original"],
                          help="QLoRA: merge into the 4-bit weights dequantized (as_trained) or the unquantized checkpoint")
    unmerged.add_argument("--base-model", help="load the base from here instead of the folder or hub id the adapter names")
    unmerged.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    unmerged.add_argument("--trust-remote-code", action="store_true",
                          help="let the base model run its own Python code (auto_map); only for code you have read "
                          "(what the adapter folder records never allows it)")
    unmerged.set_defaults(run=_cmd_merge_adapter)


def _cmd_merge(args: argparse.Namespace) -> int:
    from ftsdk.merging import merge

    output = merge(args.config, output=args.output, overwrite=True if args.overwrite else None)
    print(json.dumps({"output": str(output)}))
    return 0


def _cmd_merge_adapter(args: argparse.Namespace) -> int:
    from ftsdk.merging.adapter import merge_adapter

    output = merge_adapter(
        args.adapter_dir,
        args.output_dir,
        dtype=args.dtype,
        device=args.device,
        base_weights=args.base_weights,
        base_model=args.base_model,
        overwrite=args.overwrite,
        trust_remote_code=args.trust_remote_code,
    )
    print(json.dumps({"output_dir": str(output)}))
    return 0
