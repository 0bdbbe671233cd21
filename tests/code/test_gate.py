"""The promotion gate's policy, on labels and predictions alone (no registry)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from skinlesion.config.files import load_params
from skinlesion.config.schema import PromotionSettings
from skinlesion.evaluation.resampling import balanced_accuracy, lesion_counts
from skinlesion.promotion.gate import Answers, GateError, choose_challenger, compare, verdict
from tests.helpers import ROOT

pytestmark = pytest.mark.code
RNG = np.random.default_rng(0)
Y = np.arange(700) % 7
LESIONS = np.array([f"L{i // 2}" for i in range(700)])  # two images per lesion


def GateSettings(**changes) -> PromotionSettings:
    """params.yaml's promote section, judged on balanced accuracy, with ``changes``."""
    promote = load_params(ROOT / "params.yaml").promote
    return promote.model_copy(update={"primary_metric": "balanced_accuracy", **changes})


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


def _answers(refer_share: float, singles: float, seed: int) -> Answers:
    """Answers whose referrals and single-class sets have the given shares."""
    rng = np.random.default_rng(seed)
    refer = rng.random(len(Y)) < refer_share
    sets = np.zeros((len(Y), 7), dtype=bool)
    sets[np.arange(len(Y)), Y] = True
    wide = rng.random(len(Y)) >= singles
    sets[wide, (Y[wide] + 1) % 7] = True
    return Answers(Y.copy(), sets, 0.1, refer, rng.random(len(Y)))


def test_a_lower_refer_rate_wins_and_a_higher_one_does_not():
    settings = GateSettings(primary_metric="refer_rate")
    fewer, more = _answers(0.5, 0.5, 1), _answers(0.8, 0.5, 2)
    won = compare(Y, fewer, more, LESIONS, settings)
    assert won.challenger == pytest.approx(fewer.refer.mean())
    assert won.difference == pytest.approx(more.refer.mean() - fewer.refer.mean())
    assert verdict(won, settings)[0] and "reduction" in won.describe()
    assert not verdict(compare(Y, more, fewer, LESIONS, settings), settings)[0]
    with pytest.raises(GateError, match="prediction sets"):
        compare(Y, Y, Y, LESIONS, settings)


def test_single_class_share_counts_sets_of_one():
    settings = GateSettings(primary_metric="single_class_share")
    wider, narrower = _answers(0.5, 0.3, 3), _answers(0.5, 0.7, 4)
    result = compare(Y, narrower, wider, LESIONS, settings)
    assert result.challenger == pytest.approx((narrower.sets.sum(axis=1) == 1).mean())
    assert verdict(result, settings)[0]


def test_melanoma_sensitivity_at_specificity_ranks_by_the_melanoma_score():
    from skinlesion.model.operating_curve import MEL, sensitivity_at

    settings = GateSettings(primary_metric="melanoma_sensitivity_at_specificity")
    mel = Y == MEL
    rng = np.random.default_rng(5)
    good = Answers(Y, mel_scores=np.where(mel, 0.6, 0.4) + 0.3 * rng.random(len(Y)))
    poor = Answers(Y, mel_scores=rng.random(len(Y)))
    result = compare(Y, good, poor, LESIONS, settings)
    probs = np.zeros((len(Y), 7))
    probs[:, MEL] = good.mel_scores
    assert result.challenger == pytest.approx(sensitivity_at(probs, Y, 0.8))
    assert result.challenger > 0.6 > result.champion and verdict(result, settings)[0]


def test_the_challenger_is_chosen_by_the_configured_criterion_on_validation():
    reports = {
        "cnn": {"val_balanced_accuracy": 0.66, "val_refer_rate": 0.80,
                "val_mel_sensitivity_at": {"0.80": 0.70}},
        "ensemble": {"val_balanced_accuracy": 0.64, "val_refer_rate": 0.66,
                     "val_mel_sensitivity_at": {"0.80": 0.78}},
    }  # fmt: skip
    assert choose_challenger(reports, GateSettings()) == "cnn"
    assert choose_challenger(reports, GateSettings(primary_metric="refer_rate")) == "ensemble"
    by_mel = GateSettings(primary_metric="melanoma_sensitivity_at_specificity")
    assert choose_challenger(reports, by_mel) == "ensemble"
