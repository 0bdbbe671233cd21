"""Registry promotion against a real `mlflow server` on 127.0.0.1, with a sqlite and a
real PostgreSQL backend store: selection on validation, the paired gate on unseen
lesions, idempotent registration, the lock, and failing closed."""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from skinlesion.config.files import load_params
from skinlesion.config.schema import PromotionSettings
from skinlesion.labels import CLASSES
from skinlesion.promotion.gate import Answers
from skinlesion.promotion.promote import Candidate, PromotionError, promote
from skinlesion.promotion.registry import CHALLENGER, CHAMPION, register
from skinlesion.provenance import LESIONS_ARTIFACT
from skinlesion.tracking import configure_tracking
from tests.helpers import ROOT, log_tiny_model

pytestmark = pytest.mark.model
MEL = CLASSES.index("mel")
# The test part: 420 lesions of one image each, every class 60 times.
TEST = pd.DataFrame(
    {
        "image_id": [f"ISIC_{i:07d}" for i in range(420)],
        "lesion_id": [f"HAM_T{i:06d}" for i in range(420)],
        "dx": [CLASSES[i % len(CLASSES)] for i in range(420)],
    }
)


@dataclass
class Registry:
    client: Any
    name: str  # each test promotes its own registered model on the shared server
    quality: dict[str, tuple[float, float]]  # model URI -> (share right, melanoma share)
    # model URI -> share of each class's images whose prediction set holds the true class
    coverage: dict[str, float] = field(default_factory=dict)

    def settings(self, **kwargs: Any) -> PromotionSettings:
        base = load_params(ROOT / "params.yaml").promote
        judged = {"registered_model": self.name, "primary_metric": "balanced_accuracy"}
        return base.model_copy(update={**judged, **kwargs})

    def predict(self, uri: str, rows: pd.DataFrame) -> Answers:
        """A scripted model: each URI gets a fixed share of rows right (``quality``) and
        its sets cover a fixed share of each class (``coverage``, else 0.95); a registry
        URI is resolved to the logged model it was registered from."""
        if uri.startswith(f"models:/{self.name}/"):
            version = self.client.get_model_version(self.name, uri.rsplit("/", 1)[1])
            uri = version.tags["uri"]
        right, mel_right = self.quality[uri]
        y = np.array([CLASSES.index(d) for d in rows["dx"]])
        rng = np.random.default_rng(zlib.crc32(uri.encode()))
        hit = np.zeros(len(y), dtype=bool)
        for k in np.unique(y):  # exactly that share of each class, rows drawn per model
            members = rng.permutation(np.flatnonzero(y == k))
            hit[members[: round((mel_right if k == MEL else right) * len(members))]] = True
        pred = np.where(hit, y, (y + 1) % len(CLASSES))
        sets = np.zeros((len(y), len(CLASSES)), dtype=bool)
        sets[np.arange(len(y)), (y + 1) % len(CLASSES)] = True  # a wrong class in every set
        covers = self.coverage.get(uri, 0.95)
        for k in np.unique(y):
            members = np.flatnonzero(y == k)
            sets[members[: round(covers * len(members))], k] = True
        return Answers(pred, sets, alpha=0.1)

    def candidate(
        self, name: str, val: float, right: float, mel: float, seen: list[str] | None = None
    ) -> Candidate:
        """A tiny real Keras model logged to the server with its lesion record."""
        with mlflow.start_run() as run:
            info = log_tiny_model()
            mlflow.log_dict(
                {"train": seen or [f"HAM_R{run.info.run_id}"], "val": []}, LESIONS_ARTIFACT
            )
        self.quality[info.model_uri] = (right, mel)
        return Candidate(
            name,
            info.model_uri,
            run.info.run_id,
            {"val_balanced_accuracy": val},
            {"balanced_accuracy": right, "melanoma": {"sensitivity": mel}},
            {"uri": info.model_uri},
        )

    def run(self, *cands: Candidate, **settings: Any):
        return promote(self.client, list(cands), self.settings(**settings), TEST, self.predict)

    def state(self) -> tuple[list[int], dict[str, str]]:
        versions = self.client.search_model_versions(f"name='{self.name}'")
        aliases = self.client.get_registered_model(self.name).aliases
        return sorted(int(v.version) for v in versions), aliases


@pytest.fixture
def registry(registry_server, monkeypatch, request) -> Registry:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry_server)
    configure_tracking("promotion-tests")
    name = f"clf-{request.node.name[5:40]}".replace("[", "-").replace("]", "")
    return Registry(mlflow.MlflowClient(registry_server), name, {})


