"""Step 12 of the flow: MLflow registry promotion with `champion` / `challenger` aliases.

Small named helpers, each logged, run unattended every week:

a. choose the challenger among the new models by **validation** figures (``gate``);
b. look up the champion, failing closed on any registry error (``registry``);
c. take the test lesions that neither model was trained or selected on (each training run
   records its lesions), predict them with both models, and compare paired (``gate``);
d. under the registry lock, check that the champion did not move meanwhile, register the
   new models (once per training run), alias the challenger and, under the ``auto``
   policy, move `champion` when the challenger wins.

Nothing is written before (d), so a failure anywhere earlier (the server gone, a
model that will not load, too few unseen lesions) leaves the registry as it was. Versions
are never deleted or overwritten.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from skinlesion.config.schema import PromotionSettings
from skinlesion.errors import SkinlesionError
from skinlesion.labels import labels_of
from skinlesion.model.operating_curve import MEL
from skinlesion.promotion.candidates import Candidate, PromotionError, load_candidates
from skinlesion.promotion.gate import (
    Answers,
    Comparison,
    CoverageCheck,
    GateError,
    check_coverage,
    choose_challenger,
    compare,
    validation_figure,
    verdict,
)
from skinlesion.promotion.registry import (
    CHALLENGER,
    CHAMPION,
    ensure_registered_model,
    find_champion,
    recorded_lesions,
    register,
    registry_lock,
)
from skinlesion.provenance import LESIONS_ARTIFACT

if TYPE_CHECKING:
    from skinlesion.config.params import Params

log = logging.getLogger(__name__)

# A predictor: model URI and rows -> the predicted class of each row and the model's
# conformal sets, if it has them.
Predict = Callable[[str, pd.DataFrame], Answers]


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
    # every new model that competed, with the validation figure the challenger was chosen by
    candidates: dict[str, float] = field(default_factory=dict)


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
class ChampionVerdict:
    """Whether a candidate beats the champion on test lesions neither model saw, and why
    (not :class:`skinlesion.model.reliability.Assessment`, a model's sets and referrals)."""

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
) -> ChampionVerdict:
    """Challenger against champion on test lesions neither saw. A champion that cannot be
    compared is handled by ``settings.unloadable_champion``."""
    from skinlesion.model.loading import ModelFormatError

    if champion is None:
        return _first_champion(client, settings, challenger, test, predict)
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
            old = predict(uri, rows) if len(rows) else Answers(np.array([], dtype=int))
        except ModelFormatError as err:
            why = str(err).splitlines()[0][:300]  # Keras appends whole model configs
            problem = f"champion version {champion.version} cannot be loaded by this code ({why})"
        else:
            new = predict(challenger.model_uri, rows) if len(rows) else old
            groups = rows["lesion_id"].astype(str).to_numpy()
            y = labels_of(rows)
            try:
                comparison = compare(y, new, old, groups, settings)
            except GateError as err:
                raise PromotionError(
                    f"{err} ({excluded} test lesions were seen in training)"
                ) from err
            coverage = check_coverage(y, new, groups, settings)
            wins, reason = verdict(comparison, settings, coverage)
            if excluded:
                reason += f"; {excluded} test lesions left out: a model was trained on them"
            return ChampionVerdict(wins, reason, comparison, excluded)
    if settings.unloadable_champion == "replace":
        return ChampionVerdict(
            True,
            f"{problem}; promote.unloadable_champion is replace: the "
            f"challenger {challenger.name} is judged without a champion",
        )
    return ChampionVerdict(
        False,
        f"champion stays: {problem}; compare it by hand, or rerun with "
        "promote.unloadable_champion=replace",
    )


def _first_champion(
    client: Any,
    settings: PromotionSettings,
    challenger: Candidate,
    test: pd.DataFrame,
    predict: Predict,
) -> ChampionVerdict:
    """With no champion, the challenger becomes one, unless its prediction sets fail the
    coverage guard on the test lesions it never saw."""
    reason = (
        f"no champion yet; challenger {challenger.name} chosen on validation "
        f"({settings.primary_metric})"
    )
    seen = recorded_lesions(client, challenger.run_id, LESIONS_ARTIFACT)
    rows = gate_rows(test, [seen])[0] if seen is not None else test.iloc[:0]
    if rows.empty:
        return ChampionVerdict(True, reason)
    groups = rows["lesion_id"].astype(str).to_numpy()
    coverage = check_coverage(
        labels_of(rows), predict(challenger.model_uri, rows), groups, settings
    )
    if coverage is not None and coverage.short:
        return ChampionVerdict(
            False,
            f"no champion yet, and {challenger.name} is not made one: coverage guard, its "
            f"prediction sets hold the true class of {coverage.describe()} of the test "
            f"images, below {coverage.floor:.3f}",
        )
    return ChampionVerdict(True, reason + _covered(coverage))


def _covered(coverage: CoverageCheck | None) -> str:
    if coverage is None:
        return "; it has no prediction sets to check"
    lowest = min(coverage.coverage, key=coverage.coverage.__getitem__)
    return (
        f"; its prediction sets cover every class (lowest: {lowest} "
        f"{coverage.coverage[lowest]:.3f}, floor {coverage.floor:.3f})"
    )


