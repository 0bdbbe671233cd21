"""Prediction sets, the out-of-distribution score, referral reasons and the input
contract, on synthetic numbers and images (no model, no TensorFlow)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy.stats import binom

from skinlesion.config.files import load_params
from skinlesion.data.contract import InputContract
from skinlesion.labels import CLASSES
from skinlesion.model.conformal import prediction_sets, true_class_scores
from skinlesion.model.ood import FeatureDistance
from skinlesion.model.reliability import MEL, Reliability
from tests.helpers import ROOT

pytestmark = pytest.mark.code

K = len(CLASSES)


def _draw(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Probabilities of ``n`` images of class ``k`` from one fixed, noisy model: every
    image of a class is exchangeable with every other."""
    logits = rng.normal(size=(n, K))
    logits[:, k] += 1.2
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def test_coverage_per_class_is_within_binomial_bounds():
    """Split conformal promises, per class, P(true class in set) in [1 - a, 1 - a +
    1/(n+1)] over the draw of calibration and test. 2,000 independent repetitions
    (fresh calibration of 30 images per class, one test image per class) give a
    binomial count per class; it must lie within the 99.9% bounds of that promise."""
    rng = np.random.default_rng(0)
    alpha, n_cal, reps = 0.1, 30, 2000
    hits = np.zeros(K, dtype=int)
    for _ in range(reps):
        labels = np.repeat(np.arange(K), n_cal)
        cal = np.concatenate([_draw(rng, n_cal, k) for k in range(K)])
        test = np.concatenate([_draw(rng, 1, k) for k in range(K)])
        sets = prediction_sets(true_class_scores(cal, labels), labels, test, alpha)
        hits += sets[np.arange(K), np.arange(K)]
    low = binom.ppf(0.0005, reps, 1 - alpha)
    high = binom.ppf(0.9995, reps, 1 - alpha + 1 / (n_cal + 1))
    for k, count in enumerate(hits):
        assert low <= count <= high, (CLASSES[k], count / reps)


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2, 0.3])
def test_the_sets_are_crepes_mondrian_sets_to_the_last_tie(alpha):
    """The numpy p-values equal crepes' ConformalClassifier (no smoothing), ties and an
    empty class included: scores on a coarse grid make many calibration ties."""
    from crepes import ConformalClassifier

    rng = np.random.default_rng(int(alpha * 100))
    probs = np.round(rng.dirichlet(np.ones(7), 400), 2)
    labels = rng.choice([0, 1, 2, 3, 4, 5], 400)  # no calibration image of class 6
    cal = true_class_scores(probs, labels)
    test = np.round(rng.dirichlet(np.ones(7), 300), 2)
    ours = prediction_sets(cal, labels, test, alpha)
    fitted = ConformalClassifier().fit(cal, bins=labels)
    for k in range(7):
        theirs = fitted.predict_set(
            1 - test, bins=np.full(len(test), k), confidence=1 - alpha, smoothing=False
        )
        assert (ours[:, k] == theirs[:, k].astype(bool)).all(), k
    assert ours[:, 6].all()


def test_a_class_without_calibration_images_is_never_ruled_out():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2, 4, 5, 6], 40)  # no dermatofibroma
    cal = np.concatenate([_draw(rng, 40, k) for k in (0, 1, 2, 4, 5, 6)])
    sets = prediction_sets(true_class_scores(cal, labels), labels, _draw(rng, 50, 0), 0.1)
    assert sets[:, CLASSES.index("df")].all()
    assert not sets.all()


def test_feature_distance_scores_points_far_from_every_class_high():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, K, 3000)
    features = rng.normal(size=(3000, 40))
    features[:, :K] += 4 * np.eye(K)[labels]
    distance = FeatureDistance.fit(features, labels, K)
    inside = distance.score(features)
    far = distance.score(rng.normal(size=(20, 40)) * 6)
    assert far.min() > np.quantile(inside, 0.99)
    near_class = distance.score(4 * np.eye(K, 40)[:3])  # at a class mean: about 0
    assert near_class.max() < np.quantile(inside, 0.05)


def _reliability(refer_melanoma: bool = True) -> Reliability:
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(K), 60)
    features = rng.normal(size=(len(labels), 8)) + np.eye(K, 8)[labels] * 3
    probs = np.concatenate([_draw(rng, 60, k) for k in range(K)])
    settings = load_params(ROOT / "params.yaml").train.reliability.model_copy(
        update={"refer_melanoma": refer_melanoma}
    )
    return Reliability.fit(
        (features, labels), (features, probs, labels), settings, InputContract(64, 64), "gap"
    )


def test_referral_reasons_name_each_cause():
    reliability = _reliability()
    confident = np.full((1, K), 0.001)
    confident[0, CLASSES.index("nv")] = 1 - 0.001 * (K - 1)
    unsure = np.full((1, K), 1 / K)
    centre = np.eye(K, 8)[[CLASSES.index("nv")]] * 3
    far = np.full((1, 8), 50.0)
    probs = np.concatenate([confident, unsure, confident])
    features = np.concatenate([centre, centre, far])
    contract = [[], [], ["input contract: image is 1x1 pixels"]]
    assessed = reliability.assess(probs, features, contract)
    assert assessed.prediction_set(0) == ["nv"] and not assessed.refer[0]
    assert assessed.refer[1] and "cannot be ruled out" in assessed.reasons[1]
    assert assessed.refer[2] and "out of distribution" in assessed.reasons[2]
    assert assessed.reasons[2].startswith("input contract: image is 1x1")


def test_melanoma_in_the_set_refers_unless_turned_off():
    mel = np.full((1, K), 0.001)
    mel[0, MEL] = 1 - 0.001 * (K - 1)
    centre = np.eye(K, 8)[[MEL]] * 3
    assert _reliability(True).assess(mel, centre).reasons == ["melanoma cannot be ruled out"]
    assert not _reliability(False).assess(mel, centre).refer[0]


def _bytes(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("image", "fmt", "broken"),
    [
        (Image.new("RGB", (200, 150)), "JPEG", []),
        (Image.new("RGB", (64, 64)), "PNG", []),
        (Image.new("RGB", (1, 1)), "JPEG", ["1x1 pixels, smaller than the 64x64"]),
        (Image.new("RGB", (200, 63)), "PNG", ["200x63 pixels"]),
        (Image.new("L", (200, 150)), "JPEG", ["colour mode is L"]),
        (Image.new("CMYK", (200, 150)), "JPEG", ["colour mode is CMYK"]),
        (Image.new("I;16", (200, 150)), "PNG", ["colour mode is I;16"]),
        (Image.new("RGBA", (200, 150)), "PNG", ["colour mode is RGBA"]),
        (Image.new("L", (8, 8)), "PNG", ["8x8 pixels", "colour mode is L"]),
    ],
)
def test_the_input_contract_reads_the_header(image, fmt, broken):
    found = InputContract(64, 64).check_bytes(_bytes(image, fmt))
    assert len(found) == len(broken)
    for rule, expected in zip(found, broken, strict=True):
        assert expected in rule


def test_bytes_that_are_no_image_are_left_to_the_decoder():
    assert InputContract(64, 64).check_bytes(b"hello") == []
