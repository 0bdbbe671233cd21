"""Stage 6: evaluation on lesion-disjoint data, with what a clinician needs to read.

Metrics (stable JSON keys): ``n_images``, ``accuracy``, ``balanced_accuracy``, ``macro_f1``,
``macro_auc`` (one-vs-rest), ``recall`` / ``precision`` / ``f1`` (class -> value),
``melanoma`` (sensitivity, specificity), ``ece`` (expected calibration error),
``confusion_matrix`` (rows: true class, columns: predicted, in ``classes`` order) and
``subgroups`` (sex, age band, localization) and ``ci95`` (95% intervals of balanced accuracy
and melanoma sensitivity from a bootstrap over lesions: with 13-40 test images in the
smallest classes, one split's figure is uncertain by several points). Plots: confusion
matrices, ROC per class and a reliability diagram.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.errors import SkinlesionError
from skinlesion.inputs import InputSettings, decode_images, labels_of
from skinlesion.labels import CLASSES
from skinlesion.metadata import image_size, model_inputs

log = logging.getLogger(__name__)
MEL = CLASSES.index("mel")
AGE_BANDS = (0, 30, 45, 60, 75, 200)


class ModelLoadError(SkinlesionError, RuntimeError):
    """The model reference does not resolve to a loadable Keras model."""


class ModelFormatError(ModelLoadError):
    """The model's files were fetched, but this code cannot read them (an incompatible
    older format, a corrupt file). Only this error may be read as "unloadable model": a
    registry, network or storage failure is a plain :class:`ModelLoadError`."""


@dataclass(frozen=True)
class EvalSettings:
    """The ``evaluate`` section of params.yaml."""

    tta: bool = False  # average predictions over flips (test-time augmentation)
    calibration_bins: int = 15
    batch_size: int = 128
    min_subgroup_size: int = 20
    bootstrap: int = 1000  # resamples of whole lesions for ``ci95``; 0: none

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> EvalSettings:
        return cls(**params.get("evaluate", {}))


def load_model(reference: str | Path) -> Any:
    """A ``.keras`` file, or an MLflow model URI (``models:/name@champion``, ``runs:/...``).

    The files are fetched first and read second, so that a failure to reach the registry
    or its storage (:class:`ModelLoadError`) is never mistaken for a model this code
    cannot read (:class:`ModelFormatError`)."""
    ref = str(reference)
    if "://" in ref or ref.startswith("models:/") or ref.startswith("runs:/"):
        import mlflow.artifacts

        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=ref)
        except Exception as err:  # MLflow, HTTP and storage clients raise many types
            raise ModelLoadError(f"cannot load model {ref}: {type(err).__name__}: {err}") from err
        return _read_model(ref, local)
    path = Path(ref)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    return _read_model(ref, str(path))


def _read_model(ref: str, local: str) -> Any:
    """Deserialise a model already on disk: an MLflow model folder or a ``.keras`` file."""
    import keras

    try:
        if Path(local).is_dir():
            import mlflow.keras

            return mlflow.keras.load_model(local)
        return keras.models.load_model(local)
    except Exception as err:  # Keras raises many types for files it cannot read
        raise ModelFormatError(f"cannot load model {ref}: {type(err).__name__}: {err}") from err


def predict_proba(
    model: Any,
    images: np.ndarray,
    batch_size: int,
    tta: bool,
    metadata: np.ndarray | None = None,
) -> np.ndarray:
    """Class probabilities; with ``tta`` the mean over the identity and three flips.
    ``metadata`` (encoded, one row per image) goes to a model that takes it; None means
    unknown."""
    x = images.astype("float32")
    views = [x]
    if tta:
        views += [x[:, :, ::-1], x[:, ::-1, :], x[:, ::-1, ::-1]]
    probs = [
        model.predict(model_inputs(model, v, metadata), batch_size=batch_size, verbose=0)
        for v in views
    ]
    return np.mean(probs, axis=0).astype("float64")


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


def core_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Headline metrics from labels and probabilities (also used for subgroups)."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        f1_score,
        roc_auc_score,
    )

    pred = probs.argmax(axis=1)
    present = sorted(set(y.tolist()))
    aucs = {}
    for k in present:
        positives = y == k
        if 0 < positives.sum() < len(y):
            aucs[CLASSES[k]] = float(roc_auc_score(positives, probs[:, k]))
    mel = y == MEL
    return {
        "n_images": len(y),
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
        "macro_auc": float(np.mean(list(aucs.values()))) if aucs else float("nan"),
        "auc": aucs,
        "melanoma": {
            "n": int(mel.sum()),
            "sensitivity": float((pred[mel] == MEL).mean()) if mel.any() else float("nan"),
            "specificity": float((pred[~mel] != MEL).mean()) if (~mel).any() else float("nan"),
        },
    }


def bootstrap_intervals(
    y: np.ndarray, pred: np.ndarray, groups: np.ndarray, resamples: int, seed: int = 0
) -> dict[str, Any]:
    """95% percentile intervals of balanced accuracy and melanoma sensitivity, resampling
    whole lesions (``groups``) with replacement: images of one lesion are not independent."""
    from skinlesion.resampling import (
        balanced_accuracy,
        lesion_counts,
        lesion_weights,
        melanoma_sensitivity,
        percentile_interval,
    )

    total, (correct,) = lesion_counts(y, [pred == y], groups)
    weights = lesion_weights(len(total), resamples, seed)
    total, correct = weights @ total, weights @ correct
    return {
        "balanced_accuracy": percentile_interval(balanced_accuracy(total, correct), 0.95),
        "melanoma_sensitivity": percentile_interval(melanoma_sensitivity(total, correct), 0.95),
        "resamples": resamples,
        "unit": "lesion",
    }


def compute_metrics(
    y: np.ndarray, probs: np.ndarray, frame: pd.DataFrame, settings: EvalSettings
) -> dict[str, Any]:
    """All metrics of the report, keys documented in the module docstring."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    pred = probs.argmax(axis=1)
    labels = list(range(len(CLASSES)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=labels, zero_division=0
    )
    ece, bins = expected_calibration_error(probs, y, settings.calibration_bins)
    metrics = core_metrics(y, probs)
    metrics.update(
        {
            "classes": list(CLASSES),
            "recall": {c: float(v) for c, v in zip(CLASSES, recall, strict=True)},
            "precision": {c: float(v) for c, v in zip(CLASSES, precision, strict=True)},
            "f1": {c: float(v) for c, v in zip(CLASSES, f1, strict=True)},
            "support": {c: int(v) for c, v in zip(CLASSES, support, strict=True)},
            "ece": ece,
            "calibration": bins,
            "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
            "subgroups": subgroup_metrics(y, probs, frame, settings.min_subgroup_size),
            "tta": settings.tta,
        }
    )
    if settings.bootstrap > 0:
        groups = frame["lesion_id"] if "lesion_id" in frame else pd.Series(range(len(y)))
        metrics["ci95"] = bootstrap_intervals(
            y, pred, groups.astype(str).to_numpy(), settings.bootstrap
        )
    return metrics


def _labelled(values: pd.Series) -> pd.Series:
    """Strings, with missing values named 'unknown' (as HAM10000 names them)."""
    return values.astype(object).where(values.notna(), "unknown").astype(str)


def subgroup_metrics(
    y: np.ndarray, probs: np.ndarray, frame: pd.DataFrame, min_size: int
) -> dict[str, dict[str, Any]]:
    """Balanced accuracy, melanoma sensitivity and n per sex, age band and localization;
    groups smaller than ``min_size`` are reported with their n only."""
    ages = pd.to_numeric(frame["age"], errors="coerce")
    band = pd.cut(
        ages,
        AGE_BANDS,
        right=False,
        labels=[f"{a}-{b - 1}" for a, b in itertools.pairwise(AGE_BANDS)],
    )
    columns = {
        "sex": _labelled(frame["sex"]),
        "age_band": _labelled(band),
        "localization": _labelled(frame["localization"]),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, values in columns.items():
        groups: dict[str, Any] = {}
        for value in sorted(values.unique()):
            mask = (values == value).to_numpy()
            if mask.sum() < min_size:
                groups[value] = {"n_images": int(mask.sum())}
                continue
            core = core_metrics(y[mask], probs[mask])
            groups[value] = {
                "n_images": core["n_images"],
                "balanced_accuracy": core["balanced_accuracy"],
                "melanoma_sensitivity": core["melanoma"]["sensitivity"],
            }
        out[name] = groups
    return out


def predict_frame(
    model: Any,
    frame: pd.DataFrame,
    data_dir: str | Path,
    inputs: InputSettings,
    settings: EvalSettings,
) -> np.ndarray:
    """Class probabilities of ``model`` for every row of ``frame``, at the model's own
    input size (the other input settings, centre crop included, stay as given)."""
    from dataclasses import replace

    if frame.empty:
        raise ValueError("nothing to evaluate: no rows")
    size = image_size(model)
    if size != inputs.image_size:
        log.info("model expects %dx%d images; resizing to that", size, size)
        inputs = replace(inputs, image_size=size)
    table = decode_images(data_dir, frame, inputs)
    rows = table.rows(frame["image_id"])
    return predict_proba(
        model, table.images[rows], settings.batch_size, settings.tta, table.metadata[rows]
    )


def evaluate_frame(
    model: Any,
    frame: pd.DataFrame,
    data_dir: str | Path,
    inputs: InputSettings,
    settings: EvalSettings,
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of ``model`` on every row of ``frame``; also returns the probabilities."""
    probs = predict_frame(model, frame, data_dir, inputs, settings)
    return compute_metrics(labels_of(frame), probs, frame.reset_index(drop=True), settings), probs


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


def write_metrics(metrics: dict[str, Any], out: str | Path) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return path


@dataclass
class Evaluation:
    """One model evaluated on one set of images: metrics plus what the plots need."""

    metrics: dict[str, Any]
    labels: np.ndarray
    probs: np.ndarray


def evaluate_model(
    reference: str | Path,
    data_dir: str | Path,
    params: dict[str, Any],
    manifest: str | Path | None = None,
    split_name: str = "test",
    tta: bool | None = None,
) -> Evaluation:
    """The evaluation step: load the model (failing before any data is read), take one
    split of ``manifest`` (or every image of ``data_dir``) and compute every metric."""
    from dataclasses import replace

    from skinlesion.dataset import load_catalog
    from skinlesion.split import read_manifest

    settings = EvalSettings.from_params(params)
    if tta is not None:
        settings = replace(settings, tta=tta)
    model = load_model(reference)
    root = Path(data_dir)
    if manifest is not None:
        frame = read_manifest(manifest)
        frame = frame[frame["split"] == split_name].drop_duplicates("image_id")
    else:
        frame = load_catalog(root)
        missing = frame["image_path"].isna()
        if missing.any():
            raise EvaluationError(
                f"{int(missing.sum())} image(s) of the metadata are missing in {root}; "
                "run `skinlesion validate` first"
            )
    if frame.empty:
        raise EvaluationError(f"nothing to evaluate: no '{split_name}' rows in {manifest}")
    metrics, probs = evaluate_frame(model, frame, root, InputSettings.from_params(params), settings)
    metrics["model"] = str(reference)
    return Evaluation(metrics, labels_of(frame), probs)


class EvaluationError(SkinlesionError, ValueError):
    """There is nothing (valid) to evaluate."""
