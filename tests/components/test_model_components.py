"""Unit tests of the model-side KFP components (train, evaluate, compare, promote), each
``python_func`` called directly on the synthetic workspace."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model

from components.check_changes.component import check_changes
from components.collect_reports.component import collect_reports, start_reports
from components.compare.component import compare
from components.evaluate.component import evaluate
from components.promote.component import promote
from components.train.component import train
from skinlesion.labels import CLASSES
from skinlesion.promotion.promote import PromotionError
from tests.helpers import small_params, step_inputs

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def trained(train_workspace: Path, params: dict, tmp_path_factory: pytest.TempPathFactory):
    """The train component's outputs for the CNN (2 epochs), MLflow on a sqlite file."""
    out = tmp_path_factory.mktemp("train_component")
    small = small_params(params, cnn={"epochs": 2})
    small["train"]["ensembles"] = {}  # these tests train one model
    small["train"]["checkpoint_dir"] = str(out / "checkpoints")
    uri = f"sqlite:///{out / 'mlflow.db'}"
    outputs = {
        "model": Model(uri=str(out / "model")),
        "report": Artifact(uri=str(out / "report")),
        "curves": HTML(uri=str(out / "curves.html")),
        "metrics": Metrics(uri=""),
    }
    with pytest.MonkeyPatch.context() as patch:  # the URI must not outlive this module
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        train.python_func(
            model_name="cnn",
            raw_data=Dataset(uri=str(train_workspace / "data")),
            training_manifest=Dataset(uri=str(train_workspace / "train.csv")),
            **step_inputs(small, "data", "validate", "input", "tracking", "train", "params_hash"),
            kfp_run_id="run-unit",
            image="registry.example/skinlesion:abc-gpu",
            **outputs,
        )
    mlflow.set_tracking_uri(None)
    return small, outputs, uri


def test_train_writes_model_report_and_metrics(trained):
    _, outputs, _ = trained
    assert (Path(outputs["model"].path) / "model.keras").is_file()
    assert outputs["model"].metadata["mlflow_model_uri"].startswith("models:/")
    report = json.loads((Path(outputs["report"].path) / "metrics.json").read_text())
    assert report["epochs_run"] == 2
    assert outputs["metrics"].metadata["val_balanced_accuracy"] == pytest.approx(
        report["val_balanced_accuracy"]
    )
    assert "data:image/png;base64," in Path(outputs["curves"].path).read_text()
    run = mlflow.MlflowClient(trained[2]).get_run(report["run_id"])
    assert run.data.tags["kfp.run_id"] == "run-unit"
    assert len(run.data.tags["data.version"]) == 64 and len(run.data.tags["params.hash"]) == 64


def test_check_changes_says_changed_without_a_champion(trained, train_workspace, tmp_path):
    small, _, uri = trained
    mlflow.set_tracking_uri(uri)
    check = Artifact(uri=str(tmp_path / "check.json"))
    answer = check_changes.python_func(
        raw_data=Dataset(uri=str(train_workspace / "data")),
        **step_inputs(small, "data", "tracking", "promote", "params_hash"),
        kfp_run_id="run-unit",
        training_image="registry.example/skinlesion:abc-gpu",
        check=check,
    )
    assert answer == "changed" and "no champion" in check.metadata["reason"]
    current = json.loads(Path(check.path).read_text())["current"]
    assert current["kfp.run_id"] == "run-unit"
    assert current["image"] == "registry.example/skinlesion:abc-gpu"  # what trains, not checks


def test_evaluate_logs_confusion_matrix_roc_and_report(trained, train_workspace, tmp_path):
    small, outputs, _ = trained
    metrics, classification = Metrics(uri=""), ClassificationMetrics(uri="")
    page, folder = HTML(uri=str(tmp_path / "eval.html")), Artifact(uri=str(tmp_path / "eval"))
    evaluate.python_func(
        model_name="cnn",
        model=outputs["model"],
        raw_data=Dataset(uri=str(train_workspace / "data")),
        manifest=Dataset(uri=str(train_workspace / "split.csv")),
        **step_inputs(small, "evaluate"),
        metrics=metrics,
        classification=classification,
        report=page,
        evaluation=folder,
    )
    saved = json.loads((Path(folder.path) / "metrics.json").read_text())
    assert metrics.metadata["balanced_accuracy"] == pytest.approx(saved["balanced_accuracy"])
    assert {f"recall_{c}" for c in CLASSES} <= set(metrics.metadata)
    low, high = saved["ci95"]["balanced_accuracy"]
    assert metrics.metadata["balanced_accuracy_ci95_low"] == pytest.approx(low)
    assert metrics.metadata["balanced_accuracy_ci95_high"] == pytest.approx(high)
    matrix = classification.metadata["confusionMatrix"]
    assert [a["displayName"] for a in matrix["annotationSpecs"]] == list(CLASSES)
    assert sum(map(sum, (r["row"] for r in matrix["rows"]))) == saved["n_images"]
    assert classification.metadata["confidenceMetrics"]  # melanoma ROC points
    assert (Path(folder.path) / "confusion_matrix_normalized.png").is_file()
    predictions = pd.read_csv(Path(folder.path) / "predictions.csv")  # what compare reads
    assert len(predictions) == saved["n_images"] and predictions["lesion_id"].notna().all()
    text = Path(page.path).read_text()
    assert "melanoma sensitivity" in text and "data:image/png;base64," in text


