"""The new models of a run as promotion candidates: each model's training report
(validation figures, MLflow run) and test report, checked before anything is written.

Everything here reads (report files, the logged models, the training runs); nothing
writes to the registry, so a missing report or a model that will not load stops the step
with the registry as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skinlesion.errors import SkinlesionError
from skinlesion.promotion.registry import RegistryError
from skinlesion.promotion.reports import report_files
from skinlesion.provenance import INPUT_KEYS

# Run tags copied onto a registered version: what it was made from.
PROVENANCE_TAGS = (*INPUT_KEYS, "data.manifest_md5", "kfp.run_id")


class PromotionError(SkinlesionError, RuntimeError):
    """Promotion could not be carried out; the registry was left as it was."""


@dataclass(frozen=True)
class Candidate:
    """A newly trained model: its validation report, test metrics and provenance."""

    name: str  # e.g. "cnn"
    model_uri: str  # runs:/... or models:/m-...
    run_id: str
    validation: dict[str, Any]  # the training report (val_* figures)
    metrics: dict[str, Any] = field(default_factory=dict)  # test metrics, for the card
    tags: dict[str, str] = field(default_factory=dict)
    card: str = ""  # markdown model card, the version's description


def load_candidates(
    models: list[str],
    reports_dir: Path,
    split_summary: dict | None,
    load: Callable[[str], Any] | None = None,
) -> list[Candidate]:
    """Read each model's training and test reports, check its logged model loads, and
    build candidates. Anything missing or corrupt raises before the registry is touched."""
    import mlflow

    from skinlesion.evaluation.model_card import render_model_card
    from skinlesion.model.loading import ModelLoadError, load_model

    load = load or load_model
    candidates = []
    for name in models:
        train_file, eval_file = report_files(reports_dir, name)
        for file in (train_file, eval_file):
            if not file.is_file():
                raise PromotionError(f"{name}: {file} is missing; train and evaluate first")
        trained = json.loads(train_file.read_text())
        metrics = json.loads(eval_file.read_text())
        uri = trained.get("model_uri")
        if not uri:
            raise PromotionError(f"{name}: {train_file} names no logged model")
        try:
            load(uri)  # a corrupt or missing model stops promotion here
        except ModelLoadError as err:
            raise PromotionError(f"{name}: {err}") from err
        try:
            run = mlflow.get_run(trained["run_id"])
        except Exception as err:
            raise RegistryError(
                f"{name}: cannot read training run {trained['run_id']}: {err}"
            ) from err
        tags = {k: v for k, v in run.data.tags.items() if k in PROVENANCE_TAGS}
        card = render_model_card(name, metrics, tags, split_summary, trained.get("members"))
        candidates.append(Candidate(name, uri, trained["run_id"], trained, metrics, tags, card))
    for candidate in candidates:  # only once every candidate checked out
        mlflow.MlflowClient().log_text(candidate.run_id, candidate.card, "model_card.md")
    return candidates
