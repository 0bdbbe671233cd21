"""Training curves per epoch (loss, balanced accuracy, melanoma recall), one PNG per run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def plot_history(history_csv: Path, out: Path) -> Path:
    """Training curves (loss, balanced accuracy, melanoma recall) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = pd.read_csv(history_csv)
    x = np.arange(len(hist))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (title, cols) in zip(
        axes,
        [
            ("loss", ["loss", "val_loss"]),
            ("balanced accuracy", ["val_balanced_accuracy"]),
            ("melanoma recall", ["val_mel_recall"]),
        ],
        strict=True,
    ):
        for col in cols:
            if col in hist:
                ax.plot(x, hist[col], label=col)
        ax.set_title(title)
        ax.set_xlabel("epoch (all phases)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
