"""The search space and its plumbing, without training: dimensions from params.yaml,
trial values into params (validated), the baseline, study names, and `tune apply`."""

from __future__ import annotations

import copy

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from skinlesion.cli.main import command_line
from skinlesion.config.files import read_params
from skinlesion.config.parse import parse_params
from skinlesion.config.schema import ParamsError
from skinlesion.tuning.space import (
    current_values,
    encode,
    suggest,
    with_values,
)
from skinlesion.tuning.study import default_study_name
from tests.helpers import ROOT

pytestmark = pytest.mark.code


def test_every_dimension_of_params_yaml_yields_a_valid_trial(settings):
    space = settings.tune.space("cnn")
    for seed in range(5):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        values = suggest(study.ask(), space)
        trial_params = with_values(settings, values)  # validated like params.yaml
        assert trial_params.train.model("cnn").filters in space["train.cnn.filters"].choices
        low, high = space["train.cnn.lr"].low, space["train.cnn.lr"].high
        assert low <= trial_params.train.model("cnn").lr <= high
        assert trial_params.input.image_size in space["input.image_size"].choices


def test_list_choices_round_trip_through_optuna(settings):
    space = settings.tune.space("cnn")
    filters = [32, 64, 128, 256]
    trial = optuna.trial.FixedTrial(
        {**{k: encode(_first(d)) for k, d in space.items()}, "train.cnn.filters": encode(filters)}
    )
    assert suggest(trial, space)["train.cnn.filters"] == filters


def _first(dim):
    return dim.choices[0] if dim.choices is not None else dim.low


def test_the_baseline_is_the_current_params_or_none_outside_the_space(settings, params):
    baseline = current_values(settings, settings.tune.space("cnn"))
    assert baseline["train.cnn.lr"] == params["train"]["cnn"]["lr"]
    assert baseline["train.cnn.filters"] == encode(params["train"]["cnn"]["filters"])
    outside = copy.deepcopy(params)
    outside["input"]["image_size"] = 32  # not among the choices
    typed = parse_params(outside)
    assert current_values(typed, typed.tune.space("cnn")) is None


def test_trial_values_are_validated_and_trials_get_their_own_checkpoints(settings, tmp_path):
    with pytest.raises(ParamsError, match=r"train\.cnn\.dropout"):
        with_values(settings, {"train.cnn.dropout": 1.5})
    trial = with_values(settings, {"train.cnn.lr": 0.001}, tmp_path / "t1")
    assert trial.train.checkpoint_dir == str(tmp_path / "t1" / "checkpoints")
    assert trial.train.checkpoint_uri == ""  # a dead trial restarts; no S3 mirror clash


@pytest.mark.parametrize(
    ("dimension", "message"),
    [
        ({"low": 1, "high": 0}, "needs low < high"),
        ({"low": 0, "high": 1, "log": True}, "log scale needs low > 0"),
        ({"choices": [1, 2], "low": 0}, "either choices or low and high"),
        ({"choices": []}, "at least 1 item"),
    ],
)
def test_a_bad_dimension_is_refused_by_path(params, dimension, message):
    bad = copy.deepcopy(params)
    bad["tune"]["cnn"]["space"]["train.cnn.lr"] = dimension
    with pytest.raises(ParamsError, match=message) as err:
        parse_params(bad)
    assert "tune.cnn.space.train.cnn.lr" in str(err.value)


def test_a_searched_key_must_exist_and_the_model_must_be_trained(params):
    bad = copy.deepcopy(params)
    bad["tune"]["cnn"]["space"]["train.cnn.learning_rate"] = {"low": 0.1, "high": 1}
    bad["tune"]["vit"] = {"space": {"train.seed": {"choices": [1, 2]}}}
    with pytest.raises(ParamsError) as err:
        parse_params(bad)
    assert "tune.cnn.space.train.cnn.learning_rate: not a key of params.yaml" in str(err.value)
    assert "tune.vit: no train.vit section to tune" in str(err.value)


def test_study_names_continue_for_the_same_params_and_change_with_them(params):
    same = default_study_name(parse_params(params), "cnn")
    assert same == default_study_name(parse_params(copy.deepcopy(params)), "cnn")
    more = copy.deepcopy(params)
    more["tune"]["trials"] = 50  # how long to search: the same study goes on
    assert default_study_name(parse_params(more), "cnn") == same
    other = copy.deepcopy(params)
    other["tune"]["cnn"]["space"]["train.cnn.dropout"]["high"] = 0.6
    assert default_study_name(parse_params(other), "cnn") != same
    data = copy.deepcopy(params)
    data["split"]["seed"] = 7
    assert default_study_name(parse_params(data), "cnn") != same


def test_tune_params_do_not_change_the_params_hash_of_models(params):

    changed = copy.deepcopy(params)
    changed["tune"]["trials"] = 99
    assert parse_params(changed).hash() == parse_params(params).hash()


def test_tune_apply_writes_the_best_values_and_keeps_comments(tmp_path):
    target = tmp_path / "params.yaml"
    target.write_text((ROOT / "params.yaml").read_text())
    best = tmp_path / "best_params.yaml"
    best.write_text("train.cnn.lr: 0.0031\ntrain.cnn.filters: [32, 64, 128, 256]\n")
    result = CliRunner().invoke(
        command_line(), ["tune", "apply", str(best), "--params", str(target)]
    )
    assert result.exit_code == 0, result.output
    assert "train.cnn.lr: 0.002 -> 0.0031" in result.output
    text = target.read_text()
    assert "# Single source of parameters" in text  # comments survive
    assert "filters: [32, 64, 128, 256]" in text  # inline, as written by hand
    applied = read_params(target)
    assert applied["train"]["cnn"]["lr"] == 0.0031
    assert (
        applied["train"]["resnet152v2"] == read_params(ROOT / "params.yaml")["train"]["resnet152v2"]
    )


def test_tune_apply_refuses_a_value_params_refuse(tmp_path):
    target = tmp_path / "params.yaml"
    target.write_text((ROOT / "params.yaml").read_text())
    before = target.read_text()
    best = tmp_path / "best_params.yaml"
    best.write_text(yaml.safe_dump({"train.cnn.dropout": 2.0}))
    result = CliRunner().invoke(
        command_line(), ["tune", "apply", str(best), "--params", str(target)]
    )
    assert result.exit_code == 1 and "train.cnn.dropout" in result.output
    assert target.read_text() == before  # nothing written
