"""Post-hoc calibration on synthetic probabilities: the fitted temperature is the one that
made them, vector scaling keeps balanced decisions, the scaling folded into a softmax
layer gives the same probabilities, and the reliability can undo it."""

from __future__ import annotations

import numpy as np
import pytest

from skinlesion.model.confidence import (
    LogitScaling,
    cross_fitted,
    expected_calibration_error,
    fit_scaling,
    log_probs_of,
    softmax,
)

pytestmark = pytest.mark.code
K = 7


def _overconfident(temperature: float, n: int = 4000, seed: int = 0):
    """Labels drawn from softmax(z), probabilities reported as softmax(temperature * z):
    calibrated exactly by dividing the logits by ``temperature``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, K))
    truth = softmax(z)
    y = np.array([rng.choice(K, p=p) for p in truth])
    return softmax(temperature * z), y, np.arange(n).astype(str)


def test_temperature_recovers_the_divisor_and_lowers_the_ece():
    probs, y, _ = _overconfident(2.0)
    scaling = fit_scaling(probs, y, "temperature")
    assert scaling.temperature == pytest.approx(2.0, rel=0.1)
    calibrated = scaling.apply(log_probs_of(probs))
    assert (calibrated.argmax(1) == probs.argmax(1)).all()  # decisions kept
    before = expected_calibration_error(probs, y, 15)[0]
    after = expected_calibration_error(calibrated, y, 15)[0]
    assert after < before / 3


def test_none_is_the_identity_and_vector_fits_a_scale_and_shift_per_class():
    probs, y, _ = _overconfident(2.0, seed=1)
    identity = fit_scaling(probs, y, "none")
    np.testing.assert_allclose(identity.apply(log_probs_of(probs)), probs, atol=1e-9)
    vector = fit_scaling(probs, y, "vector")
    assert vector.scale.shape == vector.shift.shape == (K,)
    assert np.all(vector.scale < 1)  # every class's logits shrunk, as the data needs
    calibrated = vector.apply(log_probs_of(probs))
    assert (
        expected_calibration_error(calibrated, y, 15)[0]
        < expected_calibration_error(probs, y, 15)[0]
    )


def test_cross_fitted_figures_judge_each_kind_on_lesions_it_was_not_fitted_on():
    probs, y, groups = _overconfident(2.0, n=2000, seed=2)
    figures = cross_fitted(probs, y, groups, 15, seed=0)
    assert set(figures) == {
        f"{kind}_{what}"
        for kind in ("none", "temperature", "vector")
        for what in ("ece", "nll", "balanced_accuracy")
    }
    assert figures["temperature_ece"] < figures["none_ece"]
    assert figures["temperature_nll"] < figures["none_nll"]


def test_scaling_folded_into_the_softmax_layer_and_undone_by_the_reliability():
    import keras

    from skinlesion.data.contract import InputContract
    from skinlesion.model.networks import scale_logits, shift_decisions
    from skinlesion.model.ood import FeatureDistance
    from skinlesion.model.reliability import Reliability

    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(K, activation="softmax", name="probs")(inputs))
    x = np.random.default_rng(3).normal(size=(20, 5)).astype("float32")
    own = model.predict(x, verbose=0)
    scaling = LogitScaling(np.full(K, 0.5), np.linspace(-0.3, 0.3, K))
    offsets = np.zeros(K)
    offsets[4] = 0.7
    scale_logits(model, scaling.scale, scaling.shift)
    shift_decisions(model, offsets.tolist())
    saved = model.predict(x, verbose=0)
    expected = softmax(scaling.scale * log_probs_of(own) + scaling.shift + offsets)
    np.testing.assert_allclose(saved, expected, atol=1e-5)
    reliability = Reliability(
        alpha=0.1,
        cal_scores=np.zeros(1),
        cal_labels=np.zeros(1, dtype=int),
        distance=FeatureDistance(np.zeros((K, 1)), np.ones((1, 1))),
        ood_threshold=1.0,
        refer_melanoma=True,
        contract=InputContract(1, 1),
        invalid_input="refuse",
        feature_layer="f",
        calibration_scale=tuple(scaling.scale),
        calibration_shift=tuple(scaling.shift),
        decision_offsets=tuple(offsets),
    )
    np.testing.assert_allclose(reliability.uncalibrated(saved), own, atol=1e-5)
    np.testing.assert_allclose(
        reliability.without_offsets(saved), scaling.apply(log_probs_of(own)), atol=1e-5
    )
