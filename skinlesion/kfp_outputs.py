"""What the Kubeflow Pipelines UI shows of a step: scalar metrics, a confusion matrix and a
ROC curve, and self-contained HTML reports.

The components in ``components/`` pass their output artifacts here. The functions only call
the artifacts' documented methods (``log_metric``, ``log_confusion_matrix``,
``log_roc_curve``) and write to ``.path``, so they are tested without KFP running.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from skinlesion.labels import CLASSES
from skinlesion.tracking import flatten

ROC_POINTS = 200  # the UI draws every point; more add nothing visible
MODEL_FILE = "model.keras"  # inside an Output[Model] folder: Keras needs the suffix


def numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """Every finite number of ``values``, nested mappings flattened with dots."""
    return {
        key: float(value)
        for key, value in flatten("", dict(values)).items()
        if isinstance(value, bool | int | float | np.number) and math.isfinite(float(value))
    }


def log_scalars(artifact: Any, values: Mapping[str, Any]) -> dict[str, float]:
    """Log :func:`numbers` of ``values`` on an ``Output[Metrics]``; returns what it logged."""
    logged = numbers(values)
    for key, value in logged.items():
        artifact.log_metric(key, value)
    return logged


def evaluation_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers a reader compares models by, with melanoma first among the classes."""
    values: dict[str, float] = {
        "balanced_accuracy": metrics["balanced_accuracy"],
        "melanoma_sensitivity": metrics["melanoma"]["sensitivity"],
        "melanoma_specificity": metrics["melanoma"]["specificity"],
        "macro_auc": metrics["macro_auc"],
        "macro_f1": metrics["macro_f1"],
        "accuracy": metrics["accuracy"],
        "ece": metrics["ece"],
        "n_images": metrics["n_images"],
    }
    values.update({f"recall_{c}": v for c, v in metrics["recall"].items()})
    ci = metrics.get("ci95") or {}
    for key in ("balanced_accuracy", "melanoma_sensitivity"):
        if ci.get(key):
            values[f"{key}_ci95_low"], values[f"{key}_ci95_high"] = ci[key]
    conformal = metrics.get("conformal")
    if conformal:
        for key in ("coverage", "set_size_mean", "singleton_share", "refer_rate"):
            values[f"conformal_{key}"] = conformal[key]
        values["conformal_answered_accuracy"] = conformal["answered_accuracy"]
        values.update({f"coverage_{c}": v for c, v in conformal["coverage_by_class"].items()})
    return values


def summary_text(metrics: Mapping[str, Any]) -> str:
    """The evaluation in a few lines: the figures first, then recall class by class."""
    mel = metrics["melanoma"]
    lines = [
        f"images: {metrics['n_images']}",
        f"balanced accuracy: {metrics['balanced_accuracy']:.3f}",
        f"melanoma sensitivity: {mel['sensitivity']:.3f}  specificity: {mel['specificity']:.3f}",
        f"macro AUC (one-vs-rest): {metrics['macro_auc']:.3f}",
        f"accuracy: {metrics['accuracy']:.3f}  (not a fair summary on imbalanced classes)",
        f"expected calibration error: {metrics['ece']:.3f}",
        "",
        "recall per class:",
    ]
    support = metrics["support"]
    lines += [f"  {c:6s} {v:.3f}  (n={support[c]})" for c, v in metrics["recall"].items()]
    conformal = metrics.get("conformal")
    if conformal:
        lines += [
            "",
            f"prediction sets at {1 - conformal['alpha']:.0%} (conformal, per class):",
            f"  coverage {conformal['coverage']:.3f}, {conformal['set_size_mean']:.2f} classes "
            f"on average, {conformal['singleton_share']:.0%} single-class",
            f"  referred {conformal['refer_rate']:.0%}; accuracy of the answers not referred "
            f"{conformal['answered_accuracy']:.3f} (n={conformal['answered']})",
            "coverage per class:",
        ]
        lines += [f"  {c:6s} {v:.3f}" for c, v in conformal["coverage_by_class"].items()]
    return "\n".join(lines)


def log_classification(
    artifact: Any, metrics: Mapping[str, Any], labels: np.ndarray, probs: np.ndarray
) -> None:
    """Confusion matrix over the 7 classes and the melanoma-vs-rest ROC curve."""
    from sklearn.metrics import roc_curve

    artifact.log_confusion_matrix(list(CLASSES), [list(r) for r in metrics["confusion_matrix"]])
    mel = CLASSES.index("mel")
    positives = labels == mel
    if 0 < positives.sum() < len(labels):
        fpr, tpr, thresholds = roc_curve(positives, probs[:, mel])
        keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), ROC_POINTS)).astype(int))
        thresholds = np.minimum(thresholds, 1.0)  # sklearn's first threshold is inf
        artifact.log_roc_curve(fpr[keep].tolist(), tpr[keep].tolist(), thresholds[keep].tolist())


def html_report(title: str, text: str, images: Iterable[Path] = ()) -> str:
    """One HTML page with the text (pre-formatted) and every PNG embedded, so the KFP UI
    can show it without reaching any other file."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}"
        "pre{white-space:pre-wrap}img{max-width:100%;margin:.5em 0}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<pre>{html.escape(text)}</pre>",
    ]
    for image in images:
        data = base64.b64encode(Path(image).read_bytes()).decode("ascii")
        caption = html.escape(Path(image).stem.replace("_", " "))
        parts.append(
            f"<figure><img alt='{caption}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{caption}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(path: str | Path, title: str, text: str, images: Iterable[Path] = ()) -> Path:
    """Write :func:`html_report` to ``path`` (an ``Output[HTML]``'s path)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html_report(title, text, sorted(images)), encoding="utf-8")
    return out
