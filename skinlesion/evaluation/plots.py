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
    return written
