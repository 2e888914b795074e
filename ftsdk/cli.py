"""The ``ftsdk`` command. Thin: it parses arguments and calls the API; heavy imports wait for the command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from ftsdk import __version__
from ftsdk.errors import FtsdkError
from ftsdk.hookspecs import HOOK_OF_KIND


def _cmd_plugins(args: argparse.Namespace) -> int:
    from ftsdk import plugins

    rows = [info.as_dict() for info in plugins.list_plugins()] + [b.as_dict() for b in plugins.broken()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    headers = ("kind", "name", "distribution", "version", "available", "summary")
    table = [[str(row[h]) if h != "available" else ("yes" if row[h] else "NO") for h in headers] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in table)) if table else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for row, original in zip(table, rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if "error" in original:
            print(f"    error: {original['error']}")
    for info in plugins.list_plugins():
        if not info.available:
            print(f"note: {info.kind} '{info.name}' needs {', '.join(info.missing)}: "
                  f"{info.cls.install_hint or 'pip install ' + ' '.join(info.missing)}")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from ftsdk import plugins

    info = plugins.get(args.kind, args.name)
    print(json.dumps(info.cls.Config.model_json_schema(), indent=2))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ftsdk.config import Recipe
    from ftsdk.tuner import Tuner

    recipe = Recipe.from_yaml(args.recipe)
    tuner = Tuner.from_recipe(recipe)  # validates plugins and their configs before any loading
    result = tuner.fit(
        recipe.data.train,
        eval_data=recipe.data.eval,
        output_dir=args.output_dir or recipe.output_dir,
        overwrite=args.overwrite or recipe.overwrite,
    )
    print(json.dumps({"output_dir": str(result.output_dir), "metrics": result.metrics}, indent=2))
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from ftsdk.merging import merge

    output = merge(args.config, output=args.output, overwrite=True if args.overwrite else None)
    print(json.dumps({"output": str(output)}))
    return 0


def _tokenizer_for(model: str | None) -> object:
    if model is None:
        return None
    from ftsdk.config import ModelSpec
    from ftsdk.models import load_tokenizer, resolve

    spec = ModelSpec(name=model)
    return load_tokenizer(resolve(spec), spec)


def _cmd_data_check(args: argparse.Namespace) -> int:
    from ftsdk.data.curate import check, report_markdown

    report = check(args.file, args.task, tokenizer=_tokenizer_for(args.model), max_length=args.max_length,
                   near_threshold=args.near_threshold)
    print(json.dumps(report.as_dict(), indent=1) if args.json else report_markdown(report))
    return 0


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from ftsdk.data.curate import prepare, report_markdown

    options = {"drop_near_duplicates": args.drop_near_duplicates, "near_threshold": args.near_threshold,
               "redact_pii": args.redact_pii, "max_length": args.max_length, "seed": args.seed,
               "drop_truncated": args.drop_truncated, "stratify": not args.no_stratify,
               "split": dict(zip(("train", "val", "test"), args.split))}
    prepared = prepare(args.file, args.out, args.task, options=options, tokenizer=_tokenizer_for(args.model),
                       overwrite=args.overwrite)
    print(report_markdown(prepared.report, prepared.removed))
    for name, path in prepared.files.items():
        print(f"{name}: {path}")
    return 0


def _add_data_commands(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="check and prepare data sets")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    for name, helptext, run in (("check", "report statistics and problems by line", _cmd_data_check),
                                ("prepare", "remove flagged rows, split, write report", _cmd_data_prepare)):
        action = actions.add_parser(name, help=helptext)
        action.add_argument("file", help="JSONL, JSON or CSV data file")
        action.add_argument("--task", default="sft", help="data task of the objective (default: %(default)s)")
        action.add_argument("--model", help="tokenizer for token statistics and --max-length (a model name)")
        action.add_argument("--max-length", type=int, help="flag (prepare: drop) rows longer than this in tokens")
        action.add_argument("--near-threshold", type=float, default=0.8, help="near-duplicate Jaccard (%(default)s)")
        action.set_defaults(run=run)
        if name == "check":
            action.add_argument("--json", action="store_true", help="print the report as JSON")
            continue
        action.add_argument("--out", required=True, help="output folder for the splits and the report")
        action.add_argument("--split", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST"))
        action.add_argument("--seed", type=int, default=42)
        action.add_argument("--drop-near-duplicates", action="store_true", help="keep one row per near-duplicate group")
        action.add_argument("--drop-truncated", action="store_true", help="drop long outputs ending mid-sentence")
        action.add_argument("--redact-pii", action="store_true", help="mask emails, phones, cards, IBANs, IPs")
        action.add_argument("--no-stratify", action="store_true", help="do not keep label proportions per split")
        action.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")


def _cmd_estimate(args: argparse.Namespace) -> int:
    from ftsdk.estimate import estimate

    result = estimate(args.recipe)
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.summary())
    return 0


def _cmd_merge_adapter(args: argparse.Namespace) -> int:
    from ftsdk.export import merge_adapter

    output = merge_adapter(
        args.adapter_dir,
        args.output_dir,
        dtype=args.dtype,
        device=args.device,
        base_weights=args.base_weights,
        base_model=args.base_model,
        overwrite=args.overwrite,
    )
    print(json.dumps({"output_dir": str(output)}))
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from ftsdk.quickstart.run import run_quickstart

    run_quickstart(model=args.model, output_dir=args.output_dir, overwrite=args.overwrite, epochs=args.epochs)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftsdk", description="Fine-tune, merge and quantize language models with plugins."
    )
    parser.add_argument("--version", action="version", version=f"ftsdk {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("plugins", help="list the installed plugins")
    listing.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    listing.set_defaults(run=_cmd_plugins)

    schema = commands.add_parser("schema", help="print a plugin config's JSON schema")
    schema.add_argument("kind", choices=list(HOOK_OF_KIND))
    schema.add_argument("name")
    schema.set_defaults(run=_cmd_schema)

    train = commands.add_parser("train", help="train from a YAML recipe")
    train.add_argument("recipe", help="path of the recipe (see examples/recipes/)")
    train.add_argument("--output-dir", help="override the recipe's output_dir")
    train.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    train.set_defaults(run=_cmd_train)

    merging = commands.add_parser("merge", help="merge models or LoRA adapters from a YAML config (mergekit's work)")
    merging.add_argument("config", help="path of the merge config (see examples/merges/)")
    merging.add_argument("--output", help="override the config's output folder")
    merging.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    merging.set_defaults(run=_cmd_merge)

    estimating = commands.add_parser(
        "estimate", help="parameters and training memory of a recipe, from the model's config alone (no weights)"
    )
    estimating.add_argument("recipe", help="path of the recipe (see examples/recipes/)")
    estimating.add_argument("--json", action="store_true", help="print JSON instead of a table")
    estimating.set_defaults(run=_cmd_estimate)

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
    unmerged.set_defaults(run=_cmd_merge_adapter)

    _add_data_commands(commands)

    quick = commands.add_parser(
        "quickstart", help="LoRA-tune the default model on the bundled ticket-routing task; compare with the base"
    )
    quick.add_argument("--model", default="smollm2-135m", help="base model (default: %(default)s)")
    quick.add_argument("--output-dir", default="runs/quickstart", help="where the adapter goes (%(default)s)")
    quick.add_argument("--epochs", type=float, default=None, help="training epochs (default: the tuned preset)")
    quick.add_argument("--overwrite", action="store_true", help="replace an earlier quickstart output")
    quick.set_defaults(run=_cmd_quickstart)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except FtsdkError as exc:
        print(f"ftsdk: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ftsdk plugins --json | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("ftsdk: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
