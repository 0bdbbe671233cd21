"""The compiled Kubeflow pipeline: what a cluster would run, read from the YAML that
`skinlesion pipeline compile` writes."""

from __future__ import annotations

import copy
import itertools
import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.client import PIPELINES
from skinlesion.cli.main import command_line
from skinlesion.config.files import STEP_SECTIONS
from skinlesion.config.parse import parse_params
from tests.helpers import ROOT

pytestmark = pytest.mark.code

STEPS = [
    "0. Read params",
    "1. Fetch data",
    "2. Validate data",
    "3. Split by lesion",
    "4. Oversample training part",
    "5. Check for changes",
    "6. Explore data",
    "7. Train cnn",
    "7. Train efficientnet_lite",
    "7. Train resnet152v2",
    "9. Evaluate cnn",
    "9. Evaluate efficientnet_lite",
    "9. Evaluate resnet152v2",
    "10. Collect reports of cnn",
    "10. Collect reports of efficientnet_lite",
    "10. Collect reports of resnet152v2",
    "8. Build ensemble ensemble",
    "9. Evaluate ensemble",
    "10. Collect reports of ensemble",
    "11. Compare models",
    "12. Promote in MLflow",
]


def _compile(out: Path, *options: str) -> tuple[dict, dict]:
    """(pipeline spec, kubernetes executors) of `skinlesion pipeline compile`."""
    result = CliRunner().invoke(
        command_line(),
        ["pipeline", "compile", "--out", str(out), "--params", str(ROOT / "params.yaml"), *options],
    )
    assert result.exit_code == 0, result.output
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict, dict]:
    """The training pipeline, compiled by the CLI with a GPU image of its own."""
    out = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    return _compile(out, "--gpu-image", "registry.example/skinlesion:abc-gpu")


def _tasks(spec: dict) -> dict[str, dict]:
    """Every task, in the root DAG and in the DAGs of conditions (dsl.If)."""
    dags = [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]
    return {
        name: task
        for dag in dags
        for name, task in dag["tasks"].items()
        if "dag" not in spec["components"][task["componentRef"]["name"]]
    }


def _by_display_name(spec: dict) -> dict[str, dict]:
    return {t["taskInfo"]["name"]: t for t in _tasks(spec).values()}


def _executor(spec: dict, task: dict) -> dict:
    component = spec["components"][task["componentRef"]["name"]]
    return spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]


def test_every_step_is_a_named_task(compiled):
    spec, _ = compiled
    assert sorted(_by_display_name(spec)) == sorted(STEPS)


