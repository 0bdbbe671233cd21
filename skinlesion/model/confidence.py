"""How far a model's confidence can be read as a probability: the expected calibration
error (ECE), and the post-hoc scaling of its logits that lowers it.

Why scale after training: networks trained on oversampled, class-weighted data with
augmentation come out over- or under-confident (EfficientNet-Lite0 trained on CPU had an
ECE of 0.24 on held-back lesions, the CNN 0.08). The conformal sets, the operating point
and an ensemble's mean all read the probabilities, and a mean of miscalibrated members is
dominated by the most confident one. The scaling is fitted on the *validation* part
(never test) and folded into the weights of the softmax layer
(:func:`skinlesion.model.networks.scale_logits`), so every consumer of the saved model
sees calibrated probabilities and no new layer type is needed:

* **temperature**: one divisor ``T`` of all logits (Guo et al., 2017). It keeps every
  decision (the argmax) and changes only confidence; one parameter cannot overfit 1,200
  validation images.
* **vector**: a scale and a shift per class, fitted with class-balanced weights so that
  the shifts do not undo the balanced training (they would otherwise move decisions
  towards the common nevi). Fourteen parameters: chosen only if it measurably beats the
  temperature, which :func:`cross_fitted` measures on halves of the validation lesions.

Both minimise the negative log-likelihood of the log-probabilities the model outputs (a
softmax's log-probabilities are its logits up to a constant per image, which scaling
keeps irrelevant).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np

Scaling = Literal["temperature", "vector", "none"]
# Confidence bins of the ECE that training reports on validation (evaluate's own count is
# evaluate.calibration_bins, 15 by default: the same figure when unchanged).
ECE_BINS = 15


def expected_calibration_error(
    probs: np.ndarray, y: np.ndarray, bins: int
) -> tuple[float, list[dict[str, float]]]:
    """ECE over confidence bins of the top class, and the per-bin table for the diagram."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    table, ece = [], 0.0
    for lo, hi in itertools.pairwise(edges):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            gap = abs(correct[mask].mean() - conf[mask].mean())
            ece += mask.mean() * gap
            table.append(
                {
                    "lower": float(lo),
                    "upper": float(hi),
                    "n": int(mask.sum()),
                    "accuracy": float(correct[mask].mean()),
                    "confidence": float(conf[mask].mean()),
                }
            )
    return float(ece), table


@dataclass(frozen=True)
class LogitScaling:
    """``scale * logits + shift`` per class (K each): what is folded into the model."""

    scale: np.ndarray
    shift: np.ndarray

    @classmethod
    def identity(cls, n_classes: int) -> LogitScaling:
        return cls(np.ones(n_classes), np.zeros(n_classes))

    def apply(self, log_probs: np.ndarray) -> np.ndarray:
        """Probabilities after scaling (n x K)."""
        return softmax(log_probs * self.scale + self.shift)

    @property
    def temperature(self) -> float:
        """The divisor of a temperature scaling (the mean one for a vector scaling)."""
        return float(1.0 / np.mean(self.scale))


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of log-probabilities or logits (n x K)."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_probs_of(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, dtype="float64"), 1e-12, 1.0))


def fit_scaling(probs: np.ndarray, y: np.ndarray, kind: Scaling) -> LogitScaling:
    """The scaling of ``kind`` that minimises the negative log-likelihood of ``y`` under
    ``probs`` (validation predictions)."""
    from scipy.optimize import minimize, minimize_scalar

    n_classes = probs.shape[1]
    z = log_probs_of(probs)
    onehot = np.eye(n_classes)[y]
    if kind == "none":
        return LogitScaling.identity(n_classes)
    if kind == "temperature":

        def nll_t(log_t: float) -> float:
            p = softmax(z / np.exp(log_t))
            return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())

        log_t = minimize_scalar(nll_t, bounds=(-3.0, 3.0), method="bounded").x
        return LogitScaling(np.full(n_classes, np.exp(-log_t)), np.zeros(n_classes))
    counts = np.bincount(y, minlength=n_classes).astype(float)
    weights = (len(y) / (n_classes * np.maximum(counts, 1.0)))[y]

    def nll_v(theta: np.ndarray) -> tuple[float, np.ndarray]:
        scale, shift = theta[:n_classes], theta[n_classes:]
        p = softmax(z * scale + shift)
        loss = -(weights * np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))).sum()
        residual = (p - onehot) * weights[:, None]
        grad = np.concatenate([(residual * z).sum(axis=0), residual.sum(axis=0)])
        return float(loss / len(y)), grad / len(y)

    start = np.concatenate([np.ones(n_classes), np.zeros(n_classes)])
    theta = minimize(nll_v, start, jac=True, method="L-BFGS-B").x
    return LogitScaling(theta[:n_classes], theta[n_classes:])


def cross_fitted(
    probs: np.ndarray, y: np.ndarray, groups: np.ndarray, bins: int, seed: int
) -> dict[str, float]:
    """ECE and NLL of each kind of scaling on one half of the validation lesions when
    fitted on the other, both ways (pooled): how each would do on lesions it was not
    fitted on. What the choice between temperature and vector scaling rests on."""
    from sklearn.metrics import balanced_accuracy_score

    uniques = np.unique(groups)
    rng = np.random.default_rng(seed)
    first = set(rng.permutation(uniques)[: len(uniques) // 2].tolist())
    half = np.array([g in first for g in groups])
    figures: dict[str, float] = {}
    for kind in ("none", "temperature", "vector"):
        scaled = np.zeros_like(probs, dtype="float64")
        for fit_on in (half, ~half):
            scaling = fit_scaling(probs[fit_on], y[fit_on], kind)  # type: ignore[arg-type]
            scaled[~fit_on] = scaling.apply(log_probs_of(probs[~fit_on]))
        figures[f"{kind}_ece"] = expected_calibration_error(scaled, y, bins)[0]
        figures[f"{kind}_nll"] = float(
            -np.log(np.clip(scaled[np.arange(len(y)), y], 1e-12, None)).mean()
        )
        figures[f"{kind}_balanced_accuracy"] = float(
            balanced_accuracy_score(y, scaled.argmax(axis=1))
        )
    return figures
