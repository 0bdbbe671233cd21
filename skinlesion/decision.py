"""Decision thresholds tuned on the validation part.

A network trained on resampled, re-weighted data is well ranked (high AUC) but its argmax
need not maximise balanced accuracy. Per-class offsets added to the log-probabilities are
searched, one class at a time over a grid, to maximise balanced accuracy on the
*validation* predictions; the test part is never looked at. The offsets are added to
the bias of the model's softmax layer, so every consumer sees the same decisions.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score


def fit_class_offsets(
    probs: np.ndarray,
    labels: np.ndarray,
    grid: np.ndarray | None = None,
    passes: int = 3,
    min_recall: dict[int, float] | None = None,
) -> tuple[np.ndarray, float, float]:
    """Offsets maximising balanced accuracy of argmax(log p + offsets) on (probs, labels).

    ``min_recall`` (class index -> recall) sets floors, e.g. a melanoma sensitivity the
    clinic asks for: each point of recall below a floor costs more than any gain in
    balanced accuracy, so a floor is met whenever an offset can meet it.

    Returns (offsets, balanced accuracy before, after)."""
    grid = np.linspace(-2.0, 2.0, 41) if grid is None else grid
    logp = np.log(np.clip(probs, 1e-7, 1.0))
    floors = {k: v for k, v in (min_recall or {}).items() if (labels == k).any() and v > 0}

    def shortfall(predicted: np.ndarray) -> float:
        return sum(
            max(0.0, floor - float((predicted[labels == k] == k).mean()))
            for k, floor in floors.items()
        )

    def score(offsets: np.ndarray) -> float:
        predicted = (logp + offsets).argmax(axis=1)
        return float(balanced_accuracy_score(labels, predicted)) - 10.0 * shortfall(predicted)

    offsets = np.zeros(probs.shape[1])
    before = float(balanced_accuracy_score(labels, logp.argmax(axis=1)))
    best = score(offsets)
    for _ in range(passes):
        improved = False
        for k in range(probs.shape[1]):
            for value in grid:
                trial = offsets.copy()
                trial[k] = value
                trial_score = score(trial)
                if trial_score > best + 1e-9:
                    best, offsets, improved = trial_score, trial, True
        if not improved:
            break
    after = float(balanced_accuracy_score(labels, (logp + offsets).argmax(axis=1)))
    return offsets, before, after
