"""Registry promotion against a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import mlflow
import pytest

from skinlesion.models import build_cnn
from skinlesion.promote import (
    CHALLENGER,
    CHAMPION,
    Candidate,
    PromotionError,
    PromotionSettings,
    load_candidates,
    promote,
)
from skinlesion.tracking import configure_tracking, log_keras_model

pytestmark = pytest.mark.model
CFG = {"filters": [4], "convs_per_block": 1, "dense_units": 4, "dropout": 0.0}


@dataclass
class Registry:
    client: Any
    name: str  # each test promotes its own registered model on the shared server

    def settings(self, **kwargs: Any) -> PromotionSettings:
        return PromotionSettings(registered_model=self.name, **kwargs)

    def recorded(self, client: Any = None):
        """The 'same test data' evaluation, here: the test figures recorded on the version."""
        client = client or self.client

        def evaluate(uri: str) -> dict:
            tags = client.get_model_version(self.name, uri.rsplit("/", 1)[1]).tags
            return {
                "balanced_accuracy": float(tags["test.balanced_accuracy"]),
                "melanoma": {"sensitivity": float(tags["test.melanoma_sensitivity"])},
            }

        return evaluate

    def state(self) -> tuple[list[int], dict[str, str]]:
        versions = self.client.search_model_versions(f"name='{self.name}'")
        aliases = self.client.get_registered_model(self.name).aliases
        return sorted(int(v.version) for v in versions), aliases


@pytest.fixture
def registry(mlflow_server, monkeypatch, request) -> Registry:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    configure_tracking("promotion-tests")
    return Registry(mlflow.MlflowClient(mlflow_server), f"clf-{request.node.name[5:45]}")


def _candidate(name: str, balanced: float, mel: float) -> Candidate:
    """A tiny real Keras model logged to the server, with stated test metrics."""
    with mlflow.start_run() as run:
        info = log_keras_model(build_cnn(CFG, 16), keras.random.uniform((1, 16, 16, 3)).numpy())
    metrics = {"balanced_accuracy": balanced, "melanoma": {"sensitivity": mel}, "macro_auc": 0.8}
    return Candidate(name, info.model_uri, metrics, {"run_id": run.info.run_id})


def test_champion_challenger_lifecycle_auto(registry):
    settings = registry.settings(min_improvement=0.01)

    def run(*cands: Candidate):
        return promote(registry.client, list(cands), settings, registry.recorded())

    first = run(_candidate("cnn", 0.60, 0.60), _candidate("resnet152v2", 0.55, 0.50))
    assert first.promoted and first.champion_version is None
    versions, aliases = registry.state()
    assert versions == [1, 2] and aliases[CHAMPION] == "1" and aliases[CHALLENGER] == "1"

    worse = run(_candidate("cnn", 0.58, 0.70))
    assert not worse.promoted and "champion stays" in worse.reason
    assert registry.state()[1][CHAMPION] == "1"

    guard = run(_candidate("cnn", 0.70, 0.50))  # better overall, melanoma drops 10 points
    assert not guard.promoted and "melanoma guard rail" in guard.reason
    assert registry.state()[1][CHAMPION] == "1"

    better = run(_candidate("cnn", 0.66, 0.61))
    assert better.promoted and "challenger wins" in better.reason
    versions, aliases = registry.state()
    assert versions == [1, 2, 3, 4, 5] and aliases[CHAMPION] == "5"  # nothing deleted
    tags = registry.client.get_model_version(registry.name, "5").tags
    assert tags["promotion"].startswith("challenger wins") and tags["model"] == "cnn"


def test_manual_policy_moves_nothing(registry):
    promote(
        registry.client, [_candidate("cnn", 0.5, 0.5)], registry.settings(), registry.recorded()
    )
    decision = promote(
        registry.client,
        [_candidate("cnn", 0.9, 0.9)],
        registry.settings(policy="manual"),
        registry.recorded(),
    )
    assert not decision.promoted and "policy is manual" in decision.reason
    _, aliases = registry.state()
    assert aliases[CHAMPION] == "1" and aliases[CHALLENGER] == "2"


def test_concurrent_promotions_leave_a_consistent_registry(registry, mlflow_server):
    cands = [
        _candidate("cnn", 0.60, 0.6),
        _candidate("cnn", 0.70, 0.6),
        _candidate("cnn", 0.65, 0.6),
    ]
    errors: list[BaseException] = []

    def worker(c: Candidate) -> None:
        try:
            client = mlflow.MlflowClient(mlflow_server)
            promote(client, [c], registry.settings(), registry.recorded(client))
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(c,)) for c in cands]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    versions, aliases = registry.state()
    assert versions == [1, 2, 3]
    champion = registry.client.get_model_version(registry.name, aliases[CHAMPION])
    assert champion.tags["test.balanced_accuracy"] == "0.7000"
    lock = f"name='{registry.name}.promotion-lock'"
    assert not registry.client.search_registered_models(lock)


def test_missing_or_corrupt_model_fails_and_changes_nothing(registry, tmp_path: Path):
    good = _candidate("cnn", 0.6, 0.6)
    promote(registry.client, [good], registry.settings(), lambda uri: {})
    before = registry.state()
    reports = tmp_path / "reports"
    for name, uri in (("cnn", good.model_uri), ("resnet152v2", "models:/m-doesnotexist")):
        (reports / "train" / name).mkdir(parents=True)
        (reports / "eval" / name).mkdir(parents=True)
        (reports / "train" / name / "metrics.json").write_text(
            json.dumps({"run_id": good.tags["run_id"], "model_uri": uri})
        )
        (reports / "eval" / name / "metrics.json").write_text(
            json.dumps({"balanced_accuracy": 0.9})
        )
    with pytest.raises(PromotionError, match="resnet152v2: cannot load model"):
        load_candidates(["cnn", "resnet152v2"], reports, None)
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 truncated zip, not a Keras model")
    (reports / "train" / "resnet152v2" / "metrics.json").write_text(
        json.dumps({"run_id": good.tags["run_id"], "model_uri": str(corrupt)})
    )
    with pytest.raises(PromotionError, match="resnet152v2: cannot load model"):
        load_candidates(["cnn", "resnet152v2"], reports, None)
    (reports / "eval" / "resnet152v2" / "metrics.json").unlink()
    with pytest.raises(PromotionError, match="is missing; train and evaluate first"):
        load_candidates(["cnn", "resnet152v2"], reports, None)
    assert registry.state() == before


def test_unloadable_champion_is_kept_or_replaced_by_policy(registry):
    """A champion saved by an incompatible older version cannot be re-evaluated: `keep`
    leaves it champion (the run still succeeds), `replace` promotes the challenger."""
    from skinlesion.evaluate import ModelLoadError

    promote(registry.client, [_candidate("cnn", 0.5, 0.5)], registry.settings(), lambda u: {})

    def unloadable(uri: str) -> dict:
        raise ModelLoadError(f"cannot load model {uri}: TypeError: unknown layer")

    kept = promote(registry.client, [_candidate("cnn", 0.9, 0.9)], registry.settings(), unloadable)
    assert not kept.promoted and kept.champion_version == "1"
    assert "champion stays: champion version 1 cannot be loaded" in kept.reason
    assert registry.state() == ([1, 2], {CHAMPION: "1", CHALLENGER: "2"})

    replace = registry.settings(unloadable_champion="replace")
    replaced = promote(registry.client, [_candidate("cnn", 0.9, 0.9)], replace, unloadable)
    assert replaced.promoted and "unloadable_champion is replace" in replaced.reason
    assert registry.state() == ([1, 2, 3], {CHAMPION: "3", CHALLENGER: "3"})  # nothing deleted


def test_unknown_unloadable_champion_policy_is_refused():
    with pytest.raises(ValueError, match="keep or replace"):
        PromotionSettings.from_params({"promote": {"unloadable_champion": "delete"}})
