"""Stage 7: MLflow registry promotion with `champion` / `challenger` aliases.

Small named steps, each logged, run unattended every week:

1. choose the challenger among the new models by **validation** figures (``gate``);
2. look up the champion, failing closed on any registry error (``registry``);
3. take the test lesions that neither model was trained or selected on (each training run
   records its lesions), predict them with both models, and compare paired (``gate``);
4. under the registry lock, check that the champion did not move meanwhile, register the
   new models (once per training run), alias the challenger and, under the ``auto``
   policy, move `champion` when the challenger wins.

Nothing is written before step 4, so a failure anywhere earlier (the server gone, a
model that will not load, too few unseen lesions) leaves the registry as it was. Versions
are never deleted or overwritten.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.errors import SkinlesionError
from skinlesion.gate import (
    VALIDATION_KEYS,
    Comparison,
    GateError,
    GateSettings,
    choose_challenger,
    compare,
    verdict,
)
from skinlesion.inputs import labels_of
from skinlesion.provenance import INPUT_KEYS, LESIONS_ARTIFACT
from skinlesion.registry import (
    CHALLENGER,
    CHAMPION,
    RegistryError,
    ensure_registered_model,
    find_champion,
    recorded_lesions,
    register,
    registry_lock,
)

log = logging.getLogger(__name__)

# Run tags copied onto a registered version: what it was made from.
PROVENANCE_TAGS = (*INPUT_KEYS, "data.manifest_md5", "kfp.run_id")
# A predictor: model URI and rows -> the predicted class index of each row.
Predict = Callable[[str, pd.DataFrame], np.ndarray]


class PromotionError(SkinlesionError, RuntimeError):
    """Promotion could not be carried out; the registry was left as it was."""


@dataclass(frozen=True)
class PromotionSettings:
    """The ``promote`` section of params.yaml."""

    registered_model: str = "skin-lesion-classifier"
    primary_metric: str = "balanced_accuracy"
    min_improvement: float = 0.0
    confidence: float = 0.95
    resamples: int = 1000
    seed: int = 0
    max_mel_recall_drop: float = 0.02
    min_gate_lesions: int = 30
    policy: str = "auto"
    # A champion that cannot be compared: this code cannot load it (an older, incompatible
    # format) or it recorded no training lesions (trained before that record existed).
    # keep: it stays champion and a person compares by hand; replace: the challenger is
    # judged as if there were no champion (the old version stays registered).
    unloadable_champion: str = "keep"

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> PromotionSettings:
        section = params.get("promote", {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"unknown promote parameter(s): {', '.join(unknown)}")
        settings = cls(**section)
        if settings.policy not in ("auto", "manual"):
            raise ValueError(f"promote.policy must be auto or manual, not {settings.policy!r}")
        if settings.unloadable_champion not in ("keep", "replace"):
            raise ValueError(
                "promote.unloadable_champion must be keep or replace, "
                f"not {settings.unloadable_champion!r}"
            )
        settings.gate()  # its own checks
        return settings

    def gate(self) -> GateSettings:
        return GateSettings(
            primary_metric=self.primary_metric,
            min_improvement=self.min_improvement,
            confidence=self.confidence,
            resamples=self.resamples,
            seed=self.seed,
            max_mel_recall_drop=self.max_mel_recall_drop,
            min_lesions=self.min_gate_lesions,
        )


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


@dataclass(frozen=True)
class Decision:
    """Who won and why, in words that go to the log, to version tags and decision.json."""

    challenger: str
    challenger_version: str | None
    champion_version: str | None
    promoted: bool
    reason: str
    comparison: dict[str, Any] | None = None
    excluded_lesions: int = 0
    registered: list[str] = field(default_factory=list)


def gate_rows(test: pd.DataFrame, seen: list[dict[str, list[str]]]) -> tuple[pd.DataFrame, int]:
    """The test rows whose lesion no model saw in training or selection, and how many test
    lesions had to be left out."""
    used: set[str] = set()
    for record in seen:
        used.update(record.get("train", []))
        used.update(record.get("val", []))
    lesions = test["lesion_id"].astype(str)
    unseen = ~lesions.isin(used)
    return test[unseen.to_numpy()], int(lesions[~unseen].nunique())


@dataclass(frozen=True)
class Assessment:
    wins: bool
    reason: str
    comparison: Comparison | None = None
    excluded_lesions: int = 0


def assess(
    client: Any,
    settings: PromotionSettings,
    challenger: Candidate,
    champion: Any | None,
    test: pd.DataFrame,
    predict: Predict,
) -> Assessment:
    """Challenger against champion on test lesions neither saw. A champion that cannot be
    compared is handled by ``settings.unloadable_champion``."""
    from skinlesion.evaluate import ModelFormatError

    key = settings.primary_metric
    if champion is None:
        return Assessment(
            True, f"no champion yet; challenger {challenger.name} chosen on validation ({key})"
        )
    new_seen = recorded_lesions(client, challenger.run_id, LESIONS_ARTIFACT)
    if new_seen is None:
        raise PromotionError(
            f"challenger {challenger.name} (run {challenger.run_id}) recorded no training "
            f"lesions ({LESIONS_ARTIFACT}): retrain it with this version of skinlesion"
        )
    old_seen = recorded_lesions(client, champion.run_id, LESIONS_ARTIFACT)
    problem = None
    if old_seen is None:
        problem = (
            f"champion version {champion.version} recorded no training lesions, so it cannot "
            "be scored on data it never saw"
        )
    else:
        rows, excluded = gate_rows(test, [new_seen, old_seen])
        if excluded:
            log.warning(
                "%d test lesions left out of the gate: a model was trained on them", excluded
            )
        uri = f"models:/{settings.registered_model}/{champion.version}"
        try:
            old_pred = predict(uri, rows) if len(rows) else np.array([], dtype=int)
        except ModelFormatError as err:
            why = str(err).splitlines()[0][:300]  # Keras appends whole model configs
            problem = f"champion version {champion.version} cannot be loaded by this code ({why})"
        else:
            new_pred = predict(challenger.model_uri, rows) if len(rows) else old_pred
            try:
                comparison = compare(
                    labels_of(rows),
                    new_pred,
                    old_pred,
                    rows["lesion_id"].astype(str).to_numpy(),
                    settings.gate(),
                )
            except GateError as err:
                raise PromotionError(
                    f"{err} ({excluded} test lesions were seen in training)"
                ) from err
            wins, reason = verdict(comparison, settings.gate())
            if excluded:
                reason += f"; {excluded} test lesions left out: a model was trained on them"
            return Assessment(wins, reason, comparison, excluded)
    if settings.unloadable_champion == "replace":
        return Assessment(
            True,
            f"{problem}; promote.unloadable_champion is replace: the "
            f"challenger {challenger.name} is judged without a champion",
        )
    return Assessment(
        False,
        f"champion stays: {problem}; compare it by hand, or rerun with "
        "promote.unloadable_champion=replace",
    )


def promote(
    client: Any,
    candidates: list[Candidate],
    settings: PromotionSettings,
    test: pd.DataFrame,
    predict: Predict,
    attempts: int = 3,
) -> Decision:
    """Choose the challenger on validation, gate it against the champion on ``test`` (rows
    with ``image_id``, ``lesion_id``, ``dx``), then write the outcome under the lock."""
    if not candidates:
        raise PromotionError("nothing to promote: no candidate models")
    name = settings.registered_model
    try:
        best = choose_challenger({c.name: c.validation for c in candidates}, settings.gate())
    except GateError as err:
        raise PromotionError(str(err)) from err
    challenger = next(c for c in candidates if c.name == best)
    log.info("challenger: %s, chosen on validation %s", best, settings.primary_metric)
    for _ in range(attempts):
        try:
            champion = find_champion(client, name)
            if champion is not None and champion.run_id == challenger.run_id:
                reason = (
                    f"nothing to do: {best} (run {challenger.run_id}) is champion version "
                    f"{champion.version} already"
                )
                log.info(reason)
                version = str(champion.version)
                return Decision(best, version, version, False, reason)
            verdict_ = assess(client, settings, challenger, champion, test, predict)
        except SkinlesionError as err:  # nothing has been written yet
            raise PromotionError(f"{err}; the registry is unchanged") from err
        with registry_lock(client, name):
            now = find_champion(client, name)
            if (now and now.version) != (champion and champion.version):
                log.warning("champion moved during this promotion; judging again")
                continue
            return _write(client, settings, candidates, challenger, champion, verdict_)
    raise PromotionError(f"the champion of {name} kept moving; gave up after {attempts} tries")


def _write(
    client: Any,
    settings: PromotionSettings,
    candidates: list[Candidate],
    challenger: Candidate,
    champion: Any | None,
    verdict_: Assessment,
) -> Decision:
    """Register, alias and tag: the only writes of a promotion (held under the lock)."""
    name = settings.registered_model
    ensure_registered_model(client, name)
    versions, created = {}, []
    for candidate in candidates:
        version, new = register(
            client,
            name,
            candidate.model_uri,
            candidate.run_id,
            _version_tags(candidate, settings),
            candidate.card,
        )
        versions[candidate.name] = str(version.version)  # sqlite stores say 1, REST "1"
        if new:
            created.append(str(version.version))
    chosen = versions[challenger.name]
    client.set_registered_model_alias(name, CHALLENGER, chosen)
    reason = verdict_.reason
    promoted = verdict_.wins and settings.policy == "auto"
    if verdict_.wins and settings.policy == "manual":
        reason += "; policy is manual: a person moves `champion` in the MLflow UI"
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, chosen)
    client.set_model_version_tag(name, chosen, "promotion", reason[:5000])
    if verdict_.comparison is not None:
        c = verdict_.comparison
        for key, value in {
            "gate.difference": f"{c.difference:+.4f}",
            "gate.interval": " to ".join(f"{v:+.4f}" for v in c.interval),
            "gate.champion_version": str(champion.version),
            "gate.n_lesions": str(c.n_lesions),
        }.items():
            client.set_model_version_tag(name, chosen, key, value)
    log.info(reason)
    return Decision(
        challenger=challenger.name,
        challenger_version=chosen,
        champion_version=str(champion.version) if champion else None,
        promoted=promoted,
        reason=reason,
        comparison=verdict_.comparison.as_record() if verdict_.comparison else None,
        excluded_lesions=verdict_.excluded_lesions,
        registered=created,
    )


def _version_tags(candidate: Candidate, settings: PromotionSettings) -> dict[str, str]:
    val_key = VALIDATION_KEYS[settings.primary_metric]
    return {
        **candidate.tags,
        "model": candidate.name,
        "run_id": candidate.run_id,
        f"validation.{settings.primary_metric}": _fmt(candidate.validation.get(val_key)),
        "test.balanced_accuracy": _fmt(candidate.metrics.get("balanced_accuracy")),
        "test.melanoma_sensitivity": _fmt(
            (candidate.metrics.get("melanoma") or {}).get("sensitivity")
        ),
        "test.macro_auc": _fmt(candidate.metrics.get("macro_auc")),
    }


def _fmt(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if math.isnan(number) else f"{number:.4f}"


def load_candidates(
    models: list[str],
    reports_dir: Path,
    split_summary: dict | None,
    load: Callable[[str], Any] | None = None,
) -> list[Candidate]:
    """Read each model's training and test reports, check its logged model loads, and
    build candidates. Anything missing or corrupt raises before the registry is touched."""
    import mlflow

    from skinlesion.evaluate import ModelLoadError, load_model
    from skinlesion.model_card import render_model_card

    load = load or load_model
    candidates = []
    for name in models:
        train_file = reports_dir / "train" / name / "metrics.json"
        eval_file = reports_dir / "eval" / name / "metrics.json"
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
        card = render_model_card(name, metrics, tags, split_summary)
        candidates.append(Candidate(name, uri, trained["run_id"], trained, metrics, tags, card))
    for candidate in candidates:  # only once every candidate checked out
        mlflow.MlflowClient().log_text(candidate.run_id, candidate.card, "model_card.md")
    return candidates


def promote_from_reports(
    manifest: str | Path,
    data_dir: str | Path,
    reports_dir: str | Path,
    models: list[str],
    params: dict[str, Any],
) -> dict[str, Any]:
    """The promotion step: candidates from ``reports_dir/{train,eval}/<model>/metrics.json``,
    gated against the current champion on the test part of ``manifest``, then
    :func:`promote`. Returns the decision record that the step writes."""
    import mlflow

    from skinlesion.evaluate import EvalSettings, load_model, predict_frame
    from skinlesion.inputs import InputSettings
    from skinlesion.split import read_manifest, split_summary
    from skinlesion.tracking import configure_tracking

    settings = PromotionSettings.from_params(params)
    configure_tracking(params["train"]["mlflow_experiment"])
    split = read_manifest(manifest)
    test = split[split["split"] == "test"].drop_duplicates("image_id")
    load = functools.lru_cache(maxsize=4)(load_model)
    inputs, evaluation = InputSettings.from_params(params), EvalSettings.from_params(params)

    def predict(uri: str, rows: pd.DataFrame) -> np.ndarray:
        probs = predict_frame(load(uri), rows, data_dir, inputs, evaluation)
        return probs.argmax(axis=1)

    candidates = load_candidates(models, Path(reports_dir), split_summary(split), load)
    decision = promote(mlflow.MlflowClient(), candidates, settings, test, predict)
    return {
        "registered_model": settings.registered_model,
        "policy": settings.policy,
        **decision.__dict__,
    }
