"""Step 11 of the flow: the study's question on one test set, how do the trained models differ?

Every pair of models is compared on the same test images, paired: a lesion bootstrap of
the difference in balanced accuracy, melanoma sensitivity and macro AUC (whole lesions
resampled, as the promotion gate does, since images of one lesion are not independent),
and McNemar's exact test on per-image correctness. Each model's per-class recall comes
with its own interval, and the average of the models' probabilities is scored as one
more row (does combining them help?). Two models' point figures alone cannot say whether
a gap of three points is more than the noise of 200 test lesions; these can.

Reads the ``predictions.csv`` that ``skinlesion evaluate --predictions`` writes per model.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.config.schema import CompareSettings
from skinlesion.errors import SkinlesionError
from skinlesion.evaluation.resampling import (
    balanced_accuracy,
    lesion_counts,
    lesion_weights,
    melanoma_sensitivity,
    percentile_interval,
)
from skinlesion.labels import CLASSES

ENSEMBLE = "mean_of_probabilities"
PROB_COLUMNS = [f"p_{c}" for c in CLASSES]


class ComparisonError(SkinlesionError, ValueError):
    """The models' predictions cannot be compared (different images, too few models)."""


def predictions_frame(frame: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    """What evaluate writes per model: each image's lesion, true class and probabilities."""
    out = frame[["image_id", "lesion_id", "dx"]].reset_index(drop=True).copy()
    out[PROB_COLUMNS] = probs
    return out


def _aligned(predictions: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The common images (same set for every model, or an error) and each model's probs."""
    if not predictions:
        raise ComparisonError("no model to compare")
    names = sorted(predictions)
    base = predictions[names[0]].sort_values("image_id").reset_index(drop=True)
    probs = {}
    for name in names:
        frame = predictions[name].sort_values("image_id").reset_index(drop=True)
        if not frame["image_id"].equals(base["image_id"]):
            raise ComparisonError(
                f"{name} was evaluated on other images than {names[0]}: compare models on "
                "the same test split"
            )
        probs[name] = frame[PROB_COLUMNS].to_numpy(dtype=float)
    return base, probs


def _weighted_aucs(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One-vs-rest AUC per class under each row of image ``weights`` (R x N): the
    probability that a positive outscores a negative, ties counting half. Classes absent
    from the images give NaN. Returns R x K."""
    out = np.full((weights.shape[0], len(CLASSES)), np.nan)
    for k in range(len(CLASSES)):
        positive = y == k
        if not 0 < positive.sum() < len(y):
            continue
        order = np.argsort(scores[:, k], kind="stable")
        sorted_scores, positive = scores[order, k], positive[order]
        w = weights[:, order]
        neg, pos = w * ~positive, w * positive
        _, starts, block = np.unique(sorted_scores, return_index=True, return_inverse=True)
        block_neg = np.add.reduceat(neg, starts, axis=1)
        before = np.cumsum(block_neg, axis=1) - block_neg
        below = before[:, block] + 0.5 * block_neg[:, block]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, k] = (pos * below).sum(1) / (pos.sum(1) * neg.sum(1))
    return out


def _mcnemar(right_a: np.ndarray, right_b: np.ndarray) -> dict[str, Any]:
    """McNemar's exact test: of the images exactly one model gets right, is the split
    further from 50:50 than chance allows?"""
    from scipy.stats import binomtest

    only_a = int((right_a & ~right_b).sum())
    only_b = int((~right_a & right_b).sum())
    discordant = only_a + only_b
    p = binomtest(only_a, discordant, 0.5).pvalue if discordant else 1.0
    return {"only_first_right": only_a, "only_second_right": only_b, "p_value": float(p)}


class _Resampled:
    """Every model's figures on the observed images and under each lesion resample."""

    def __init__(
        self, frame: pd.DataFrame, probs: dict[str, np.ndarray], settings: CompareSettings
    ) -> None:
        self.y = frame["dx"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
        groups = frame["lesion_id"].to_numpy()
        self.right = {name: p.argmax(1) == self.y for name, p in probs.items()}
        names = list(probs)
        total, correct = lesion_counts(self.y, [self.right[n] for n in names], groups)
        codes = pd.factorize(pd.Series(groups))[0]
        lesions = lesion_weights(len(total), settings.resamples, settings.seed)
        image_weights = np.vstack([np.ones(len(self.y)), lesions[:, codes]])  # row 0: observed
        observed = np.vstack([np.ones(len(total)), lesions])
        self.total = observed @ total
        self.correct = {n: observed @ c for n, c in zip(names, correct, strict=True)}
        self.auc = {n: _weighted_aucs(self.y, p, image_weights) for n, p in probs.items()}

    def figures(self, name: str) -> dict[str, np.ndarray]:
        """Row 0 observed, rows 1.. resampled."""
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = self.correct[name] / np.where(self.total > 0, self.total, np.nan)
        with np.errstate(all="ignore"):
            macro_auc = np.nanmean(self.auc[name], axis=1)
        return {
            "balanced_accuracy": balanced_accuracy(self.total, self.correct[name]),
            "melanoma_sensitivity": melanoma_sensitivity(self.total, self.correct[name]),
            "macro_auc": macro_auc,
            "recall": recall,
        }


def _point_and_interval(values: np.ndarray, confidence: float) -> dict[str, Any]:
    value = float(values[0])
    return {
        "value": None if math.isnan(value) else round(value, 4),
        "interval": [round(v, 4) for v in percentile_interval(values[1:], confidence)],
    }


METRICS = ("balanced_accuracy", "melanoma_sensitivity", "macro_auc")


def compare_predictions(
    predictions: dict[str, pd.DataFrame], settings: CompareSettings
) -> dict[str, Any]:
    """Per model (and their probabilities' mean): the three metrics and per-class recall
    with intervals; per pair: the paired differences' intervals and McNemar's test."""
    frame, probs = _aligned(predictions)
    names = list(probs)
    if len(names) > 1:  # one model: its own figures, nothing to pair or average
        probs[ENSEMBLE] = np.mean([probs[n] for n in names], axis=0)
    sampled = _Resampled(frame, probs, settings)
    c = settings.confidence
    figures = {name: sampled.figures(name) for name in probs}  # each model's, once
    models = {}
    for name, fig in figures.items():
        models[name] = {
            **{m: _point_and_interval(fig[m], c) for m in METRICS},
            "recall": {
                cls: _point_and_interval(fig["recall"][:, k], c) for k, cls in enumerate(CLASSES)
            },
        }
    pairs = []
    for a, b in itertools.combinations(names, 2):
        fa, fb = figures[a], figures[b]
        pairs.append(
            {
                "first": a,
                "second": b,
                "difference": {m: _point_and_interval(fa[m] - fb[m], c) for m in METRICS},
                "mcnemar": _mcnemar(sampled.right[a], sampled.right[b]),
            }
        )
    return {
        "n_images": len(frame),
        "n_lesions": int(frame["lesion_id"].nunique()),
        "confidence": c,
        "resamples": settings.resamples,
        "unit": "lesion",
        "models": models,
        "pairs": pairs,
    }


def _cell(figure: dict[str, Any]) -> str:
    """``value (low to high)``; n/a where the figure is undefined (a class absent)."""
    if figure["value"] is None:
        return "n/a"
    if not figure["interval"]:
        return f"{figure['value']:.3f}"
    low, high = figure["interval"]
    return f"{figure['value']:.3f} ({low:.3f} to {high:.3f})"


def markdown(report: dict[str, Any]) -> str:
    """The comparison as Markdown tables (what the README and the KFP UI show)."""
    pct = round(100 * report["confidence"])
    lines = [
        f"Test images: {report['n_images']} of {report['n_lesions']} lesions; "
        f"{pct}% intervals from {report['resamples']} lesion resamples.",
        "",
        "| model | balanced accuracy | melanoma sensitivity | macro AUC |",
        "|---|---|---|---|",
    ]
    for name, fig in report["models"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(fig[m]) for m in METRICS) + " |")
    if report["pairs"]:  # one model: nothing to pair
        lines += [
            "",
            "| difference | balanced accuracy | melanoma sensitivity | macro AUC | McNemar p |",
            "|---|---|---|---|---|",
        ]
    for pair in report["pairs"]:
        cells = " | ".join(_cell(pair["difference"][m]) for m in METRICS)
        p = pair["mcnemar"]["p_value"]
        lines.append(f"| {pair['first']} - {pair['second']} | {cells} | {p:.3g} |")
    names = list(report["models"])
    lines += ["", "| recall | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for cls in CLASSES:
        row = " | ".join(_cell(report["models"][n]["recall"][cls]) for n in names)
        lines.append(f"| {cls} | {row} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> Path:
    """Per pair and metric, the difference with its interval (zero marked): the one
    picture that says which differences are more than noise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        (f"{p['first']} - {p['second']}\n{m.replace('_', ' ')}", p["difference"][m])
        for p in report["pairs"]
        for m in METRICS
        if p["difference"][m]["value"] is not None
    ]
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(rows) + 1.2))
    for i, (_, figure) in enumerate(rows):
        low, high = figure["interval"] or [figure["value"]] * 2
        ax.plot([low, high], [i, i], color="tab:blue", linewidth=2)
        ax.plot(figure["value"], i, "o", color="tab:blue")
    ax.axvline(0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"difference, {round(100 * report['confidence'])}% lesion-bootstrap interval")
    ax.set_title("Paired differences on the same test lesions")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def read_predictions(eval_dir: Path, models: list[str]) -> dict[str, pd.DataFrame]:
    """``<eval_dir>/<model>/predictions.csv`` of each model; a clear error for a missing one."""
    found = {}
    for name in models:
        path = Path(eval_dir) / name / "predictions.csv"
        if not path.is_file():
            raise ComparisonError(f"no predictions of {name} at {path}: evaluate it first")
        found[name] = pd.read_csv(path)
    return found


def run_comparison(
    predictions: dict[str, pd.DataFrame],
    out_dir: Path,
    settings: CompareSettings,
    experiment: str | None = None,
) -> dict[str, Any]:
    """The comparison step: compare, write ``comparison.json`` / ``.md`` / ``.png`` into
    ``out_dir`` and, with an ``experiment``, log them and the differences to an MLflow run
    of that experiment (``compare``)."""
    import json

    report = compare_predictions(predictions, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "comparison.md").write_text(markdown(report))
    plot(report, out_dir / "comparison.png")
    if experiment is not None:
        _log(report, out_dir, experiment)
    return report


def _log(report: dict[str, Any], out_dir: Path, experiment: str) -> None:
    import mlflow

    from skinlesion.tracking import configure_tracking

    configure_tracking(experiment)
    with mlflow.start_run(run_name="compare"):
        mlflow.set_tag("models", ",".join(n for n in report["models"] if n != ENSEMBLE))
        for pair in report["pairs"]:
            for metric, figure in pair["difference"].items():
                if figure["value"] is not None:
                    key = f"{pair['first']}_minus_{pair['second']}.{metric}"
                    mlflow.log_metric(key, figure["value"])
        mlflow.log_artifacts(str(out_dir), artifact_path="comparison")
