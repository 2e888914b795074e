"""``ftsdk train``: train from a YAML recipe."""

from __future__ import annotations

import argparse
import json


def add_commands(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train from a YAML recipe")
    train.add_argument("recipe", help="path of the recipe (see examples/recipes/)")
    train.add_argument("--output-dir", help="override the recipe's output_dir")
    train.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
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
    quick.add_argument("--overwrite", action="store_true", help="replace an earlier quickstart output")
    quick.set_defaults(run=_cmd_quickstart)


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


def _cmd_estimate(args: argparse.Namespace) -> int:
    from ftsdk.estimate import estimate

    result = estimate(args.recipe)
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.summary())
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from ftsdk.quickstart.run import run_quickstart

    run_quickstart(model=args.model, output_dir=args.output_dir, overwrite=args.overwrite, epochs=args.epochs)
    return 0
