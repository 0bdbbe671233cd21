"""`skinlesion evaluate` and `skinlesion predict` on the CNN trained on synthetic data."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from skinlesion.cli.main import command_line
from skinlesion.data.split import read_manifest
from tests.helpers import assert_plot

pytestmark = pytest.mark.model
app = command_line()

DOCUMENTED_KEYS = {
    "n_images",
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "macro_auc",
    "recall",
    "precision",
    "f1",
    "support",
    "melanoma",
    "ece",
    "calibration",
    "confusion_matrix",
    "subgroups",
    "classes",
    "ci95",
}


def test_evaluate_every_row_of_a_folder_writes_documented_json_and_plots(trained_cnn):
    root, _ = trained_cnn
    out = root / "eval_all.json"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            str(root / "models/cnn.keras"),
            "--data-dir",
            str(root / "data"),
            "--out",
            str(out),
            "--plots-dir",
            str(root / "eval_plots"),
            "--params",
            str(root / "params.yaml"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert set(metrics) >= DOCUMENTED_KEYS
    assert metrics["n_images"] == 280
    assert set(metrics["subgroups"]) == {"sex", "age_band", "localization"}
    low, high = metrics["ci95"]["balanced_accuracy"]
    assert low <= metrics["balanced_accuracy"] <= high and metrics["ci95"]["unit"] == "lesion"
    assert len(metrics["confusion_matrix"]) == 7
    for png in ("confusion_matrix", "confusion_matrix_normalized", "roc", "reliability"):
        assert_plot(root / "eval_plots" / f"{png}.png")


def test_evaluate_test_split_with_tta(trained_cnn):
    root, _ = trained_cnn
    out = root / "eval_test.json"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            str(root / "models/cnn.keras"),
            "--data-dir",
            str(root / "data"),
            "--manifest",
            str(root / "split.csv"),
            "--split",
            "test",
            "--tta",
            "--out",
            str(out),
            "--params",
            str(root / "params.yaml"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    test_rows = read_manifest(root / "split.csv").query("split == 'test'")
    assert metrics["tta"] is True and metrics["n_images"] == len(test_rows)


def test_evaluate_missing_model_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            str(tmp_path / "nope.keras"),
            "--data-dir",
            str(tmp_path),
            "--out",
            "x.json",
        ],
    )
    assert result.exit_code == 1
    assert "model file not found" in result.output or "no HAM10000 metadata" in result.output


def test_predict_gives_probabilities_and_gradcam(trained_cnn):
    root, _ = trained_cnn
    image = root / "data/images/ISIC_0000001.jpg"
    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(image),
            "--model",
            str(root / "models/cnn.keras"),
            "--gradcam-dir",
            str(root / "cam"),
            "--params",
            str(root / "params.yaml"),
        ],
    )
    assert result.exit_code == 0, result.output
    entry = json.loads(result.output.strip().splitlines()[-1])
    assert abs(sum(entry["probabilities"].values()) - 1) < 1e-3
    assert entry["prediction"] in entry["probabilities"]
    assert_plot(root / "cam/ISIC_0000001.png", min_side=32)


def test_predict_missing_image_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "none.jpg")])
    assert result.exit_code == 1 and "image(s) not found" in result.output


def test_predict_uses_patient_metadata_and_refuses_unknown_values(trained_cnn):
    root, _ = trained_cnn
    base = [
        "predict",
        str(root / "data/images/ISIC_0000001.jpg"),
        "--model",
        str(root / "models/cnn.keras"),
        "--params",
        str(root / "params.yaml"),
    ]
    runs = {
        who: CliRunner().invoke(app, base + list(args))
        for who, args in {
            "unknown": (),
            "young back": ("--age", "25", "--sex", "female", "--site", "back"),
            "old face": ("--age", "80", "--sex", "male", "--site", "face"),
        }.items()
    }
    probs = {}
    for who, result in runs.items():
        assert result.exit_code == 0, result.output
        probs[who] = json.loads(result.output.strip().splitlines()[-1])["probabilities"]
    assert probs["young back"] != probs["old face"]  # the model reads the metadata
    bad = CliRunner().invoke(app, [*base, "--site", "elbow"])
    assert bad.exit_code == 1 and "unknown --site 'elbow'" in bad.output
