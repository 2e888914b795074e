"""The report's pictures, drawn with matplotlib (Agg) into PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftsdk.evaluation.forgetting import ForgettingCheck
from ftsdk.evaluation.metrics import OTHER, LabelMetrics
from ftsdk.evaluation.results import METRICS, Comparison


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _save(figure: Any, path: Path) -> Path:
    figure.savefig(path, format="png", bbox_inches="tight")
    _pyplot().close(figure)
    return path


def metrics_figure(comparison: Comparison, path: Path) -> Path | None:
    """Grouped bars of every rate metric (0-100%) per candidate; None when there is none."""
    names = [m for m in comparison.metric_names() if METRICS[m][2] == "pct"]
    if not names:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 0.5 + 0.45 * len(names) * max(1, len(comparison.candidates)) / 2),
                                dpi=100)
    height = 0.8 / len(comparison.candidates)
    for k, result in enumerate(comparison.candidates):
        values = [100 * result.metrics.get(m, 0.0) for m in names]
        positions = [i + k * height for i in range(len(names))]
        axes.barh(positions, values, height=height, label=result.name)
    axes.set_yticks([i + 0.4 - height / 2 for i in range(len(names))], [METRICS[m][0] for m in names])
    axes.invert_yaxis()
    axes.set_xlim(0, 100)
    axes.set_xlabel("%")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title("metrics per candidate")
    return _save(figure, path)


def confusion_figure(panels: list[tuple[str, LabelMetrics]], path: Path) -> Path:
    """Confusion matrices side by side (rows: reference label, columns: reply)."""
    plt = _pyplot()
    first = panels[0][1]
    size = 1.2 + 0.55 * len(first.labels)
    figure, axes_list = plt.subplots(1, len(panels), figsize=(size * len(panels) + 1, size), dpi=100, squeeze=False)
    for k, (axes, (title, metrics)) in enumerate(zip(axes_list[0], panels)):
        counts = metrics.confusion
        axes.imshow(counts, cmap="Blues")
        columns = [*metrics.labels, OTHER]
        axes.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
        axes.set_yticks(range(len(metrics.labels)), metrics.labels)
        top = max(max(row) for row in counts) or 1
        for i, row in enumerate(counts):
            for j, value in enumerate(row):
                if value:
                    axes.text(j, i, str(value), ha="center", va="center",
                              color="white" if value > top / 2 else "black", fontsize=8)
        axes.set_xlabel("reply")
        if k == 0:  # the panels share their rows
            axes.set_ylabel("reference")
        axes.set_title(f"{title}: accuracy {metrics.accuracy:.1%}", fontsize=10)
    return _save(figure, path)


def forgetting_figure(checks: list[ForgettingCheck], path: Path) -> Path:
    """Per-category accuracy on the general set, the baseline against each compared candidate."""
    plt = _pyplot()
    categories = list(checks[0].base_score.by_category)
    series = [(checks[0].base, checks[0].base_score)] + [(c.tuned, c.tuned_score) for c in checks]
    figure, axes = plt.subplots(figsize=(8, 3.6), dpi=100)
    width = 0.8 / len(series)
    for k, (name, score) in enumerate(series):
        axes.bar([i + k * width for i in range(len(categories))],
                 [100 * score.by_category[c] for c in categories], width=width, label=f"{name} ({score.accuracy:.0%})")
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(categories))], categories, rotation=20)
    axes.set_ylim(0, 100)
    axes.set_ylabel("% correct")
    axes.set_title("general-purpose set (forgetting check)")
    axes.grid(axis="y", alpha=0.3)
    axes.legend()
    return _save(figure, path)
