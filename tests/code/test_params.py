"""params.yaml handling shared by DVC, the CLI and the Kubeflow pipeline: one typed
model that refuses a misspelt key, a wrong type or an out-of-range value by its path."""

from __future__ import annotations

import copy
import json

import pytest
from typer.testing import CliRunner

from skinlesion.cli.main import command_line
from skinlesion.config.files import ParamsError, from_pipeline, pipeline_sections, set_dotted
from skinlesion.config.parse import for_cluster, parse_params
from skinlesion.config.schema import RECIPE_SETTINGS, deep_merge
from skinlesion.training.recipes import RECIPES

pytestmark = pytest.mark.code
app = command_line()


def test_deep_merge_keeps_what_overrides_do_not_name():
    base = {"train": {"cnn": {"epochs": 25, "lr": 0.002}, "seed": 42}}
    merged = deep_merge(base, {"train": {"cnn": {"epochs": 60}}})
    assert merged == {"train": {"cnn": {"epochs": 60, "lr": 0.002}, "seed": 42}}
    assert base["train"]["cnn"]["epochs"] == 25  # the input is not changed


def test_the_cluster_profile_is_merged_over_the_stages(params):
    run = for_cluster(parse_params(params))
    assert run.train.model("resnet152v2").weights == "imagenet"
    assert run.input.image_size == params["cluster"]["overrides"]["input"]["image_size"]
    assert run.raw()["evaluate"] == params["evaluate"]


def test_set_dotted_parses_values_as_yaml(params):
    changed = set_dotted(params, "train.cnn.filters=[8, 16]")
    assert changed["train"]["cnn"]["filters"] == [8, 16]
    assert set_dotted(params, "evaluate.tta=true")["evaluate"]["tta"] is True
    with pytest.raises(ParamsError, match="not a section"):
        set_dotted(params, "train.seed.x=1")


def test_a_step_holds_only_the_sections_it_is_given(params):
    """What a pipeline step gets: the sections it reads, each validated as in params.yaml;
    reading another one fails, and so does hashing what is only a part."""
    sections = pipeline_sections(json.dumps(params))
    assert set(sections) >= {"data", "train", "tune", "params_hash"}
    assert sections["params_hash"] == parse_params(params).hash()
    step = from_pipeline(data=sections["data"], train=sections["train"])
    assert step.train.model("cnn").epochs == params["train"]["cnn"]["epochs"]
    assert isinstance(step.train.model("cnn").lr, float) and not step.complete
    with pytest.raises(AttributeError):
        step.split  # noqa: B018 (the read is the test)
    with pytest.raises(ParamsError, match="only some sections"):
        step.hash()


def test_bad_sections_are_named_by_path():
    with pytest.raises(ParamsError, match=r"train\.seed: missing"):
        from_pipeline(train=json.dumps({"models": ["cnn"]}))
    with pytest.raises(ParamsError, match="pipeline input `data` is not JSON"):
        from_pipeline(data="{not json")
    with pytest.raises(ParamsError, match="weather: unknown section"):
        from_pipeline(weather="{}")


def test_every_recipe_has_its_section_model():
    assert set(RECIPES) == set(RECIPE_SETTINGS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("train", "cnn", "epoch", 3), "train.cnn.epoch: unknown key; allowed: recipe,"),
        (("train", "cnn", "epochs", "many"), "train.cnn.epochs: Input should be a valid integer"),
        (("split", "test_fraction", 1.5), "split.test_fraction: Input should be less than 1"),
        (("promote", "policy", "sometimes"), "promote.policy: Input should be 'auto' or 'manual'"),
        (("train", "seeed", 1), "train.seeed: unknown key; allowed: seed,"),
        (("validate", "min_widht", 3), "validate.min_widht: unknown key; allowed: min_width"),
        (("train", "models", ["cnn", "vit"]), "'vit' has no train.vit section"),
        (("train", "vit", {"epochs": 1}), "train.vit: no recipe named 'vit'; recipes: cnn,"),
    ],
)
def test_a_bad_key_or_value_is_refused_by_its_path(params, change, message):
    *path, key, value = change
    broken = copy.deepcopy(params)
    node = broken
    for part in path:
        node = node[part]
    node[key] = value
    with pytest.raises(ParamsError) as err:
        parse_params(broken)
    assert message in str(err.value)


def test_every_key_must_be_set_in_params_yaml(params):
    """Values live in params.yaml alone: the model has no defaults to fall back on."""
    broken = copy.deepcopy(params)
    del broken["evaluate"]["seed"]
    with pytest.raises(ParamsError, match=r"evaluate\.seed: missing"):
        parse_params(broken)


def test_a_variant_names_its_recipe(params):
    variant = copy.deepcopy(params)
    variant["train"]["cnn_small"] = {**params["train"]["cnn"], "recipe": "cnn", "filters": [8]}
    variant["train"]["models"] = ["cnn_small"]
    variant["train"]["ensembles"] = {}
    typed = parse_params(variant)
    assert typed.train.recipe_of("cnn_small") == "cnn"
    assert typed.train.model("cnn_small").filters == [8]


def test_an_ensemble_of_models_that_are_not_trained_is_refused(params):
    """Its members must be models of train.models: a run cannot build it otherwise."""
    narrowed = copy.deepcopy(params)
    narrowed["train"]["models"] = ["cnn"]
    with pytest.raises(ParamsError, match=r"ensembles\.ensemble\.members"):
        parse_params(narrowed)
    narrowed["train"]["ensembles"] = {}
    assert parse_params(narrowed).train.candidates == ["cnn"]
    assert parse_params(params).train.candidates == ["cnn", "efficientnet_lite", "ensemble"]


def test_the_cli_stops_on_a_misspelt_key_before_any_work(params, tmp_path, synth_dir):
    from tests.helpers import write_params

    broken = copy.deepcopy(params)
    broken["split"]["sed"] = 1
    result = CliRunner().invoke(
        app,
        [
            "split",
            "--out",
            str(tmp_path / "manifest.csv"),
            "--data-dir",
            str(synth_dir),
            "--params",
            str(write_params(broken, tmp_path / "params.yaml")),
        ],
    )
    assert result.exit_code == 1
    assert "split.sed: unknown key; allowed: seed, val_fraction, test_fraction" in result.output
    assert not (tmp_path / "manifest.csv").exists()