def test_lifecycle_selects_on_validation_and_gates_paired_on_test(registry):
    # resnet is far better on test, but the challenger is chosen on validation: cnn.
    first = registry.run(
        registry.candidate("cnn", val=0.62, right=0.60, mel=0.70),
        registry.candidate("resnet152v2", val=0.55, right=0.90, mel=0.90),
    )
    assert first.promoted and first.challenger == "cnn" and first.champion_version is None
    assert "no champion yet" in first.reason and "chosen on validation" in first.reason
    versions, aliases = registry.state()
    assert versions == [1, 2] and aliases[CHAMPION] == "1" and aliases[CHALLENGER] == "1"

    worse = registry.run(registry.candidate("cnn", val=0.7, right=0.50, mel=0.70))
    assert not worse.promoted and worse.reason.startswith("champion stays: balanced_accuracy")
    assert worse.comparison["difference"] < 0 and worse.comparison["n_lesions"] == 420

    # A point estimate one point better is noise on 420 lesions: not promoted.
    lucky = registry.run(registry.candidate("cnn", val=0.7, right=0.61, mel=0.70))
    low, high = lucky.comparison["interval"]
    assert not lucky.promoted and low < 0 < high

    guard = registry.run(registry.candidate("cnn", val=0.7, right=0.80, mel=0.40))
    assert not guard.promoted and "melanoma guard rail" in guard.reason

    better = registry.run(registry.candidate("cnn", val=0.7, right=0.80, mel=0.72))
    assert better.promoted and better.reason.startswith("challenger wins")
    assert better.comparison["interval"][0] > 0
    versions, aliases = registry.state()
    assert versions == [1, 2, 3, 4, 5, 6] and aliases[CHAMPION] == "6"  # nothing deleted
    tags = registry.client.get_model_version(registry.name, "6").tags
    assert tags["promotion"].startswith("challenger wins") and tags["model"] == "cnn"
    assert float(tags["gate.difference"]) > 0 and tags["gate.champion_version"] == "1"
    assert tags["validation.balanced_accuracy"] == "0.7000"


def test_coverage_guard_stops_a_challenger_whose_sets_under_cover(registry):
    """Better on the primary metric, but its prediction sets hold the true class of only
    60% of each class's unseen test images (promised: 90%): it is not promoted, as a
    first champion or against one. Sets that keep the promise pass."""
    under = registry.candidate("cnn", val=0.7, right=0.85, mel=0.85)
    registry.coverage[under.model_uri] = 0.6
    first = registry.run(under)
    assert not first.promoted and "not made one: coverage guard" in first.reason
    assert registry.state()[1] == {CHALLENGER: "1"}  # registered, never champion

    honest = registry.run(registry.candidate("cnn", val=0.7, right=0.6, mel=0.7))
    assert honest.promoted and "prediction sets cover every class" in honest.reason
    better = registry.candidate("cnn", val=0.75, right=0.85, mel=0.85)
    registry.coverage[better.model_uri] = 0.6
    stopped = registry.run(better)
    assert not stopped.promoted and "champion stays: coverage guard" in stopped.reason
    assert stopped.comparison["interval"][0] > 0  # it would have won on the metric
    assert registry.state()[1][CHAMPION] == "2"


def test_registration_is_idempotent(registry):
    cnn = registry.candidate("cnn", val=0.6, right=0.6, mel=0.6)
    res = registry.candidate("resnet152v2", val=0.5, right=0.5, mel=0.5)
    first = registry.run(cnn, res)
    assert first.registered == ["1", "2"]
    again = registry.run(cnn, res)  # a retried step, or `dvc repro` once more
    assert not again.promoted and again.reason.startswith("nothing to do")
    newer = registry.run(registry.candidate("cnn", val=0.6, right=0.55, mel=0.6), res)
    assert newer.registered == ["3"]  # resnet152v2's run is version 2 already
    assert registry.state()[0] == [1, 2, 3]


def test_gate_leaves_out_lesions_a_model_was_trained_on(registry):
    seen = TEST["lesion_id"].iloc[:100].tolist()
    registry.run(registry.candidate("cnn", val=0.6, right=0.5, mel=0.6, seen=seen))
    decision = registry.run(registry.candidate("cnn", val=0.7, right=0.8, mel=0.8))
    assert decision.excluded_lesions == 100 and decision.comparison["n_lesions"] == 320
    assert "100 test lesions left out" in decision.reason


def test_too_few_unseen_lesions_refuses_and_changes_nothing(registry):
    seen = TEST["lesion_id"].iloc[:400].tolist()
    registry.run(registry.candidate("cnn", val=0.6, right=0.5, mel=0.6, seen=seen))
    before = registry.state()
    with pytest.raises(PromotionError, match="only 20 test lesions are unseen"):
        registry.run(registry.candidate("cnn", val=0.7, right=0.8, mel=0.8))
    assert registry.state() == before


def test_a_challenger_that_cannot_be_exported_changes_nothing(registry):
    """The export for the ONNX server is made before anything is written: a model that
    cannot be exported (this one carries no reliability) is not registered or promoted."""
    from skinlesion.model.export import log_export
    from skinlesion.model.loading import load_model

    registry.run(registry.candidate("cnn", val=0.5, right=0.5, mel=0.5))
    before = registry.state()
    better = registry.candidate("cnn", 0.9, 0.9, 0.9)

    def export(candidate: Candidate) -> None:
        log_export(load_model(candidate.model_uri), candidate.run_id, candidate.model_uri)

    with pytest.raises(PromotionError, match=r"cannot export cnn: .*carries no reliability"):
        promote(
            registry.client, [better], registry.settings(), TEST, registry.predict, export=export
        )
    assert registry.state() == before


