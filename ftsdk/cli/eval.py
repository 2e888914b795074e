"""``ftsdk eval``: compare models on a held-out file, from a YAML file or from flags; writes the report."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_commands(commands: argparse._SubParsersAction) -> None:
    evaluating = commands.add_parser(
        "eval", help="compare models (base, prompted, adapter, merged, GGUF) on a held-out file; writes a report",
        description="Give a YAML file (see docs/evaluation.md), or --data and --candidate flags; flags override it.",
    )
    evaluating.add_argument("config", nargs="?", help="evaluation YAML file")
    evaluating.add_argument("--data", help="held-out data file")
    evaluating.add_argument("--candidate", action="append", default=[], metavar="NAME=SOURCE",
                            help="a model to compare (model name/folder, adapter, merged or GGUF); repeat it")
    evaluating.add_argument("--system-prompt", action="append", default=[], metavar="NAME=TEXT",
                            help="system prompt of candidate NAME")
    evaluating.add_argument("--baseline", help="candidate the deltas are against (default: the first)")
    evaluating.add_argument("--task", choices=["auto", "labels", "json", "text"], help="task metrics (default: auto)")
    evaluating.add_argument("--max-new-tokens", type=int, help="tokens generated per reply")
    evaluating.add_argument("--limit", type=int, help="evaluate only the first N rows")
    evaluating.add_argument("--forgetting", action="store_true", help="run the forgetting check")
    evaluating.add_argument("--out", help="output folder of the report")
    evaluating.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    evaluating.add_argument("--json", action="store_true", help="print the results as JSON")
    evaluating.add_argument("--trust-remote-code", action="store_true",
                            help="let every candidate's model run its own Python code (auto_map); only for code you "
                            "have read")
    evaluating.set_defaults(run=_cmd_eval)


def _pairs(values: list[str], flag: str) -> list[tuple[str, str]]:
    from ftsdk.plugin.errors import ConfigError

    pairs = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise ConfigError(f"{flag} expects NAME=VALUE, got '{value}'", hint=f"e.g. {flag} tuned=runs/lora")
        pairs.append((name, rest))
    return pairs


def config_from_args(args: argparse.Namespace) -> Any:
    """The evaluation config: the YAML file (if any) with the flags applied on top."""
    from ftsdk.evaluation.spec import EvalConfig
    from ftsdk.plugin.errors import ConfigError
    from ftsdk.plugin.settings import validate_config

    raw: dict[str, Any] = EvalConfig.from_yaml(args.config).model_dump() if args.config else {}
    candidates = raw.get("candidates", [])
    candidates += [{"name": name, "source": source} for name, source in _pairs(args.candidate, "--candidate")]
    for name, text in _pairs(args.system_prompt, "--system-prompt"):
        matching = [c for c in candidates if c["name"] == name]
        if not matching:
            raise ConfigError(f"--system-prompt names '{name}', which is no candidate",
                              hint="add --candidate NAME=SOURCE first (a prompted base is a candidate of its own)")
        matching[0]["system_prompt"] = text
    if args.max_new_tokens:
        for candidate in candidates:
            candidate.setdefault("generation", {})["max_new_tokens"] = args.max_new_tokens
    if args.trust_remote_code:
        for candidate in candidates:
            candidate["trust_remote_code"] = True
    raw["candidates"] = candidates
    overrides = {"data": args.data, "baseline": args.baseline, "task": args.task, "limit": args.limit,
                 "output_dir": args.out}
    raw.update({k: v for k, v in overrides.items() if v is not None})
    if args.overwrite:
        raw["overwrite"] = True
    if args.forgetting:
        raw.setdefault("forgetting", {})["enabled"] = True
    if "data" not in raw or not candidates:
        raise ConfigError("nothing to evaluate", hint="give a YAML file, or --data FILE and --candidate NAME=SOURCE")
    return validate_config(EvalConfig, raw, where=args.config or "ftsdk eval")


def _cmd_eval(args: argparse.Namespace) -> int:
    from ftsdk.evaluation.run import evaluate

    comparison = evaluate(config_from_args(args))
    if args.json:
        print(json.dumps(comparison.as_dict(), indent=1, default=str))
    else:
        print(comparison.summary())
    if comparison.output_dir is not None:
        print(f"report: {comparison.output_dir / 'report.html'} (and report.md)")
    return 0
