"""Step 8 of the flow (after training, before evaluation): an ensemble candidate built
from trained members, without retraining them (:mod:`skinlesion.model.ensemble` says what
it is and why).

Like a model's training run, on the *validation* part only (the test part is not read):

1. the members, loaded from their saved files, are combined (``train.ensembles.<name>``);
2. its melanoma operating point: the smallest offset that reaches
   ``train.decision_min_mel_recall`` on validation (:mod:`skinlesion.training.operating_point`);
3. its reliability: conformal calibration on validation, the feature distance to the
   training images (its members' features side by side), the input contract;
4. an MLflow run like a model's: the lesions it was trained and selected on (its
   members'), its monitoring reference, provenance tags, the servable model; and the
   training report that evaluation, comparison and promotion read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from skinlesion.data.contract import InputContract
from skinlesion.data.versions import list_folder, log_data_listing
from skinlesion.labels import CLASSES, labels_of
from skinlesion.model.confidence import ECE_BINS, expected_calibration_error
from skinlesion.model.ensemble import MEMBER_FEATURES, build_ensemble, feature_probe, set_offsets
from skinlesion.model.inference import probe_outputs
from skinlesion.model.loading import load_model
from skinlesion.model.metadata import encode_metadata
from skinlesion.model.operating_curve import MEL
from skinlesion.model.preprocessing import read_images
from skinlesion.model.reference import log_monitoring_reference, monitoring_reference
from skinlesion.model.reliability import Reliability, attach
from skinlesion.model.servable import log_serving_model
from skinlesion.provenance import LESIONS_ARTIFACT, RunOrigin, run_provenance
from skinlesion.tracking import configure_tracking
from skinlesion.training.lifecycle import (
    TrainResult,
    example_image,
    training_lesions,
    training_rows,
    validation_figures,
)
from skinlesion.training.operating_point import melanoma_offsets
from skinlesion.training.reliability import reference_sample, reliability_figures

if TYPE_CHECKING:
    from skinlesion.config.params import Params

log = logging.getLogger(__name__)
BATCH_SIZE = 64


def build_ensemble_candidate(
    name: str,
    members: Mapping[str, str | Path],
    manifest_path: str | Path,
    data_dir: str | Path,
    out_model: str | Path,
    report_dir: str | Path,
    params: Params,
    origin: RunOrigin | None = None,
) -> TrainResult:
    """Build ensemble ``name`` of ``train.ensembles`` from its ``members`` (name -> saved
    model), fit its operating point and reliability on the validation rows of the
    (oversampled) manifest the members were trained on, save ``out_model`` and log it to
    MLflow as a training run would."""
    import mlflow

    settings = params.train.ensembles[name]
    missing = [m for m in settings.members if m not in members]
    if missing:
        raise ValueError(f"ensemble {name}: no saved model given for member(s) {missing}")
    rows = training_rows(manifest_path)
    model = build_ensemble(
        {m: load_model(str(members[m])) for m in settings.members}, settings.combine
    )
    probe = feature_probe(model)
    val = rows.val.reset_index(drop=True)
    y_val = labels_of(val)
    val_images = list(read_images(data_dir, val))  # read once, run twice

    def outputs(frame: pd.DataFrame, images: Any) -> tuple[np.ndarray, np.ndarray]:
        return probe_outputs(model, probe, images, encode_metadata(frame), BATCH_SIZE)

    train_cfg = params.train
    listing = list_folder(data_dir, params.data.workers)
    configure_tracking(params.tracking.experiment)
    with mlflow.start_run(run_name=f"ensemble-{name}") as run:
        log_data_listing(listing, data_dir)
        mlflow.set_tags(
            {
                **run_provenance(params, listing.version, origin),
                "model": name,
                "recipe": "ensemble",
                "members": ",".join(settings.members),
                "data.manifest_md5": rows.manifest_md5,
            }
        )
        mlflow.log_dict(training_lesions(rows.train, rows.val, rows.manifest_md5), LESIONS_ARTIFACT)
        mlflow.log_params(
            {"combine": settings.combine, "members": ",".join(settings.members), "n_val": len(val)}
        )
        offsets = np.zeros(len(CLASSES))
        if train_cfg.decision_min_mel_recall > 0:
            offsets = melanoma_offsets(outputs(val, val_images)[1], y_val, train_cfg)
        set_offsets(model, offsets)
        val_features, val_probs = outputs(val, val_images)
        reference = _reference_rows(
            rows.train, train_cfg.reliability.reference_images, train_cfg.seed
        )
        ref_features, _ = outputs(reference, read_images(data_dir, reference))
        reliability = Reliability.fit(
            (ref_features, labels_of(reference)),
            (val_features, val_probs, y_val),
            train_cfg.reliability,
            InputContract.of(params.validate_),
            MEMBER_FEATURES,
            {"decision_offsets": offsets.tolist()},
        )
        figures = reliability_figures(reliability.assess(val_probs, val_features), val_probs, y_val)
        decided = val_probs.argmax(axis=1)
        result = TrainResult(
            model=name,
            model_path=str(out_model),
            run_id=run.info.run_id,
            model_uri="",
            best_epoch=0,
            epochs_run=0,
            resumed_from_epoch=0,
            val_balanced_accuracy=float(balanced_accuracy_score(y_val, decided)),
            val_mel_recall=float((decided[y_val == MEL] == MEL).mean()),
            val_accuracy=float((decided == y_val).mean()),
            train_images_per_s=0.0,
            replicas=1,
            mixed_precision=False,
            val_ece=expected_calibration_error(val_probs, y_val, ECE_BINS)[0],
            members=list(settings.members),
            **validation_figures(figures),
        )
        mlflow.log_metrics(
            {
                **figures,
                "best_val_balanced_accuracy": result.val_balanced_accuracy,
                "best_val_mel_recall": result.val_mel_recall,
                "val_ece": result.val_ece,
            }
        )
        log_monitoring_reference(monitoring_reference(val, val_features, val_probs))
        out = Path(out_model)
        out.parent.mkdir(parents=True, exist_ok=True)
        attach(model, reliability).save(out)
        info = log_serving_model(out, example_image(data_dir, val), list(settings.members))
        result.model_uri = info.model_uri
    report = Path(report_dir)
    report.mkdir(parents=True, exist_ok=True)
    (report / "metrics.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    log.info(
        "%s (%s mean of %s): validation balanced accuracy %.3f, %.0f%% referred, "
        "%.0f%% single-class; MLflow run %s",
        name,
        settings.combine,
        " + ".join(settings.members),
        result.val_balanced_accuracy,
        100 * result.val_refer_rate,
        100 * result.val_singleton_share,
        result.run_id,
    )
    return result


def _reference_rows(train: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """Training images, each once, at most ``limit`` (seeded): what the feature distance is
    fitted on, as for a model."""
    unique = train.drop_duplicates("image_id").reset_index(drop=True)
    return unique.iloc[reference_sample(len(unique), limit, seed)].reset_index(drop=True)
