"""params.yaml handling shared by DVC, the CLI and the Kubeflow pipeline."""

from __future__ import annotations

import pytest

from skinlesion.params import ParamsError, cluster_params, deep_merge, from_pipeline, set_dotted

pytestmark = pytest.mark.code


def test_deep_merge_keeps_what_overrides_do_not_name():
    base = {"train": {"cnn": {"epochs": 25, "lr": 0.002}, "seed": 42}}
    merged = deep_merge(base, {"train": {"cnn": {"epochs": 60}}})
    assert merged == {"train": {"cnn": {"epochs": 60, "lr": 0.002}, "seed": 42}}
    assert base["train"]["cnn"]["epochs"] == 25  # the input is not changed


def test_cluster_params_apply_the_profile_and_drop_the_cluster_section(params):
    run = cluster_params(params)
    assert "cluster" not in run
    assert run["train"]["resnet152v2"]["weights"] == "imagenet"
    assert run["input"]["image_size"] == params["cluster"]["overrides"]["input"]["image_size"]
    assert run["evaluate"] == params["evaluate"]


def test_set_dotted_parses_values_as_yaml(params):
    changed = set_dotted(params, "train.cnn.filters=[8, 16]")
    assert changed["train"]["cnn"]["filters"] == [8, 16]
    assert set_dotted(params, "evaluate.tta=true")["evaluate"]["tta"] is True
    with pytest.raises(ParamsError, match="not a section"):
        set_dotted(params, "train.seed.x=1")


def test_from_pipeline_restores_whole_numbers():
    # a protobuf Struct carries every number as a double
    received = {"train": {"cnn": {"epochs": 25.0, "lr": 0.002, "filters": [24.0, 48.0]}}}
    assert from_pipeline(received) == {
        "train": {"cnn": {"epochs": 25, "lr": 0.002, "filters": [24, 48]}}
    }
    assert isinstance(from_pipeline(received)["train"]["cnn"]["epochs"], int)