def test_manual_policy_moves_nothing(registry):
    registry.run(registry.candidate("cnn", val=0.5, right=0.5, mel=0.5))
    decision = registry.run(registry.candidate("cnn", 0.9, 0.9, 0.9), policy="manual")
    assert not decision.promoted and "policy is manual" in decision.reason
    assert registry.state()[1] == {CHAMPION: "1", CHALLENGER: "2"}


def test_concurrent_promotions_leave_a_consistent_registry(registry, registry_server):
    cands = [registry.candidate("cnn", 0.5, q, 0.8) for q in (0.50, 0.85, 0.65)]
    errors: list[BaseException] = []

    def worker(c: Candidate) -> None:
        try:
            client = mlflow.MlflowClient(registry_server)
            promote(client, [c], registry.settings(), TEST, registry.predict)
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
    assert champion.tags["test.balanced_accuracy"] == "0.8500"  # the best, in any order
    lock = f"name='{registry.name}.promotion-lock'"
    assert not registry.client.search_registered_models(lock)


def test_uncomparable_champion_is_kept_or_replaced_by_policy(registry):
    """A champion that cannot be loaded, or that recorded no training lesions, cannot be
    scored honestly: `keep` leaves it champion, `replace` promotes the challenger."""
    from skinlesion.model.loading import ModelFormatError

    registry.run(registry.candidate("cnn", 0.5, 0.5, 0.5))
    scripted = registry.predict

    def unloadable(uri: str, rows: pd.DataFrame) -> Answers:
        if uri.startswith("models:/clf"):
            raise ModelFormatError(f"cannot load model {uri}: TypeError: unknown layer")
        return scripted(uri, rows)

    registry.predict = unloadable  # type: ignore[method-assign]
    kept = registry.run(registry.candidate("cnn", 0.9, 0.9, 0.9))
    assert not kept.promoted and kept.champion_version == "1"
    assert "champion stays: champion version 1 cannot be loaded" in kept.reason
    replaced = registry.run(registry.candidate("cnn", 0.9, 0.9, 0.9), unloadable_champion="replace")
    assert replaced.promoted and "unloadable_champion is replace" in replaced.reason
    assert registry.state() == ([1, 2, 3], {CHAMPION: "3", CHALLENGER: "3"})

    registry.predict = scripted  # type: ignore[method-assign]
    legacy = _unrecorded_model(registry, right=0.3)  # trained before lesion records
    version, _ = register(
        registry.client,
        registry.name,
        legacy.model_uri,
        legacy.run_id,
        {"uri": legacy.model_uri},
        "",
    )
    registry.client.set_registered_model_alias(registry.name, CHAMPION, version.version)
    kept = registry.run(registry.candidate("cnn", 0.9, 0.9, 0.9))
    assert not kept.promoted and "recorded no training lesions, so it cannot" in kept.reason
    with pytest.raises(PromotionError, match=r"recorded no training lesions.*retrain it"):
        registry.run(_unrecorded_model(registry, right=0.9))  # never promoted unchecked


def _unrecorded_model(registry: Registry, right: float) -> Candidate:
    with mlflow.start_run() as run:
        info = log_tiny_model()
    registry.quality[info.model_uri] = (right, right)
    return Candidate("cnn", info.model_uri, run.info.run_id, {"val_balanced_accuracy": 0.99})


def test_registry_error_is_not_absence(registry, monkeypatch):
    """A failing registry must stop the step, never read as "no champion"."""
    from skinlesion.model.loading import ModelLoadError

    registry.run(registry.candidate("cnn", 0.5, 0.5, 0.5))
    before = registry.state()

    def storage_down(uri: str, rows: pd.DataFrame) -> Answers:
        raise ModelLoadError(f"cannot load model {uri}: ConnectionError: S3 unreachable")

    registry.predict = storage_down  # type: ignore[method-assign]
    with pytest.raises(PromotionError, match=r"S3 unreachable.*registry is unchanged"):
        registry.run(registry.candidate("cnn", 0.9, 0.9, 0.9), unloadable_champion="replace")
    assert registry.state() == before

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    from tests.helpers import free_port

    gone = mlflow.MlflowClient(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(PromotionError, match=r"looking up .*@champion failed"):
        promote(
            gone,
            [registry.candidate("cnn", 0.9, 0.9, 0.9)],
            registry.settings(),
            TEST,
            registry.predict,
        )


def test_unknown_settings_are_refused():
    base = load_params(ROOT / "params.yaml").promote.model_dump()
    for change, message in (
        ({"unloadable_champion": "delete"}, "'keep' or 'replace'"),
        ({"primary_metric": "f1"}, "'single_class_share' or 'melanoma_sensitivity_at_specificity'"),
        ({"min_improvment": 0.01}, "Extra inputs are not permitted"),
    ):
        with pytest.raises(ValueError, match=message):
            PromotionSettings.model_validate({**base, **change})
