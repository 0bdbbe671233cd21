"""ResNet152V2 transfer: the weights-file path, the ImageNet path's error, a head that
learns, and phase 2 kept only when it beats phase 1 on validation (one training shows
both)."""

from __future__ import annotations

from pathlib import Path

import keras
import pandas as pd
import pytest

from skinlesion.model.networks import ModelWeightsError, build_backbone
from tests.helpers import train_argmax

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A backbone weights file made here (ImageNet weights cannot be downloaded here):
    the real architecture, seeded weights, saved and loaded through the real code path."""
    keras.utils.set_random_seed(3)
    backbone = build_backbone("none", 32)
    path = tmp_path_factory.mktemp("weights") / "resnet152v2_notop.weights.h5"
    backbone.save_weights(path)
    return path


def test_weights_file_is_loaded(weights_file):
    loaded = build_backbone(str(weights_file), 32)
    original = build_backbone("none", 32)
    original.load_weights(weights_file)
    for a, b in zip(loaded.weights[:5], original.weights[:5], strict=True):
        assert (a.numpy() == b.numpy()).all()


def test_wrong_weights_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "not_weights.h5"
    bad.write_bytes(b"not an h5 file")
    with pytest.raises(ModelWeightsError, match="does not hold ResNet152V2 backbone weights"):
        build_backbone(str(bad), 32)
    with pytest.raises(ModelWeightsError, match="weights file not found"):
        build_backbone(str(tmp_path / "missing.h5"), 32)


def test_failed_imagenet_download_says_how_to_use_a_local_file(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached weights

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: network unreachable")

    monkeypatch.setattr("keras.src.applications.resnet.file_utils.get_file", offline)
    with pytest.raises(ModelWeightsError, match=r"set train\.resnet152v2\.weights to its path"):
        build_backbone("imagenet", 32)


def _train_resnet(workspace: Path, params: dict, tmp_path: Path, **settings):
    return train_argmax(
        workspace, params, tmp_path, "resnet152v2", tmp_path / "r.keras", tmp_path / "report",
        **settings,
    )  # fmt: skip


# A head that learns within seconds on the synthetic set (its classes differ by colour).
HEAD = {"head_epochs": 8, "head_lr": 0.01, "early_stopping_patience": 8}


@pytest.mark.extended  # ResNet's training path runs in the suite: test_cluster_profile.py
def test_the_head_learns_and_fine_tuning_that_does_not_help_falls_back_to_it(
    train_workspace, params, weights_file, tmp_path, caplog
):
    """One training from a weights file: the head on the frozen backbone learns (phase 1),
    then phase 2 at a learning rate that wrecks the weights: validation says it did not
    beat the head, so the saved model is the head's (its figures, its predictions)."""
    caplog.set_level("INFO")
    result = _train_resnet(
        train_workspace,
        params,
        tmp_path,
        weights=str(weights_file),
        fine_tune_epochs=1,
        fine_tune_lr=50.0,
        fine_tune_from="conv5_block3",
        **HEAD,
    )
    history = pd.read_csv(tmp_path / "report/history.csv")
    assert len(history) == result.epochs_run >= 2  # both phases ran
    head_best = history["val_balanced_accuracy"].iloc[:-1].max()
    assert history["val_balanced_accuracy"].iloc[-1] < head_best  # fine-tuning hurt
    assert "keeping phase 1" in caplog.text
    assert result.val_balanced_accuracy == pytest.approx(head_best)
    assert head_best > 0.4  # the head learnt: chance is 1/7, the classes differ by colour
    assert keras.models.load_model(tmp_path / "r.keras").output_shape == (None, 7)
