"""``ftsdk data check`` and ``ftsdk data prepare``: curate a data set before training on it."""

from __future__ import annotations

import argparse
import json


def add_commands(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="check and prepare data sets")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    for name, helptext, run in (("check", "report statistics and problems by line", _cmd_data_check),
                                ("prepare", "remove flagged rows, split, write report", _cmd_data_prepare)):
        action = actions.add_parser(name, help=helptext)
        action.add_argument("file", help="data file (JSONL, JSON, CSV, TXT, Parquet, Arrow), folder, or hf:ORG/NAME")
        action.add_argument("--task", default="sft", help="data task of the objective (default: %(default)s)")
        action.add_argument("--hub-split", help="split of an hf: data set (default: train)")
        action.add_argument("--hub-subset", help="subset (configuration) of an hf: data set")
        action.add_argument("--column", action="append", default=[], metavar="SOURCE=NAME",
                            help="rename a column to ftsdk's name, e.g. question=prompt (repeatable)")
        action.add_argument("--model", help="tokenizer for token statistics and --max-length (a model name)")
        action.add_argument("--max-length", type=int, help="flag (prepare: drop) rows longer than this in tokens")
        action.add_argument("--near-threshold", type=float, default=0.8, help="near-duplicate Jaccard (%(default)s)")
        action.set_defaults(run=run)
        if name == "check":
            action.add_argument("--json", action="store_true", help="print the report as JSON")
            action.add_argument("--stream", action="store_true",
                                help="one pass in bounded memory, for files larger than memory (no duplicate search)")
            continue
        action.add_argument("--out", required=True, help="output folder for the splits and the report")
        action.add_argument("--split", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST"))
        action.add_argument("--seed", type=int, default=42)
        action.add_argument("--drop-near-duplicates", action="store_true", help="keep one row per near-duplicate group")
        action.add_argument("--drop-truncated", action="store_true", help="drop long outputs ending mid-sentence")
        action.add_argument("--redact-pii", action="store_true", help="mask emails, phones, cards, IBANs, IPs")
        action.add_argument("--no-stratify", action="store_true", help="do not keep label proportions per split")
        action.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")


def _tokenizer_for(model: str | None) -> object:
    if model is None:
        return None
    from ftsdk.models.loading import load_tokenizer, resolve
    from ftsdk.models.spec import ModelSpec

    spec = ModelSpec(name=model)
    return load_tokenizer(resolve(spec), spec)


def _source(args: argparse.Namespace) -> tuple[object, dict[str, str]]:
    """The data source of the command line, and its column renaming."""
    from ftsdk.plugin.errors import ConfigError

    columns = {}
    for item in args.column:
        source, _, name = item.partition("=")
        if not source or not name:
            raise ConfigError(f"--column {item!r} is not SOURCE=NAME", hint="for example --column question=prompt")
        columns[source] = name
    if not args.file.startswith("hf:"):
        if args.hub_split or args.hub_subset:
            raise ConfigError("--hub-split and --hub-subset apply to hf: data sets", hint="give hf:ORG/NAME")
        return args.file, columns
    hub = {"hub": args.file[3:], "split": args.hub_split or "train", "subset": args.hub_subset}
    return hub, columns


def _cmd_data_check(args: argparse.Namespace) -> int:
    from ftsdk.data.curate import check, report_markdown

    source, columns = _source(args)
    if args.stream:
        from ftsdk.data.stream import check_stream

        report = check_stream(source, args.task, tokenizer=_tokenizer_for(args.model), max_length=args.max_length,
                              columns=columns)
    else:
        report = check(source, args.task, tokenizer=_tokenizer_for(args.model), max_length=args.max_length,
                       near_threshold=args.near_threshold, columns=columns)
    print(json.dumps(report.as_dict(), indent=1) if args.json else report_markdown(report))
    return 0


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from ftsdk.data.curate import prepare, report_markdown

    options = {"drop_near_duplicates": args.drop_near_duplicates, "near_threshold": args.near_threshold,
               "redact_pii": args.redact_pii, "max_length": args.max_length, "seed": args.seed,
               "drop_truncated": args.drop_truncated, "stratify": not args.no_stratify,
               "split": dict(zip(("train", "val", "test"), args.split))}
    source, columns = _source(args)
    prepared = prepare(source, args.out, args.task, options=options, tokenizer=_tokenizer_for(args.model),
                       overwrite=args.overwrite, columns=columns)
    print(report_markdown(prepared.report, prepared.removed))
    for name, path in prepared.files.items():
        print(f"{name}: {path}")
    return 0