def test_promote_stops_before_the_registry_without_an_evaluation(
    trained, train_workspace, tmp_path
):
    small, outputs, uri = trained
    mlflow.set_tracking_uri(uri)
    small = {
        **small,
        "train": {**small["train"], "models": ["cnn"]},
        "promote": {**small["promote"], "registered_model": "unit-promote"},
    }
    empty = Artifact(uri=str(tmp_path / "no-evaluation"))
    Path(empty.path).mkdir()
    reports = Artifact(uri=str(tmp_path / "reports"))
    start_reports.python_func(
        model_name="cnn", report=outputs["report"], evaluation=empty, reports=reports
    )
    with pytest.raises(PromotionError, match=r"cnn: .*metrics\.json is missing"):
        promote.python_func(
            raw_data=Dataset(uri=str(train_workspace / "data")),
            manifest=Dataset(uri=str(train_workspace / "split.csv")),
            reports=reports,
            **step_inputs(small, "train", "evaluate", "promote", "tracking"),
            decision=Artifact(uri=str(tmp_path / "decision.json")),
        )
    assert not mlflow.MlflowClient().search_registered_models(filter_string="name='unit-promote'")
    assert not (tmp_path / "decision.json").exists()


MODELS = ("cnn", "cnn_small", "resnet152v2")


def test_collect_reports_chains_models_into_the_local_layout(tmp_path):
    """Each link adds one model's two metrics files to what the earlier links gathered:
    the folder promotion reads is laid out like the local reports/."""
    gathered = None
    for name in MODELS:
        report, evaluation = tmp_path / f"{name}-train", tmp_path / f"{name}-eval"
        for folder, value in ((report, "val"), (evaluation, "test")):
            folder.mkdir()
            (folder / "metrics.json").write_text(f'{{"{value}": "{name}"}}')
            (folder / "curves.png").write_bytes(b"png")  # not copied: promotion reads JSON
        (evaluation / "predictions.csv").write_text("image_id\n")
        out = Artifact(uri=str(tmp_path / f"gathered-{name}"))
        own = {"report": Artifact(uri=str(report)), "evaluation": Artifact(uri=str(evaluation))}
        if gathered is None:
            start_reports.python_func(model_name=name, reports=out, **own)
        else:
            collect_reports.python_func(model_name=name, earlier=gathered, reports=out, **own)
        gathered = out
    root = Path(gathered.path)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == sorted(
        [f"{stage}/{name}/metrics.json" for stage in ("eval", "train") for name in MODELS]
        + [f"eval/{name}/predictions.csv" for name in MODELS]
    )
    assert gathered.metadata["models"] == ["cnn", "cnn_small", "resnet152v2"]


def test_compare_reads_the_gathered_predictions_and_logs_differences(tmp_path, params, monkeypatch):
    """Two models' test predictions in the gathered layout: the pair's differences as
    metrics, the Markdown table for the UI, the files, and an MLflow run `compare`."""
    import numpy as np

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from tests.code.test_compare import _model, _truth

    truth = _truth(n_lesions=80)
    reports = tmp_path / "reports"
    for name, right in (("cnn", 40), ("efficientnet_lite", 60)):
        (reports / "eval" / name).mkdir(parents=True)
        _model(truth, np.arange(right), seed=right).to_csv(
            reports / "eval" / name / "predictions.csv", index=False
        )
    small = {
        **params,
        # the two models' predictions only: no ensemble was built here
        "train": {**params["train"], "models": ["cnn", "efficientnet_lite"], "ensembles": {}},
        "compare": {**params["compare"], "resamples": 200},
        "tracking": {"experiment": "unit-compare"},
    }
    metrics, table = Metrics(uri=""), Markdown(uri=str(tmp_path / "table.md"))
    folder = Artifact(uri=str(tmp_path / "comparison"))
    compare.python_func(
        reports=Artifact(uri=str(reports)),
        **step_inputs(small, "train", "compare", "tracking"),
        metrics=metrics,
        table=table,
        comparison=folder,
    )
    key = "cnn-efficientnet_lite balanced_accuracy"
    assert metrics.metadata[key] < 0  # the second model is right on more lesions
    assert "| cnn - efficientnet_lite |" in Path(table.path).read_text()
    assert {p.name for p in Path(folder.path).iterdir()} == {
        "comparison.json",
        "comparison.md",
        "comparison.png",
    }
    [run] = mlflow.search_runs(experiment_names=["unit-compare"], output_format="list")
    assert run.info.run_name == "compare"
    assert run.data.metrics["cnn_minus_efficientnet_lite.balanced_accuracy"] < 0
