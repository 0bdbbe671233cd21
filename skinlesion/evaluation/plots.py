"""The evaluation's plots: confusion matrices, ROC per class and a reliability diagram,
the figures people would rather look at than read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from skinlesion.labels import CLASSES


def write_plots(
    metrics: dict[str, Any], y: np.ndarray, probs: np.ndarray, out_dir: Path, title: str
) -> list[Path]:
    """Confusion matrices (counts, row-normalised), ROC per class, reliability diagram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    cm = np.array(metrics["confusion_matrix"], dtype=float)
    for name, matrix, fmt in (
        ("confusion_matrix.png", cm, "{:.0f}"),
        (
            "confusion_matrix_normalized.png",
            cm / np.maximum(cm.sum(axis=1, keepdims=True), 1),
            "{:.2f}",
        ),
    ):
        fig, ax = plt.subplots(figsize=(6, 5))
        im = ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(CLASSES)), CLASSES)
        ax.set_yticks(range(len(CLASSES)), CLASSES)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(len(CLASSES)):
            for j in range(len(CLASSES)):
                ax.text(
                    j,
                    i,
                    fmt.format(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black",
                )
        ax.set_title(f"{title}: {name.removesuffix('.png').replace('_', ' ')}")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        written.append(out_dir / name)
    fig, ax = plt.subplots(figsize=(6, 5))
    for k, cls in enumerate(CLASSES):
        positives = y == k
        if 0 < positives.sum() < len(y):
            fpr, tpr, _ = roc_curve(positives, probs[:, k])
            ax.plot(
                fpr,
                tpr,
                label=f"{cls} (AUC {metrics['auc'].get(cls, float('nan')):.2f})",
                linewidth=2.5 if cls == "mel" else 1.2,
            )
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(f"{title}: ROC one-vs-rest")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "roc.png", dpi=100)
    plt.close(fig)
    written.append(out_dir / "roc.png")
    fig, ax = plt.subplots(figsize=(5, 5))
    bins = metrics["calibration"]
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8, label="perfect calibration")
    ax.plot(
        [b["confidence"] for b in bins],
        [b["accuracy"] for b in bins],
        "o-",
        label=f"model (ECE {metrics['ece']:.3f})",
    )
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}: reliability diagram")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "reliability.png", dpi=100)
    plt.close(fig)
    written.append(out_dir / "reliability.png")
    if metrics.get("conformal"):
        written.append(_coverage_plot(metrics["conformal"], out_dir / "coverage.png", title))
    return written


def _coverage_plot(conformal: dict[str, Any], path: Path, title: str) -> Path:
    """Left: per-class coverage of the prediction sets with lesion intervals, against the
    1 - alpha they promise. Right: risk-coverage, the accuracy of the most confident
    answers by the share answered, with the referral rule's own point."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    by_class = conformal["coverage_by_class"]
    intervals = conformal.get("coverage_by_class_ci95", {})
    x = np.arange(len(CLASSES))
    values = np.array([by_class[c] for c in CLASSES])
    low = np.array([(intervals.get(c) or [v, v])[0] for c, v in zip(CLASSES, values, strict=True)])
    high = np.array([(intervals.get(c) or [v, v])[1] for c, v in zip(CLASSES, values, strict=True)])
    left.bar(x, values, color=["tab:red" if c == "mel" else "tab:blue" for c in CLASSES])
    left.errorbar(x, values, yerr=[values - low, high - values], fmt="none", ecolor="black")
    left.axhline(1 - conformal["alpha"], color="k", linestyle=":", label="1 - alpha")
    left.set_xticks(x, CLASSES)
    left.set_ylim(0, 1.05)
    left.set_ylabel("share of images whose set holds the true class")
    left.set_title(f"{title}: coverage per class (95% lesion intervals)")
    left.legend(loc="lower right")
    curve = conformal["risk_coverage"]
    right.plot(
        [p["answered"] for p in curve],
        [p["accuracy"] for p in curve],
        "o-",
        ms=3,
        label="most confident answered first",
    )
    answered = 1 - conformal["refer_rate"]
    if conformal["answered"]:
        right.plot(
            [answered], [conformal["answered_accuracy"]], "r*", ms=12, label="answers not referred"
        )
    right.set_xlabel("share of images answered")
    right.set_ylabel("accuracy of those answers")
    right.set_xlim(0, 1.02)
    right.set_title("risk-coverage")
    right.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
