"""Stage 7: MLflow registry promotion with `champion` / `challenger` aliases.

Small named steps, each logged: register every new model as a version (with its metrics,
data and code versions as tags), give the best new version the `challenger` alias, look up
the `champion`, evaluate both on the same test data, compare by the primary metric with a
melanoma guard rail, and, under the `auto` policy, move `champion`. Versions are never
deleted or overwritten. Concurrent promotions are serialised by a lock that every MLflow
backend can give atomically: creating a registered model named ``<name>.promotion-lock``
succeeds for one caller only.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skinlesion.errors import SkinlesionError

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
LOCK_SUFFIX = ".promotion-lock"


class PromotionError(SkinlesionError, RuntimeError):
    """Promotion could not be carried out; the registry was left as it was."""


@dataclass(frozen=True)
class PromotionSettings:
    """The ``promote`` section of params.yaml."""

    registered_model: str = "skin-lesion-classifier"
    primary_metric: str = "balanced_accuracy"
    min_improvement: float = 0.0
    max_mel_recall_drop: float = 0.02
    policy: str = "auto"
    # A champion that this code cannot load (saved by an older, incompatible version) cannot
    # be re-evaluated. keep: it stays champion and a person compares by hand; replace: the
    # challenger is judged as if there were no champion (the old version stays registered).
    unloadable_champion: str = "keep"

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> PromotionSettings:
        settings = cls(**params.get("promote", {}))
        if settings.policy not in ("auto", "manual"):
            raise ValueError(f"promote.policy must be auto or manual, not {settings.policy!r}")
        if settings.unloadable_champion not in ("keep", "replace"):
            raise ValueError(
                "promote.unloadable_champion must be keep or replace, "
                f"not {settings.unloadable_champion!r}"
            )
        return settings


@dataclass(frozen=True)
class Candidate:
    """A newly trained model with its test metrics and provenance."""

    name: str  # e.g. "cnn"
    model_uri: str  # runs:/... or models:/m-...
    metrics: dict[str, Any]
    tags: dict[str, str]
    card: str = ""  # markdown model card, the version's description


@dataclass(frozen=True)
class Decision:
    """Who won and why, in words that go to the log and to version tags."""

    challenger_version: str
    champion_version: str | None
    promoted: bool
    reason: str


def metric(metrics: dict[str, Any], key: str) -> float:
    """A metric by dotted key (``melanoma.sensitivity``); NaN when absent."""
    value: Any = metrics
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return math.nan
        value = value[part]
    return float(value)


def register_version(client: Any, settings: PromotionSettings, candidate: Candidate) -> Any:
    """A new registry version for ``candidate``; the registered model is created once."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            settings.registered_model,
            description="HAM10000 skin-lesion classifier (7 classes), promoted by skinlesion.",
        )
    except MlflowException as err:
        if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
            raise
    primary = metric(candidate.metrics, settings.primary_metric)
    tags = {
        **candidate.tags,
        "model": candidate.name,
        f"test.{settings.primary_metric}": f"{primary:.4f}",
        "test.melanoma_sensitivity": f"{metric(candidate.metrics, 'melanoma.sensitivity'):.4f}",
        "test.macro_auc": f"{metric(candidate.metrics, 'macro_auc'):.4f}",
    }
    source, run_id, model_id = version_source(client, candidate.model_uri)
    version = client.create_model_version(
        settings.registered_model,
        source,
        run_id=run_id,
        model_id=model_id,
        tags=tags,
        description=candidate.card or None,
        await_creation_for=60,
    )
    log.info(
        "registered %s as %s version %s", candidate.name, settings.registered_model, version.version
    )
    return version


def version_source(client: Any, model_uri: str) -> tuple[str, str | None, str | None]:
    """(source, run_id, model_id) for a registry version: an MLflow 3 logged model
    (``models:/m-...``) is registered from its artifact location and id."""
    if model_uri.startswith("models:/m-"):
        logged = client.get_logged_model(model_uri.removeprefix("models:/"))
        return logged.artifact_location, logged.source_run_id, logged.model_id
    return model_uri, None, None


