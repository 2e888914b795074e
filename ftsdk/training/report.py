"""What a run leaves for people: the loss-curve picture, the model card and the end-of-run summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_losses(log_history: list[dict[str, Any]], path: str | Path, title: str = "loss") -> Path | None:
    """Draw train and eval loss (and the reward of RL objectives) against the step; None if nothing was logged."""
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    rewards = [(e["step"], e["reward"]) for e in log_history if "reward" in e and "step" in e]
    if not train and not evals and not rewards:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        axes.plot(*zip(*train), label="train loss", color="#1f77b4")
    if evals:
        axes.plot(*zip(*evals), "o-", label="eval loss", color="#d62728")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    handles, labels = axes.get_legend_handles_labels()
    if rewards:
        right = axes.twinx()
        right.plot(*zip(*rewards), label="mean reward", color="#2ca02c")
        right.set_ylabel("reward")
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    axes.legend(handles, labels)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)


def model_card(manifest: dict[str, Any]) -> str:
    """A README.md for the output folder, with Hugging Face front matter."""
    base = manifest["base_model"]
    adapter, objective = manifest["adapter"], manifest["objective"]
    tags = ["ftsdk", adapter["name"], objective["name"]]
    front = ["---", f"base_model: {base.get('hub_id') or base['reference']}"]
    if manifest["kind"] == "adapter":
        front.append("library_name: peft")
    front += ["tags:"] + [f"- {tag}" for tag in tags] + ["---", ""]
    metrics = "\n".join(f"| {k} | {v:.4g} |" for k, v in sorted(manifest["metrics"].items()))
    training = "\n".join(f"| {k} | {v} |" for k, v in manifest["training"].items() if v is not None)
    data = manifest["data"]
    usage = (
        "from peft import AutoPeftModelForCausalLM\n"
        "model = AutoPeftModelForCausalLM.from_pretrained(\"PATH\")"
        if manifest["kind"] == "adapter"
        else "from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained(\"PATH\")"
    )
    return "\n".join(
        front
        + [
            f"# {adapter['name']} + {objective['name']} fine-tune of {base['reference']}",
            "",
            f"Trained with ftsdk {manifest['ftsdk_version']} on `{Path(data['train']['path']).name}` "
            f"({data['train']['rows']} rows, {data['train']['format']} format, "
            f"sha256 `{data['train']['sha256'][:12]}`).",
            "",
            "## Metrics",
            "",
            "| metric | value |",
            "|---|---|",
            metrics,
            "",
            "## Training",
            "",
            f"Adapter `{adapter['name']}`: `{adapter['config']}`  ",
            f"Objective `{objective['name']}`: `{objective['config']}`  ",
            f"Device {manifest['placement']['device']}, weights in {manifest['placement']['dtype']}, "
            f"mixed precision: {manifest['placement'].get('mixed_precision', 'no')}.",
            "",
            "| setting | value |",
            "|---|---|",
            training,
            "",
            "![loss curve](loss.png)" if manifest.get("loss_plot") else "",
            "",
            "## Use",
            "",
            "```python",
            usage,
            "```",
            "",
            ("The full record of this run (inputs with hashes, configs, library versions) is in `ftsdk.json`; "
             "the run report (loss curves, data statistics, manifest) is `report.html` (self-contained) and "
             "`report.md`."),
            "",
        ]
    )


def summary_line(metrics: dict[str, float], seconds: float, output_dir: Path) -> str:
    """One line to print when training ends."""
    parts = [f"trained in {seconds:.0f}s"]
    if "train_loss" in metrics:
        parts.append(f"mean train loss {metrics['train_loss']:.4f}")
    if "eval_loss" in metrics:
        parts.append(f"eval loss {metrics['eval_loss']:.4f}")
    if "num_tokens" in metrics and seconds > 0:
        parts.append(f"{metrics['num_tokens'] / seconds:.0f} tokens/s")
    parts.append(f"saved to {output_dir}")
    return " · ".join(parts)