def test_training_tasks_request_one_gpu_on_gpu_nodes(compiled, params):
    spec, platform = compiled
    named = _by_display_name(spec)
    for model in ("cnn", "efficientnet_lite", "resnet152v2"):
        task = named[f"7. Train {model}"]
        container = _executor(spec, task)
        accelerator = container["resources"]["accelerator"]
        assert accelerator["resourceType"] == "nvidia.com/gpu"
        assert accelerator["resourceCount"] == "1"
        assert container["image"] == "registry.example/skinlesion:abc-gpu"
        assert (
            container["resources"]["resourceMemoryLimit"]
            == (params["cluster"]["resources"]["train"]["memory"])
        )
        k8s = platform[task["componentRef"]["name"].replace("comp-", "exec-")]
        assert k8s["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert k8s["nodeSelector"]["labels"] == params["cluster"]["gpu_node_selector"]
        secrets = sorted(s["secretName"] for s in k8s["secretAsEnv"])
        assert secrets == ["skinlesion-mlflow", "skinlesion-s3"]  # S3: the checkpoints
        assert task["cachingOptions"]["enableCache"] is True
        assert task["retryPolicy"]["maxRetryCount"] == params["cluster"]["retries"]
    for step in ("2. Validate data", "9. Evaluate cnn"):
        container = _executor(spec, named[step])
        assert "accelerator" not in container["resources"]
        assert container["image"] == params["cluster"]["images"]["cpu"]


def test_secrets_reach_only_the_steps_that_need_them(compiled):
    spec, platform = compiled
    named = _by_display_name(spec)
    secrets = {}
    for step, task in named.items():
        executor = task["componentRef"]["name"].replace("comp-", "exec-")
        secrets[step] = sorted(
            s["secretName"] for s in platform.get(executor, {}).get("secretAsEnv", [])
        )
    assert secrets["1. Fetch data"] == ["skinlesion-s3"]
    assert secrets["5. Check for changes"] == ["skinlesion-mlflow"]
    assert secrets["12. Promote in MLflow"] == ["skinlesion-mlflow"]
    assert secrets["11. Compare models"] == ["skinlesion-mlflow"]  # it logs the comparison
    assert secrets["2. Validate data"] == [] and secrets["9. Evaluate cnn"] == []
    assert secrets["0. Read params"] == []


def test_parameter_defaults_are_params_yaml_with_the_cluster_profile(compiled, params):
    spec, _ = compiled
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    default = json.loads(inputs["params"]["defaultValue"])  # JSON text: types kept
    overridden = dict(_leaves(params["cluster"]["overrides"]))
    assert overridden, "the cluster profile overrides something"
    sent = dict(_leaves(default))
    for path, value in _leaves(params):  # each key: the cluster's value, else params.yaml's
        if path[0] != "cluster" and value is not None:
            assert sent[path] == overridden.get(path, value), path
    assert all(sent[path] == value for path, value in overridden.items())
    assert inputs["data_uri"]["defaultValue"] == params["cluster"]["data_uri"]
    assert inputs["data_version"]["defaultValue"] == params["cluster"]["data_version"]
    run = default
    assert run["train"]["resnet152v2"]["weights"] == "imagenet"
    assert run["split"] == params["split"]  # untouched sections are the local ones


def _leaves(tree: dict, prefix: tuple = ()):
    """(key path, value) of every leaf of a nested mapping."""
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def test_external_side_effects_are_not_cached(compiled):
    spec, _ = compiled
    named = _by_display_name(spec)
    assert named["1. Fetch data"]["cachingOptions"] == {}  # data at a URI can change
    assert named["5. Check for changes"]["cachingOptions"] == {}  # the registry can change
    assert named["12. Promote in MLflow"]["cachingOptions"] == {}
    assert named["3. Split by lesion"]["cachingOptions"]["enableCache"] is True


def test_the_pipeline_description_numbers_the_steps(compiled):
    spec, _ = compiled
    description = spec["pipelineInfo"]["description"]
    listed = [int(n) for n in re.findall(r"^\s*(\d+)\. ", description, flags=re.M)]
    assert listed == list(range(13)), description  # steps 0 to 12, each once, in order


def test_training_runs_only_when_something_changed(compiled):
    """Everything after the change check sits under one condition on its answer; the
    check and the trainings know the pipeline run's id and the training image."""
    spec, _ = compiled
    root = spec["root"]["dag"]["tasks"]
    [condition] = [t for t in root.values() if "triggerPolicy" in t]
    assert "changed" in condition["triggerPolicy"]["condition"]
    inner = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    after_check = STEPS[STEPS.index("5. Check for changes") + 1 :]
    assert len(inner) == len(after_check)  # eda, and per model train, evaluate, collect
    named = _by_display_name(spec)

    def constant(step: str, name: str) -> str:
        return named[step]["inputs"]["parameters"][name]["runtimeValue"]["constant"]

    for step in ("5. Check for changes", "7. Train cnn"):
        assert constant(step, "kfp_run_id") == "{{$.pipeline_job_uuid}}"
    gpu = "registry.example/skinlesion:abc-gpu"
    assert constant("5. Check for changes", "training_image") == gpu
    assert (
        constant("7. Train cnn", "image") == gpu == _executor(spec, named["7. Train cnn"])["image"]
    )


@pytest.mark.parametrize("models", [["cnn"], ["cnn", "cnn_small", "resnet152v2"]])
def test_one_training_branch_per_model_of_the_list(params, tmp_path, models):
    """Any model list compiles: a branch per model, its reports gathered in a chain that
    promotion reads whole; nothing names the study's two models."""
    changed = copy.deepcopy(params)
    changed["train"]["models"] = models
    changed["train"]["ensembles"] = {}
    del changed["cluster"]["overrides"]["train"]["models"]  # else the cluster's list wins
    changed["train"]["cnn_small"] = {**params["train"]["cnn"], "recipe": "cnn", "epochs": 3}
    out = tmp_path / "pipeline.yaml"
    PIPELINES["training"].compile(parse_params(changed), out)
    spec = next(yaml.safe_load_all(out.read_text()))
    named = _by_display_name(spec)
    for model in models:
        assert {f"7. Train {model}", f"9. Evaluate {model}"} <= set(named)
    key = {task["taskInfo"]["name"]: name for name, task in _tasks(spec).items()}
    chain = [f"10. Collect reports of {m}" for m in models]
    assert "earlier" not in named[chain[0]]["inputs"]["artifacts"]
    for earlier, later in itertools.pairwise(chain):
        source = named[later]["inputs"]["artifacts"]["earlier"]["taskOutputArtifact"]
        assert source == {"producerTask": key[earlier], "outputArtifactKey": "reports"}
    for reader in ("11. Compare models", "12. Promote in MLflow"):  # both read every model
        reports = named[reader]["inputs"]["artifacts"]["reports"]
        assert reports["taskOutputArtifact"]["producerTask"] == key[chain[-1]]
    run = spec["root"]["inputDefinitions"]["parameters"]["params"]["defaultValue"]
    assert json.loads(run)["train"]["models"] == models


def test_a_misspelt_key_stops_compilation_by_name(tmp_path):
    broken = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text().replace("    epochs: 60", "    epoch: 60")
    broken.write_text(text)
    result = CliRunner().invoke(
        command_line(),
        ["pipeline", "compile", "--out", str(tmp_path / "p.yaml"), "--params", str(broken)],
    )
    assert result.exit_code == 1
    assert "train.cnn.epoch: unknown key" in result.output
    assert not (tmp_path / "p.yaml").exists()


@pytest.fixture(scope="module")
def tuning(tmp_path_factory) -> tuple[dict, dict]:
    """The tuning pipeline as `skinlesion pipeline compile --pipeline tuning` writes it."""
    return _compile(tmp_path_factory.mktemp("compiled") / "tuning.yaml", "--pipeline", "tuning")


@pytest.fixture(scope="module")
def scoring(tmp_path_factory) -> tuple[dict, dict]:
    """The batch-scoring pipeline as `skinlesion pipeline compile --pipeline scoring`
    writes it."""
    out = tmp_path_factory.mktemp("compiled") / "scoring.yaml"
    return _compile(out, "--pipeline", "scoring")


def test_the_scoring_pipeline_scores_a_batch_with_the_champion(scoring, params):
    spec, platform = scoring
    named = _root_tasks(spec)
    assert sorted(named) == ["0. Read params", "16. Score a batch"]
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert "defaultValue" not in inputs["source"]  # which images: always given
    assert inputs["model_uri"]["defaultValue"] == params["serve"]["model"]
    task = named["16. Score a batch"]
    assert _secrets(platform, task) == ["skinlesion-mlflow", "skinlesion-s3"]
    assert "accelerator" not in _executor(spec, task)["resources"]
    assert _executor(spec, task)["image"] == params["cluster"]["images"]["cpu"]


def _root_tasks(spec: dict) -> dict[str, dict]:
    return {t["taskInfo"]["name"]: t for t in spec["root"]["dag"]["tasks"].values()}


def _secrets(platform: dict, task: dict) -> list[str]:
    """The Secrets a task's pod gets as environment, by name."""
    executor = platform[task["componentRef"]["name"].replace("comp-", "exec-")]
    return sorted(s["secretName"] for s in executor["secretAsEnv"])


@pytest.fixture(scope="module")
def monitoring(tmp_path_factory) -> tuple[dict, dict]:
    """The monitoring pipeline as params.yaml has it (monitor.on_drift: report)."""
    out = tmp_path_factory.mktemp("compiled") / "monitoring.yaml"
    return _compile(out, "--pipeline", "monitoring")


def test_the_monitoring_pipeline_reports_and_starts_no_training(monitoring, params):
    spec, platform = monitoring
    named = _root_tasks(spec)
    assert sorted(named) == ["0. Read params", "17. Monitor served traffic"]
    assert not [c for c in spec["components"] if c.startswith("comp-train")]
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    cluster_log = params["cluster"]["overrides"]["monitor"]["log_uri"]
    assert inputs["log_uri"]["defaultValue"] == cluster_log  # the serving Deployment's log
    task = named["17. Monitor served traffic"]
    assert _secrets(platform, task) == ["skinlesion-mlflow", "skinlesion-s3"]
    assert task["cachingOptions"] == {}  # a new window each run: never from cache


def test_a_retraining_monitor_trains_only_on_drift(params, tmp_path):
    """With on_drift: retrain, the training pipeline (change check, GPU training, gate)
    is a sub-pipeline under the condition that the monitor said drift."""
    params = copy.deepcopy(params)  # the session's mapping stays params.yaml's
    params["monitor"]["on_drift"] = "retrain"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(
        command_line(),
        ["pipeline", "compile", "--pipeline", "monitoring", "--out", str(tmp_path / "m.yaml"),
         "--params", str(tmp_path / "params.yaml")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    spec, _ = yaml.safe_load_all((tmp_path / "m.yaml").read_text())
    [condition] = [t for t in spec["root"]["dag"]["tasks"].values() if "triggerPolicy" in t]
    assert "drift" in condition["triggerPolicy"]["condition"]
    inner = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    [training] = inner.values()
    assert spec["components"][training["componentRef"]["name"]]["dag"]  # the whole pipeline
    assert any(c.startswith("comp-train") for c in spec["components"])


def test_tuning_workers_each_request_a_gpu_and_share_one_study(tuning, params):
    spec, platform = tuning
    named = _root_tasks(spec)
    workers = [name for name in named if name.startswith("14. Trials, worker")]
    assert len(workers) == params["tune"]["parallel"]
    for name in workers:
        task = named[name]
        resources = _executor(spec, task)["resources"]
        assert resources["accelerator"]["resourceCount"] == "1"
        assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        executor = platform[task["componentRef"]["name"].replace("comp-", "exec-")]
        assert executor["tolerations"] and executor["nodeSelector"]
        secrets = sorted(s["secretName"] for s in executor["secretAsEnv"])
        assert secrets == ["skinlesion-mlflow", "skinlesion-optuna", "skinlesion-s3"]
        study = task["inputs"]["parameters"]["study"]["taskOutputParameter"]
        assert study["producerTask"] == "open-study"  # one study, named once
        assert task["cachingOptions"] == {}  # the study's state lives outside KFP
    pick = named["15. Pick the best on validation"]
    root = spec["root"]["dag"]["tasks"]
    worker_keys = {k for k, t in root.items() if t["taskInfo"]["name"] in workers}
    assert len(worker_keys) == len(workers)
    assert set(pick["dependentTasks"]) >= worker_keys  # picks after every worker ended
    assert "accelerator" not in _executor(spec, pick)["resources"]


def test_tuning_hands_the_best_params_to_the_training_pipeline(tuning, params):
    spec, _ = tuning
    description = spec["pipelineInfo"]["description"]
    for number in ("0", "1-4", "13", "14", "15", "5-12"):
        assert f"\n{number}. " in description
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert inputs["trials"]["defaultValue"] == params["tune"]["trials"]
    assert inputs["train_best"]["defaultValue"] is False
    root = spec["root"]["dag"]["tasks"]
    [condition] = [t for t in root.values() if "triggerPolicy" in t]
    assert "train_best" in condition["triggerPolicy"]["condition"]
    [nested] = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"].values()
    handed = nested["inputs"]["parameters"]["params"]["componentInputParameter"]
    assert handed == "pipelinechannel--best-params-params"  # the pick step's `params`
    into_condition = condition["inputs"]["parameters"][handed]["taskOutputParameter"]
    assert into_condition == {"outputParameterKey": "params", "producerTask": "best-params"}
    training = spec["components"][nested["componentRef"]["name"]]["dag"]["tasks"]
    assert {"read-params", "prepare-data", "check-changes"} <= set(training)  # all of it


def test_one_numbering_of_steps_everywhere(compiled, tuning, scoring, monitoring):
    """Display names, both pipelines' docstrings, each component's docstring and README,
    and the library modules that implement a step give a step the number of STEPS."""
    from components import STEPS

    numbers = [number for number, _ in STEPS.values()]
    assert numbers == list(range(len(STEPS))), "one number per step, in the order runs take"
    stages = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    assert [STEPS[stage][0] for stage in stages] == sorted(STEPS[stage][0] for stage in stages)
    for folder, (number, _) in STEPS.items():
        source = (ROOT / "components" / folder / "component.py").read_text()
        assert source.startswith(f'"""Step {number}'), folder
        readme = (ROOT / "components" / folder / "README.md").read_text().splitlines()[0]
        assert f"step {number}" in readme, (folder, readme)
    for spec, _ in (compiled, tuning, scoring, monitoring):
        description = spec["pipelineInfo"]["description"]
        listed = re.findall(r"^\s*(\d+)\. ", description, flags=re.M)
        assert listed, description
        for name in _root_tasks(spec):
            number, _, title = name.partition(". ")
            if "-" not in number:  # the nested training pipeline: 5-12
                assert any(t[0] == int(number) and title.startswith(t[1]) for t in STEPS.values())
        assert [int(n) for n in listed] == sorted(int(n) for n in listed), description
        assert set(map(int, listed)) <= set(numbers)
    library = {
        "skinlesion/data/validation.py": "validate",
        "skinlesion/data/split.py": "split",
        "skinlesion/data/eda.py": "eda",
        "skinlesion/data/oversample.py": "oversample",
        "skinlesion/training/lifecycle.py": "train",
        "skinlesion/evaluation/evaluate.py": "evaluate",
        "skinlesion/evaluation/compare.py": "compare",
        "skinlesion/promotion/promote.py": "promote",
    }
    for file, folder in library.items():
        assert (ROOT / file).read_text().startswith(f'"""Step {STEPS[folder][0]} of the flow')
    for file in (ROOT / "skinlesion").rglob("*.py"):
        assert not re.search(r"\bStage \d", file.read_text()), file


# The params sections each step reads, as its compiled inputs show them.
READS = {
    "read-params": {"params"},
    "validate": {"data", "validate"},
    "split": {"data", "split"},
    "oversample": {"oversample"},
    "check-changes": {"data", "tracking", "promote", "params_hash"},
    "eda": {"eda"},
    "train": {"data", "validate", "input", "tracking", "train", "params_hash"},
    "ensemble": {"data", "validate", "tracking", "train", "params_hash"},
    "evaluate": {"evaluate"},
    "compare": {"train", "compare", "tracking"},
    "promote": {"train", "evaluate", "promote", "tracking"},
    "open-study": {"tune", "train", "input", "tracking"},
    "tune-trials": {"tune", "train", "input", "data", "validate", "tracking", "params_hash"},
    "best-params": {"params"},  # it hands the whole params, best values in, to training
    "score": {"tracking"},
    "monitor": {"monitor"},
}
SECTION_NAMES = {"params", *STEP_SECTIONS}


def test_a_compiled_step_receives_only_the_sections_it_reads(compiled, tuning, scoring, monitoring):
    """As the DVC stages declare params: no step but the first sees the whole params."""
    for spec, _ in (compiled, tuning, scoring, monitoring):
        for name, component in spec["components"].items():
            if "executorLabel" not in component:
                continue  # a sub-pipeline or a condition: what it passes on, not reads
            kind = name.removeprefix("comp-").rsplit("-", 1)
            kind = kind[0] if kind[-1].isdigit() else name.removeprefix("comp-")
            inputs = set(component.get("inputDefinitions", {}).get("parameters", {}))
            if kind in READS:
                assert inputs & SECTION_NAMES == READS[kind], name
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    stepped = ("validate", "split", "eda", "oversample", "train", "evaluate", "compare", "promote")
    for stage in stepped:
        body = stages[stage].get("do", stages[stage])
        declared = {str(p).split(".")[0] for p in body["params"]}
        assert declared <= READS[stage], stage  # DVC reruns a stage on what its step reads


def test_a_float_search_range_stays_continuous_through_the_compiled_pipeline(params, tmp_path):
    """A range written with floats ({low: 1.0, high: 3.0}) is continuous, with ints
    integer: the same locally and in the step that reads the compiled default."""
    from components.read_params.component import read_params
    from skinlesion.config.files import from_pipeline

    changed = copy.deepcopy(params)
    space = changed["tune"]["cnn"]["space"]
    space["train.cnn.dropout"] = {"low": 0.0, "high": 1.0}
    space["train.cnn.convs_per_block"] = {"low": 1, "high": 3}
    space["input.augment.zoom"] = {"low": 0.0, "high": 0.5, "step": 0.25}
    changed["tune"]["cnn"]["space"] = space
    local = parse_params(changed).tune.space("cnn")
    out = tmp_path / "tuning.yaml"
    PIPELINES["tuning"].compile(parse_params(changed), out)
    spec = next(yaml.safe_load_all(out.read_text()))
    sent = spec["root"]["inputDefinitions"]["parameters"]["params"]["defaultValue"]
    remote = from_pipeline(tune=read_params.python_func(params=sent).tune).tune.space("cnn")
    assert remote == local
    assert not remote["train.cnn.dropout"].integer and remote["train.cnn.dropout"].low == 0.0
    assert isinstance(remote["train.cnn.dropout"].low, float)
    assert remote["train.cnn.convs_per_block"].integer
    assert isinstance(remote["input.augment.zoom"].step, float)


def test_read_params_outputs_what_the_library_names(compiled):
    """The outputs written out in read_params' signature are STEP_SECTIONS."""
    from skinlesion.config.files import STEP_SECTIONS

    spec, _ = compiled
    outputs = spec["components"]["comp-read-params"]["outputDefinitions"]["parameters"]
    assert set(outputs) == set(STEP_SECTIONS)