def find_champion(client: Any, name: str) -> Any | None:
    """The version holding the `champion` alias, or None on a fresh registry."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def compare(
    challenger: dict[str, Any], champion: dict[str, Any] | None, settings: PromotionSettings
) -> tuple[bool, str]:
    """Does the challenger win? The primary metric must improve by ``min_improvement`` and
    melanoma sensitivity may not drop by more than ``max_mel_recall_drop``."""
    key = settings.primary_metric
    new = metric(challenger, key)
    if math.isnan(new):
        return False, f"challenger has no {key}"
    if champion is None:
        return True, f"no champion yet; challenger {key}={new:.4f}"
    old = metric(champion, key)
    mel_new = metric(challenger, "melanoma.sensitivity")
    mel_old = metric(champion, "melanoma.sensitivity")
    figures = f"{key} {new:.4f} vs {old:.4f}, melanoma sensitivity {mel_new:.4f} vs {mel_old:.4f}"
    if not new >= old + settings.min_improvement:
        return False, f"champion stays: {figures} (needs +{settings.min_improvement})"
    if mel_new < mel_old - settings.max_mel_recall_drop:
        return False, (
            f"champion stays: melanoma guard rail, {figures} (may drop at most "
            f"{settings.max_mel_recall_drop})"
        )
    return True, f"challenger wins: {figures}"


def judge(
    challenger: dict[str, Any],
    champion: Any | None,
    settings: PromotionSettings,
    evaluate_champion: Callable[[str], dict[str, Any]],
) -> tuple[bool, str]:
    """Re-evaluate the champion and :func:`compare`; a champion that cannot be loaded is
    handled by ``settings.unloadable_champion`` instead of failing half-way."""
    from skinlesion.evaluate import ModelLoadError

    if champion is None:
        return compare(challenger, None, settings)
    uri = f"models:/{settings.registered_model}/{champion.version}"
    try:
        return compare(challenger, evaluate_champion(uri), settings)
    except ModelLoadError as err:
        why = str(err).splitlines()[0][:300]  # Keras appends whole model configs
        problem = f"champion version {champion.version} cannot be loaded by this code ({why})"
    if settings.unloadable_champion == "replace":
        wins, _ = compare(challenger, None, settings)
        key = settings.primary_metric
        return wins, (
            f"{problem}; promote.unloadable_champion is replace: the challenger "
            f"({key}={metric(challenger, key):.4f}) is judged without a champion"
        )
    return False, (
        f"champion stays: {problem}; compare it by hand, or rerun with "
        "promote.unloadable_champion=replace"
    )


@contextmanager
def registry_lock(
    client: Any, name: str, timeout_s: float = 900, stale_after_s: float = 3600, poll_s: float = 0.5
) -> Iterator[None]:
    """Mutual exclusion between promotions of ``name``, on any MLflow backend: registering
    the lock model is atomic (unique name). A lock older than ``stale_after_s`` (a crashed
    promotion) is broken."""
    from mlflow.exceptions import MlflowException

    lock = f"{name}{LOCK_SUFFIX}"
    token = uuid.uuid4().hex
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.create_registered_model(
                lock, tags={"owner": token}, description="held while a promotion runs"
            )
            break
        except MlflowException as err:
            if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
                raise
        try:
            held = client.get_registered_model(lock)
            if time.time() - held.creation_timestamp / 1000 > stale_after_s:
                log.warning("breaking a stale promotion lock on %s", name)
                client.delete_registered_model(lock)
                continue
        except MlflowException:
            continue  # released between our calls: try again at once
        if time.monotonic() > deadline:
            raise PromotionError(f"another promotion of {name} holds {lock}; gave up waiting")
        time.sleep(poll_s)
    try:
        yield
    finally:
        client.delete_registered_model(lock)


def promote(
    client: Any,
    candidates: list[Candidate],
    settings: PromotionSettings,
    evaluate_champion: Callable[[str], dict[str, Any]],
) -> Decision:
    """Register every candidate, alias the best as `challenger`, and decide on `champion`.

    ``evaluate_champion(model_uri)`` returns the current champion's metrics on the same
    test data as the candidates'. The whole decision runs under the registry lock, so two
    promotions at once cannot overwrite each other's outcome."""
    if not candidates:
        raise PromotionError("nothing to promote: no candidate models")
    name = settings.registered_model
    with registry_lock(client, name):
        versions = [(c, register_version(client, settings, c)) for c in candidates]
        best, best_version = max(
            versions, key=lambda cv: metric(cv[0].metrics, settings.primary_metric)
        )
        client.set_registered_model_alias(name, CHALLENGER, best_version.version)
        log.info("challenger: %s, version %s", best.name, best_version.version)
        champion = find_champion(client, name)
        wins, reason = judge(best.metrics, champion, settings, evaluate_champion)
        promoted = wins and settings.policy == "auto"
        if wins and settings.policy == "manual":
            reason += "; policy is manual: a person moves `champion` in the MLflow UI"
        if promoted:
            client.set_registered_model_alias(name, CHAMPION, best_version.version)
        client.set_model_version_tag(name, best_version.version, "promotion", reason)
    log.info(reason)
    return Decision(best_version.version, champion.version if champion else None, promoted, reason)


