"""Four weeks of unattended retraining against a real `mlflow server`, on synthetic data,
with the steps a scheduled pipeline run takes (the same library calls as its components):

1. the first model becomes champion;
2. nothing changed, so nothing is trained or registered;
3. about 15% new lesions arrive: old lesions keep their split, both models retrain, and
   the gate compares on lesions neither model saw;
4. a deliberately worse challenger (one epoch at a tiny learning rate) is not promoted;
then the server stops in the middle of a promotion: the step fails, the registry is as
it was.
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from typing import Any

import mlflow
import pytest

from skinlesion.config.parse import parse_params
from skinlesion.data.oversample import oversample_manifest
from skinlesion.data.split import read_manifest, split_dataset, write_manifest
from skinlesion.data.synth import make_synthetic_dataset
from skinlesion.data.validation import validate_dataset
from skinlesion.evaluation.evaluate import evaluate_model, write_metrics
from skinlesion.promotion.changes import check_for_changes
from skinlesion.promotion.promote import PromotionError, promote_from_reports
from skinlesion.training.lifecycle import train_model
from tests.helpers import free_port, running_mlflow_server, small_params

pytestmark = pytest.mark.model
NAME = "weekly-classifier"


def weekly_run(data: Path, work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """One scheduled run: check for changes, then validate, split, oversample, train and
    evaluate each model, and promote. Returns what the run decided."""
    typed = parse_params(params)
    check = check_for_changes(mlflow.MlflowClient(), NAME, typed, data)
    if not check.changed:
        return {"trained": False, "reason": check.reason}
    report = validate_dataset(data, work / "validation", typed.validate_, typed.data.workers)
    assert report.success, report.describe()
    manifest = split_dataset(data, typed.split, typed.data.workers)
    write_manifest(manifest, work / "split.csv", None)
    oversampled = oversample_manifest(manifest, typed.oversample)
    oversampled.to_csv(work / "train.csv", index=False)
    for model in params["train"]["models"]:
        train_model(
            model,
            work / "train.csv",
            data,
            work / f"{model}.keras",
            work / "reports" / "train" / model,
            typed,
        )
        evaluation = evaluate_model(work / f"{model}.keras", data, typed, work / "split.csv")
        write_metrics(evaluation.metrics, work / "reports" / "eval" / model / "metrics.json")
    decision = promote_from_reports(
        work / "split.csv", data, work / "reports", params["train"]["models"], typed
    )
    return {"trained": True, "data_changes": check.data_changes, **decision}


def _registry() -> tuple[list[int], dict[str, str]]:
    client = mlflow.MlflowClient()
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{NAME}'"))
    return versions, dict(client.get_registered_model(NAME).aliases)


@pytest.mark.extended  # a scenario of steps the suite tests one by one (CI runs it)
def test_four_weeks_of_unattended_retraining(tmp_path, params, monkeypatch, capsys):
    data = tmp_path / "ham10000"
    make_synthetic_dataset(data, n_images=260, seed=11)
    weekly = small_params(params)
    # one model a week: choosing among several is the DVC and kfp.local tests' part
    weekly["train"].update(
        models=["cnn"], ensembles={}, checkpoint_dir=str(tmp_path / "checkpoints")
    )
    weekly["tracking"]["experiment"] = "weekly"
    weekly["promote"].update(registered_model=NAME, min_gate_lesions=10)
    monkeypatch.setenv("SKINLESION_GIT_COMMIT", "c0ffee")  # one image build all month
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.chdir(tmp_path)
    port, store = free_port(), tmp_path / "server"
    store.mkdir()
    server = contextlib.ExitStack()
    url = server.enter_context(running_mlflow_server(store, str(store / "artifacts"), port=port))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    try:
        _four_weeks(data, tmp_path, weekly, server, store, port, monkeypatch, capsys)
    finally:
        server.close()


def _four_weeks(data, tmp_path, weekly, server, store, port, monkeypatch, capsys) -> None:
    log: list[str] = []

    week1 = weekly_run(data, tmp_path / "week1", weekly)
    log.append(f"week 1: {week1['reason']}")
    assert week1["promoted"] and week1["champion_version"] is None
    assert _registry() == (
        [1],
        {"champion": week1["challenger_version"], "challenger": week1["challenger_version"]},
    )

    week2 = weekly_run(data, tmp_path / "week2", weekly)
    log.append(f"week 2: {week2['reason']}")
    assert not week2["trained"] and week2["reason"].startswith("nothing changed since version")
    assert _registry()[0] == [1]

    before = read_manifest(tmp_path / "week1" / "split.csv")
    make_synthetic_dataset(data, n_images=40, seed=12, append=True)  # ~15% new lesions
    week3 = weekly_run(data, tmp_path / "week3", weekly)
    log.append(f"week 3: {week3['reason']}")
    # The gate re-scored the registered champion itself (loaded from the registry): on
    # the new test lesions it scores about what it scored on its own week-1 test part.
    own = tmp_path / "week1" / "reports" / "eval" / week1["challenger"] / "metrics.json"
    week1_score = json.loads(own.read_text())["balanced_accuracy"]
    assert week1_score > 0.3  # twice chance: the tiny CPU-trained model varies run to run
    assert week3["comparison"]["champion"] > 0.7 * week1_score
    after = read_manifest(tmp_path / "week3" / "split.csv").set_index("image_id")
    assert (after.loc[before["image_id"], "split"].to_numpy() == before["split"]).all()
    new_lesions = set(after["lesion_id"]) - set(before["lesion_id"])
    assert 0.1 < len(new_lesions) / before["lesion_id"].nunique() < 0.25
    assert week3["trained"] and week3["champion_version"] is not None
    test_lesions = after[after["split"] == "test"]["lesion_id"].nunique()
    assert week3["comparison"]["n_lesions"] == test_lesions  # all unseen by both models
    assert week3["excluded_lesions"] == 0 and "neither model saw" in week3["reason"]
    # what changed in the data since the champion's training, from its logged listing
    assert "40 labelled images added, 0 removed, 0 changed" in week3["data_changes"]
    log.append(f"week 3 data: {week3['data_changes'].splitlines()[0]}")
    assert _registry()[0] == [1, 2]

    worse = copy.deepcopy(weekly)
    worse["train"]["cnn"].update(epochs=1, lr=1e-5)
    champion_before = _registry()[1]["champion"]
    week4 = weekly_run(data, tmp_path / "week4", worse)
    log.append(f"week 4: {week4['reason']}")
    assert not week4["promoted"] and week4["reason"].startswith("champion stays")
    assert _registry()[1]["champion"] == champion_before

    # The server goes away while the champion is being fetched for the gate.
    state = _registry()
    import skinlesion.model.loading as loading

    original = loading.load_model

    def load_during_outage(reference: Any) -> Any:
        if str(reference).startswith(f"models:/{NAME}/"):
            server.close()  # the MLflow server stops
        return original(reference)

    monkeypatch.setattr(loading, "load_model", load_during_outage)
    worse["train"]["cnn"]["lr"] = 2e-5  # something changed: a new run starts
    with pytest.raises(PromotionError, match="registry is unchanged"):
        weekly_run(data, tmp_path / "week5", worse)
    log.append("week 5: the MLflow server stopped mid-promotion: the run failed")
    monkeypatch.setattr(loading, "load_model", original)
    with running_mlflow_server(store, str(store / "artifacts"), port=port):
        assert _registry()[1] == state[1]
        versions = _registry()[0]
        assert versions == state[0]  # nothing registered by the failed run
        assert not mlflow.MlflowClient().search_registered_models(f"name='{NAME}.promotion-lock'")
    with capsys.disabled():
        print("\n" + "\n".join(log))
