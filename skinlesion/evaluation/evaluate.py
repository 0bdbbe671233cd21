"""Step 9 of the flow: evaluation on lesion-disjoint data, with what a clinician needs to read.

This module does the I/O: loads a model (a file or an MLflow URI), decodes the images of
one split, predicts and writes the report. The figures themselves are computed in
:mod:`skinlesion.evaluation.metrics` and drawn in :mod:`skinlesion.evaluation.plots`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from skinlesion.config.schema import EvalSettings
from skinlesion.errors import SkinlesionError
from skinlesion.evaluation.coverage import conformal_metrics
from skinlesion.evaluation.metrics import compute_metrics
from skinlesion.labels import labels_of
from skinlesion.model.confidence import expected_calibration_error
from skinlesion.model.inference import Scored, Scorer
from skinlesion.model.loading import load_model
from skinlesion.model.metadata import encode_metadata
from skinlesion.model.preprocessing import read_images
from skinlesion.model.reliability import Assessment, reliability_of

if TYPE_CHECKING:
    from skinlesion.config.params import Params


def score_frame(
    model: Any, frame: pd.DataFrame, data_dir: str | Path, settings: EvalSettings
) -> Scored:
    """Class probabilities of ``model`` for every row of ``frame``, and their sets and
    referrals when the model carries them: each image read from disk as it is and
    prepared by the model itself."""
    if frame.empty:
        raise ValueError("nothing to evaluate: no rows")
    images = read_images(data_dir, frame)
    return Scorer(model).score(images, encode_metadata(frame), settings.batch_size, settings.tta)


def predict_frame(
    model: Any, frame: pd.DataFrame, data_dir: str | Path, settings: EvalSettings
) -> np.ndarray:
    """The probabilities of :func:`score_frame`."""
    return score_frame(model, frame, data_dir, settings).probs


def evaluate_frame(
    model: Any, frame: pd.DataFrame, data_dir: str | Path, settings: EvalSettings
) -> tuple[dict[str, Any], Scored]:
    """Metrics of ``model`` on every row of ``frame`` (with ``conformal`` when the model
    carries its reliability, :mod:`skinlesion.evaluation.coverage`); also returns what
    the model answered."""
    scored = score_frame(model, frame, data_dir, settings)
    rows = frame.reset_index(drop=True)
    y = labels_of(rows)
    metrics = compute_metrics(y, scored.probs, rows, settings)
    reliability = reliability_of(model)
    if reliability is not None and reliability.calibration_scale:
        # the network's own probabilities, before the calibration and the melanoma
        # operating point fitted on validation
        metrics["ece_uncalibrated"] = expected_calibration_error(
            reliability.uncalibrated(scored.probs), y, settings.calibration_bins
        )[0]
    if scored.assessment is not None:
        groups = rows["lesion_id"] if "lesion_id" in rows else pd.Series(range(len(rows)))
        metrics["conformal"] = conformal_metrics(
            y,
            scored.probs,
            scored.assessment,
            groups.astype(str).to_numpy(),
            scored.assessment.alpha,
            settings.bootstrap,
            settings.seed,
        )
    return metrics, scored


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
    assessment: Assessment | None = None  # sets and referrals, when the model has them

    def predictions(self) -> pd.DataFrame:
        """What evaluate writes per image (``--predictions``): lesion, true class and
        probabilities (what `compare` reads) and, for a model that has them, the
        prediction set (classes joined by spaces), ``refer`` and ``refer_reason``."""
        from skinlesion.evaluation.compare import predictions_frame

        out = predictions_frame(self.frame, self.probs)
        if self.assessment is not None:
            sets = [" ".join(self.assessment.prediction_set(i)) for i in range(len(out))]
            out["prediction_set"] = sets
            out["refer"] = self.assessment.refer
            out["refer_reason"] = self.assessment.reasons
        return out


def evaluate_model(
    reference: str | Path,
    data_dir: str | Path,
    params: Params,
    manifest: str | Path | None = None,
    split_name: str = "test",
    tta: bool | None = None,
) -> Evaluation:
    """The evaluation step: load the model (failing before any data is read), take one
    split of ``manifest`` (or every image of ``data_dir``) and compute every metric."""
    from skinlesion.data.catalog import load_catalog
    from skinlesion.data.split import read_manifest

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
    metrics, scored = evaluate_frame(model, frame, root, settings)
    metrics["model"] = str(reference)
    return Evaluation(
        metrics, labels_of(frame), scored.probs, frame.reset_index(drop=True), scored.assessment
    )


class EvaluationError(SkinlesionError, ValueError):
    """There is nothing (valid) to evaluate."""