def promote(
    client: Any,
    candidates: list[Candidate],
    settings: PromotionSettings,
    test: pd.DataFrame,
    predict: Predict,
    attempts: int = 3,
    export: Callable[[Candidate], None] | None = None,
) -> Decision:
    """Choose the challenger on validation, gate it against the champion on ``test`` (rows
    with ``image_id``, ``lesion_id``, ``dx``), then write the outcome under the lock.

    ``export`` makes the challenger's export (for the ONNX server) before anything is
    written, so that no version becomes champion without one, and a challenger that
    cannot be exported leaves the registry as it was."""
    if not candidates:
        raise PromotionError("nothing to promote: no candidate models")
    name = settings.registered_model
    try:
        best = choose_challenger({c.name: c.validation for c in candidates}, settings)
    except GateError as err:
        raise PromotionError(str(err)) from err
    challenger = next(c for c in candidates if c.name == best)
    log.info("challenger: %s, chosen on validation %s", best, settings.primary_metric)
    if export is not None:
        try:
            export(challenger)
        except SkinlesionError as err:
            raise PromotionError(f"cannot export {best}: {err}; the registry is unchanged") from err
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
                return Decision(
                    best, version, version, False, reason, candidates=_scores(candidates, settings)
                )
            assessment = assess(client, settings, challenger, champion, test, predict)
        except SkinlesionError as err:  # nothing has been written yet
            raise PromotionError(f"{err}; the registry is unchanged") from err
        with registry_lock(client, name):
            now = find_champion(client, name)
            if (now and now.version) != (champion and champion.version):
                log.warning("champion moved during this promotion; judging again")
                continue
            return _write(client, settings, candidates, challenger, champion, assessment)
    raise PromotionError(f"the champion of {name} kept moving; gave up after {attempts} tries")


def _write(
    client: Any,
    settings: PromotionSettings,
    candidates: list[Candidate],
    challenger: Candidate,
    champion: Any | None,
    assessment: ChampionVerdict,
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
    reason = assessment.reason
    promoted = assessment.wins and settings.policy == "auto"
    if assessment.wins and settings.policy == "manual":
        reason += "; policy is manual: a person moves `champion` in the MLflow UI"
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, chosen)
    client.set_model_version_tag(name, chosen, "promotion", reason[:5000])
    if assessment.comparison is not None:
        c = assessment.comparison
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
        comparison=assessment.comparison.as_record() if assessment.comparison else None,
        excluded_lesions=assessment.excluded_lesions,
        registered=created,
        candidates=_scores(candidates, settings),
    )


def _scores(candidates: list[Candidate], settings: PromotionSettings) -> dict[str, float]:
    """Each candidate's validation figure of the primary metric, as reported."""
    return {c.name: validation_figure(c.validation, settings) for c in candidates}


def _version_tags(candidate: Candidate, settings: PromotionSettings) -> dict[str, str]:
    return {
        **candidate.tags,
        "model": candidate.name,
        "run_id": candidate.run_id,
        f"validation.{settings.primary_metric}": _fmt(
            validation_figure(candidate.validation, settings)
        ),
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


def promote_from_reports(
    manifest: str | Path,
    data_dir: str | Path,
    reports_dir: str | Path,
    models: list[str],
    params: Params,
) -> dict[str, Any]:
    """The promotion step: candidates from ``reports_dir/{train,eval}/<model>/metrics.json``,
    gated against the current champion on the test part of ``manifest``, then
    :func:`promote`. Returns the decision record that the step writes."""
    import mlflow

    from skinlesion.data.split import read_manifest, split_summary
    from skinlesion.evaluation.evaluate import score_frame
    from skinlesion.model.loading import load_model
    from skinlesion.tracking import configure_tracking

    settings = params.promote
    configure_tracking(params.tracking.experiment)
    split = read_manifest(manifest)
    test = split[split["split"] == "test"].drop_duplicates("image_id")
    load = functools.lru_cache(maxsize=4)(load_model)
    evaluation = params.evaluate

    def predict(uri: str, rows: pd.DataFrame) -> Answers:
        model = load(uri)
        scored = score_frame(model, rows, data_dir, evaluation)
        assessed = scored.assessment
        classes, mel = scored.probs.argmax(axis=1), scored.probs[:, MEL]
        if assessed is None:
            return Answers(classes, mel_scores=mel)
        return Answers(classes, assessed.sets, assessed.alpha, assessed.refer, mel)

    def export(candidate: Candidate) -> None:
        from skinlesion.model.export import log_export

        made = log_export(load(candidate.model_uri), candidate.run_id, candidate.model_uri)
        log.info("%s: export %s", candidate.name, "logged to its run" if made else "exists")

    candidates = load_candidates(models, Path(reports_dir), split_summary(split), load)
    decision = promote(
        mlflow.MlflowClient(), candidates, settings, test, predict,
        export=export if settings.export else None,
    )  # fmt: skip
    return {
        "registered_model": settings.registered_model,
        "policy": settings.policy,
        **decision.__dict__,
    }
