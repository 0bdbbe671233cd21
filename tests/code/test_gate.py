"""The promotion gate's policy, on labels and predictions alone (no registry)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from skinlesion.config.files import load_params
from skinlesion.config.schema import PromotionSettings
from skinlesion.evaluation.resampling import balanced_accuracy, lesion_counts
from skinlesion.promotion.gate import GateError, choose_challenger, compare, verdict
from tests.conftest import ROOT

pytestmark = pytest.mark.code
RNG = np.random.default_rng(0)
Y = np.arange(700) % 7
LESIONS = np.array([f"L{i // 2}" for i in range(700)])  # two images per lesion


def GateSettings(**changes) -> PromotionSettings:
    """params.yaml's promote section with ``changes``."""
    return load_params(ROOT / "params.yaml").promote.model_copy(update=changes)


def _predictions(share_right: float, seed: int) -> np.ndarray:
    right = np.random.default_rng(seed).random(len(Y)) < share_right
    return np.where(right, Y, (Y + 1) % 7)


def test_count_metrics_match_sklearn():
    pred = _predictions(0.6, 1)
    total, (correct,) = lesion_counts(Y, [pred == Y], LESIONS)
    ours = balanced_accuracy(total.sum(axis=0), correct.sum(axis=0))
    assert ours == pytest.approx(balanced_accuracy_score(Y, pred))


def test_the_same_model_never_wins_and_a_clearly_better_one_does():
    settings = GateSettings()
    same = compare(Y, _predictions(0.6, 1), _predictions(0.6, 1), LESIONS, settings)
    assert same.difference == 0 and same.interval == [0.0, 0.0]
    assert not verdict(same, settings)[0]
    better = compare(Y, _predictions(0.8, 2), _predictions(0.6, 1), LESIONS, settings)
    assert better.interval[0] > 0 and verdict(better, settings)[0]
    assert better.n_lesions == 350 and better.n_images == 700


def test_a_small_point_gain_is_not_enough():
    """A model that gets 40 images newly right and 33 newly wrong is one point better on
    this split by luck; a model right on strictly more images is better for sure."""
    settings = GateSettings()
    old = _predictions(0.6, 1)
    new = old.copy()
    gained, lost = np.flatnonzero(old != Y)[:40], np.flatnonzero(old == Y)[:33]
    new[gained], new[lost] = Y[gained], (Y[lost] + 1) % 7
    comparison = compare(Y, new, old, LESIONS, settings)
    assert comparison.difference > 0 and comparison.interval[0] <= 0
    wins, reason = verdict(comparison, settings)
    assert not wins and "lower end must exceed" in reason
    strictly = old.copy()
    strictly[gained[:7]] = Y[gained[:7]]
    assert compare(Y, strictly, old, LESIONS, settings).interval[0] > 0


def test_min_improvement_and_the_melanoma_guard():
    better = compare(Y, _predictions(0.8, 2), _predictions(0.6, 1), LESIONS, GateSettings())
    assert not verdict(better, GateSettings(min_improvement=0.5))[0]
    worse_mel = _predictions(0.8, 2)
    worse_mel[Y == 4] = 0  # melanoma never found
    guarded = compare(Y, worse_mel, _predictions(0.6, 1), LESIONS, GateSettings())
    wins, reason = verdict(guarded, GateSettings())
    assert not wins and "melanoma guard rail" in reason


def test_too_few_lesions_are_refused():
    with pytest.raises(GateError, match="only 5 test lesions"):
        compare(Y[:10], Y[:10], Y[:10], LESIONS[:10], GateSettings(min_gate_lesions=30))


def test_challenger_is_chosen_on_validation():
    reports = {
        "cnn": {"val_balanced_accuracy": 0.61},
        "resnet152v2": {"val_balanced_accuracy": 0.58},
        "broken": {},
    }
    assert choose_challenger(reports, GateSettings()) == "cnn"
    assert (
        choose_challenger(
            {"a": {"val_mel_recall": 0.5}, "b": {"val_mel_recall": 0.7}},
            GateSettings(primary_metric="melanoma_sensitivity"),
        )
        == "b"
    )
    with pytest.raises(GateError, match="no new model reports"):
        choose_challenger({"broken": {}}, GateSettings())