def load_candidates(
    models: list[str], reports_dir: Path, split_summary: dict | None
) -> list[Candidate]:
    """Read each model's training and test reports, check its logged model loads, and
    build candidates. Anything missing or corrupt raises before the registry is touched."""
    import mlflow

    from skinlesion.evaluate import ModelLoadError, load_model
    from skinlesion.model_card import render_model_card

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
            load_model(uri)  # a corrupt or missing model stops promotion here
        except ModelLoadError as err:
            raise PromotionError(f"{name}: {err}") from err
        run = mlflow.get_run(trained["run_id"])
        tags = {
            k: v
            for k, v in run.data.tags.items()
            if k in ("git_commit", "data.dvc_md5", "data.manifest_md5")
        }
        tags["run_id"] = trained["run_id"]
        candidates.append(
            Candidate(
                name, uri, metrics, tags, render_model_card(name, metrics, tags, split_summary)
            )
        )
    for candidate in candidates:  # only once every candidate checked out
        mlflow.MlflowClient().log_text(candidate.tags["run_id"], candidate.card, "model_card.md")
    return candidates


def promote_from_reports(
    manifest: str | Path,
    data_dir: str | Path,
    reports_dir: str | Path,
    models: list[str],
    params: dict[str, Any],
) -> dict[str, Any]:
    """The promotion step: candidates from ``reports_dir/{train,eval}/<model>/metrics.json``,
    the current champion re-evaluated on the test part of ``manifest`` (the same images as
    the candidates), then :func:`promote`. Returns the decision record that the step writes."""
    import mlflow

    from skinlesion.evaluate import evaluate_model
    from skinlesion.split import read_manifest, split_summary
    from skinlesion.tracking import configure_tracking

    settings = PromotionSettings.from_params(params)
    configure_tracking(params["train"]["mlflow_experiment"])
    split = read_manifest(manifest)

    def evaluate_champion(uri: str) -> dict[str, Any]:
        return evaluate_model(uri, data_dir, params, manifest, "test").metrics

    candidates = load_candidates(models, Path(reports_dir), split_summary(split))
    decision = promote(mlflow.MlflowClient(), candidates, settings, evaluate_champion)
    return {
        "registered_model": settings.registered_model,
        "policy": settings.policy,
        **decision.__dict__,
    }
