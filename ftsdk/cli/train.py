"""``ftsdk train``: train from a YAML recipe."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train from a YAML recipe")
    train.add_argument("recipe", help="path of the recipe (see examples/recipes/)")
    train.add_argument("--output-dir", help="override the recipe's output_dir")
    train.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    train.add_argument("--nproc", type=int, metavar="N",
                       help="train with N processes on this machine (re-runs itself under torchrun; "
                       "strategy from the recipe's distributed section, DDP by default)")
    train.add_argument("--nnodes", type=int, metavar="N",
                       help="train on N machines: run the same command on each (with --rdzv-endpoint)")
    train.add_argument("--node-rank", type=int, metavar="R",
                       help="this machine's rank among the nodes (optional: the rendezvous assigns ranks)")
    train.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                       help="where the nodes meet (torchrun's c10d rendezvous): a node every node reaches")
    train.add_argument("--max-restarts", type=int, metavar="N",
                       help="restart the processes up to N times when one dies; they continue from the newest "
                       "sealed checkpoint (needs training.save_steps)")
    train.add_argument("--launcher", metavar="NAME",
                       help="the launcher plugin that starts the processes: torchrun (default), slurm, ray")
    train.add_argument("--submit", action="store_true",
                       help="slurm launcher: submit the written sbatch script (otherwise only write it)")
    train.add_argument("--resume", action="store_true",
                       help="continue from the newest complete checkpoint in OUTPUT_DIR.checkpoints "
                       "(written every training.save_steps steps)")
    train.add_argument("--resume-from", metavar="CHECKPOINT",
                       help="continue from this checkpoint folder (or the newest complete one inside this folder)")
    train.add_argument("--force-resume", action="store_true",
                       help="resume even if the data or settings differ from the checkpoint's run")
    train.set_defaults(run=_cmd_train)

    estimating = commands.add_parser(
        "estimate", help="parameters and training memory of a recipe, from the model's config alone (no weights)"
    )
    estimating.add_argument("recipe", help="path of the recipe (see examples/recipes/)")
    estimating.add_argument("--json", action="store_true", help="print JSON instead of a table")
    estimating.set_defaults(run=_cmd_estimate)

    quick = commands.add_parser(
        "quickstart", help="LoRA-tune the default model on the bundled ticket-routing task; compare with the base"
    )
    quick.add_argument("--model", default="smollm2-135m", help="base model (default: %(default)s)")
    quick.add_argument("--output-dir", default="runs/quickstart", help="where the adapter goes (%(default)s)")
    quick.add_argument("--epochs", type=float, default=None, help="training epochs (default: the tuned preset)")
    quick.add_argument("--max-steps", type=_positive, default=None, metavar="N",
                       help="a short run: stop training after N optimizer steps")
    quick.add_argument("--limit", type=_positive, default=None, metavar="N",
                       help="a short run: evaluate the first N test rows and fewer general prompts")
    quick.add_argument("--overwrite", action="store_true", help="replace an earlier quickstart output")
    quick.set_defaults(run=_cmd_quickstart)


def _positive(text: str) -> int:
    """A whole number of at least 1 (refused by argparse before anything runs)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def _cmd_train(args: argparse.Namespace) -> int:
    from ftsdk.plugin.errors import ConfigError
    from ftsdk.plugin.jobs import LaunchRequest
    from ftsdk.training.distributed.launch import OVERRIDES_VARIABLE, launch, overrides_from, with_overrides
    from ftsdk.training.distributed.world import current_world, elastic_restart, launched
    from ftsdk.training.recipe import Recipe
    from ftsdk.training.tuner import Tuner

    recipe = Recipe.from_yaml(args.recipe)
    overrides = overrides_from(vars(args))
    if overrides:
        recipe = recipe.model_copy(update={"distributed": with_overrides(recipe.distributed, overrides)})
    data = recipe.training_data(args.recipe)
    output_dir = args.output_dir or recipe.output_dir
    if output_dir is None:
        raise ConfigError(f"{args.recipe} has no output_dir", hint="add  output_dir: runs/NAME  or pass --output-dir")
    tuner = Tuner.from_recipe(recipe)  # validates plugins and their configs before any loading
    if recipe.distributed is not None and recipe.distributed.needs_launch and not launched():
        request = LaunchRequest(_forwarded(args), recipe.distributed, Path(output_dir), node_rank=args.node_rank,
                                env={OVERRIDES_VARIABLE: json.dumps(overrides)}, submit=args.submit)
        return launch(request)
    result = tuner.fit(
        data.train,
        eval_data=data.eval,
        output_dir=output_dir,
        overwrite=args.overwrite or recipe.overwrite,
        resume=args.resume_from or args.resume or elastic_restart(output_dir),
        force_resume=args.force_resume,
        columns=data.columns,
    )
    if current_world().is_main:
        print(json.dumps({"output_dir": str(result.output_dir), "metrics": result.metrics}, indent=2))
    return 0


def _forwarded(args: argparse.Namespace) -> list[str]:
    """The ``ftsdk train`` arguments every process of a relaunch receives.

    Not ``--nproc`` and the other launch options: torchrun's parser takes ``--nproc`` for its own
    ``--nproc-per-node`` (the environment carries them, see ``ftsdk.training.distributed.launch.OVERRIDES_VARIABLE``).
    """
    argv = ["train", args.recipe]
    if args.output_dir:
        argv += ["--output-dir", args.output_dir]
    if args.overwrite:
        argv.append("--overwrite")
    if args.resume:
        argv.append("--resume")
    if args.resume_from:
        argv += ["--resume-from", args.resume_from]
    if args.force_resume:
        argv.append("--force-resume")
    return argv


def _cmd_estimate(args: argparse.Namespace) -> int:
    from ftsdk.training.estimate import estimate

    result = estimate(args.recipe)
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.summary())
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from ftsdk.quickstart.run import run_quickstart

    run_quickstart(model=args.model, output_dir=args.output_dir, overwrite=args.overwrite, epochs=args.epochs,
                   max_steps=args.max_steps, limit=args.limit)
    return 0
