"""Step 8 of the flow: evaluation on lesion-disjoint data, with what a clinician needs to read.

This module does the I/O: loads a model (a file or an MLflow URI), decodes the images of
one split, predicts and writes the report. The figures themselves are computed in
:mod:`skinlesion.evaluation.metrics` and drawn in :mod:`skinlesion.evaluation.plots`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.config.parse import as_params
from skinlesion.config.schema import EvalSettings, Params
from skinlesion.errors import SkinlesionError
from skinlesion.evaluation.metrics import compute_metrics
from skinlesion.model.inference import predict_raw
from skinlesion.model.loading import load_model
from skinlesion.model.metadata import encode_metadata
from skinlesion.training.inputs import labels_of, read_images


def predict_frame(
    model: Any, frame: pd.DataFrame, data_dir: str | Path, settings: EvalSettings
) -> np.ndarray:
    """Class probabilities of ``model`` for every row of ``frame``: each image read from
    disk as it is and prepared by the model itself."""
    if frame.empty:
        raise ValueError("nothing to evaluate: no rows")
    images = read_images(data_dir, frame)
    return predict_raw(model, images, encode_metadata(frame), settings.batch_size, settings.tta)


def evaluate_frame(
    model: Any, frame: pd.DataFrame, data_dir: str | Path, settings: EvalSettings
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of ``model`` on every row of ``frame``; also returns the probabilities."""
    probs = predict_frame(model, frame, data_dir, settings)
    return compute_metrics(labels_of(frame), probs, frame.reset_index(drop=True), settings), probs


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
    frame: pd.DataFrame  # the rows evaluated, in the order of ``probs``


def evaluate_model(
    reference: str | Path,
    data_dir: str | Path,
    params: Params | dict[str, Any],
    manifest: str | Path | None = None,
    split_name: str = "test",
    tta: bool | None = None,
) -> Evaluation:
    """The evaluation step: load the model (failing before any data is read), take one
    split of ``manifest`` (or every image of ``data_dir``) and compute every metric."""
    from skinlesion.data.catalog import load_catalog
    from skinlesion.data.split import read_manifest

    params = as_params(params)
    settings = params.evaluate
    if tta is not None:
        settings = settings.model_copy(update={"tta": tta})
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
    metrics, probs = evaluate_frame(model, frame, root, settings)
    metrics["model"] = str(reference)
    return Evaluation(metrics, labels_of(frame), probs, frame.reset_index(drop=True))


class EvaluationError(SkinlesionError, ValueError):
    """There is nothing (valid) to evaluate."""
