"""The paired comparison of models (skinlesion.evaluation.compare) on predictions whose
differences are known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from skinlesion.config.schema import CompareSettings
from skinlesion.evaluation.compare import (
    ENSEMBLE,
    ComparisonError,
    _weighted_aucs,
    compare_predictions,
    markdown,
    plot,
    predictions_frame,
)
from skinlesion.labels import CLASSES

pytestmark = pytest.mark.code
SETTINGS = CompareSettings(resamples=400, confidence=0.95, seed=0)


def _truth(n_lesions: int = 280, per_lesion: int = 2, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, len(CLASSES), n_lesions)
    return pd.DataFrame(
        {
            "image_id": [f"ISIC_{i:05d}" for i in range(n_lesions * per_lesion)],
            "lesion_id": np.repeat([f"HAM_{i:05d}" for i in range(n_lesions)], per_lesion),
            "dx": np.repeat([CLASSES[c] for c in classes], per_lesion),
        }
    )


def _model(truth: pd.DataFrame, right_lesions: np.ndarray, seed: int) -> pd.DataFrame:
    """Confident and right on the lesions in ``right_lesions``, wrong elsewhere."""
    rng = np.random.default_rng(seed)
    y = truth["dx"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    wrong = (y + 1 + rng.integers(0, len(CLASSES) - 1, len(y))) % len(CLASSES)
    lesion = truth["lesion_id"].str[4:].astype(int).to_numpy()
    pred = np.where(np.isin(lesion, right_lesions), y, wrong)
    probs = np.full((len(y), len(CLASSES)), 0.02)
    probs[np.arange(len(y)), pred] = 0.88
    return predictions_frame(truth, probs)


def test_a_known_difference_lies_in_its_interval_and_mcnemar_sees_it():
    """Model a is right on 80% of lesions, b on the first 60% of those: a - b is 0.2 in
    accuracy by construction (balanced accuracy near that), every discordant image favours
    a, and the interval excludes zero."""
    truth = _truth()
    a = _model(truth, np.arange(224), seed=1)
    b = _model(truth, np.arange(168), seed=2)
    report = compare_predictions({"a": a, "b": b}, SETTINGS)
    [pair] = report["pairs"]
    diff = pair["difference"]["balanced_accuracy"]
    low, high = diff["interval"]
    assert low < diff["value"] < high
    assert low > 0.1 and 0.1 < diff["value"] < 0.3
    assert pair["mcnemar"]["only_second_right"] == 0
    assert pair["mcnemar"]["only_first_right"] == 2 * (224 - 168)
    assert pair["mcnemar"]["p_value"] < 1e-6
    assert report["n_lesions"] == 280 and report["unit"] == "lesion"
    assert set(report["models"]) == {"a", "b", ENSEMBLE}
    recall = report["models"]["a"]["recall"]["mel"]
    assert recall["interval"][0] <= recall["value"] <= recall["interval"][1]


def test_identical_models_differ_by_zero_and_mcnemar_finds_nothing():
    truth = _truth()
    a = _model(truth, np.arange(150), seed=1)
    report = compare_predictions({"a": a, "b": a.copy()}, SETTINGS)
    [pair] = report["pairs"]
    for figure in pair["difference"].values():
        assert figure["value"] == 0 and figure["interval"] == [0.0, 0.0]
    assert pair["mcnemar"]["p_value"] == 1.0


def test_the_weighted_auc_is_sklearns_with_sample_weights():
    rng = np.random.default_rng(3)
    y = rng.integers(0, len(CLASSES), 300)
    scores = np.round(rng.random((300, len(CLASSES))), 2)  # ties on purpose
    weights = rng.integers(0, 3, (2, 300)).astype(float)
    got = _weighted_aucs(y, scores, weights)
    for r in range(2):
        for k in range(len(CLASSES)):
            expected = roc_auc_score(y == k, scores[:, k], sample_weight=weights[r])
            assert got[r, k] == pytest.approx(expected)


def test_models_evaluated_on_other_images_are_refused():
    truth = _truth()
    a = _model(truth, np.arange(100), seed=1)
    with pytest.raises(ComparisonError, match="other images"):
        compare_predictions({"a": a, "b": a.iloc[:-2]}, SETTINGS)
    alone = compare_predictions({"a": a}, SETTINGS)  # one model: its figures, no pairs
    assert list(alone["models"]) == ["a"] and alone["pairs"] == []


def test_markdown_and_plot(tmp_path):
    truth = _truth(n_lesions=60)
    report = compare_predictions(
        {"cnn": _model(truth, np.arange(40), 1), "lite": _model(truth, np.arange(50), 2)},
        SETTINGS,
    )
    text = markdown(report)
    assert "| lite - cnn |" in text or "| cnn - lite |" in text
    assert f"| {ENSEMBLE} |" in text and "| mel |" in text
    assert plot(report, tmp_path / "comparison.png").stat().st_size > 5_000
