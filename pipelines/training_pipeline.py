"""The training pipeline: the steps of `dvc repro`, as a Kubeflow Pipelines v2 DAG.

The pipeline is built from ``params.yaml``: its ``params`` parameter (JSON text, so that
every number keeps its type) defaults to the stage sections with the ``cluster.overrides``
merged in, and everything Kubernetes needs
(images, resources, GPUs, tolerations, secrets) comes from the ``cluster`` section. No
parameter value is written here.
"""

from typing import Any

from kfp import dsl

from components import step_title
from components.check_changes.component import check_changes
from components.collect_reports.component import collect_reports, start_reports
from components.compare.component import compare
from components.eda.component import eda
from components.ensemble.component import ensemble
from components.evaluate.component import evaluate
from components.promote.component import promote
from components.read_params.component import read_params
from components.train.component import train
from pipelines.data_preparation import build_data_preparation, prepare
from pipelines.tasks import on_gpu_nodes, secrets, step
from skinlesion.config.files import to_pipeline
from skinlesion.config.operations import ClusterSettings
from skinlesion.config.params import Params
from skinlesion.config.parse import for_cluster

PIPELINE_NAME = "skinlesion-training"


def build_pipeline(params: Params, cluster: ClusterSettings | None = None) -> Any:
    """The pipeline function, with its parameter defaults taken from ``params``: one
    training branch per model of ``train.models`` (after the cluster overrides)."""
    cluster = cluster or params.cluster
    run = for_cluster(params)
    models = list(run.train.models)
    ensembles = list(run.train.ensembles)
    prepare_data = build_data_preparation(cluster)

    @dsl.pipeline(name=PIPELINE_NAME)
    def training_pipeline(
        params: str = to_pipeline(run),
        data_uri: str = cluster.data_uri,
        data_version: str = cluster.data_version,
    ):
        """Validate, split by lesion, oversample, train, evaluate, compare and promote HAM10000
        skin-lesion classifiers (the steps of `dvc repro`, with the same library code).

        0. Read params: `params` (JSON text) validated as a whole; each later step gets
           only the sections it reads.
        1. Fetch data: copy raw HAM10000 from `data_uri` (S3 prefix or a PVC folder) and
           record its version; a pinned `data_version` that is not there fails the run.
        2. Validate data with Great Expectations; invalid data fails the run here.
        3. Split by lesion (a stable, seeded hash per lesion); a leak fails the run.
        4. Oversample the training part only.
        5. Check for changes: if data, params, code and image are those of the current
           champion's training, the run ends here ("nothing changed since version N").
        6. Explore the data (EDA report), beside the training branch.
        7. Train each model of `train.models` in parallel, each on a GPU node, tracked in
           MLflow; checkpoints go to S3, so a retried task resumes.
        8. Build each ensemble of `train.ensembles` from its trained members (no
           retraining): its operating point and prediction sets fitted on validation.
        9. Evaluate each model and ensemble on the lesion-disjoint test part (metrics,
           confusion matrix, ROC).
        10. Collect each candidate's training and test reports into one folder.
        11. Compare the models on the same test lesions: paired lesion-bootstrap intervals
            of their differences, McNemar's test, per-class recall, their average.
        12. Promote in the MLflow registry: `challenger` for the candidate best on validation
            by `promote.primary_metric` (by default the fewest referrals),
            `champion` when it beats the current one on test lesions neither model saw
            (paired bootstrap interval of the difference).
        """
        reading = read_params(params=params)
        step(reading, step_title("read_params"), cluster)
        sections = reading.outputs
        prepared = prepare(prepare_data, data_uri, data_version, sections).outputs
        raw, manifest = prepared["raw_data"], prepared["manifest"]
        changes = check_changes(
            raw_data=raw,
            data=sections["data"],
            tracking=sections["tracking"],
            promote=sections["promote"],
            params_hash=sections["params_hash"],
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            training_image=cluster.images["gpu"],
        )
        step(changes, step_title("check_changes"), cluster, retry=True, cache=False)
        secrets(changes, cluster, "mlflow")
        with dsl.If(changes.outputs["Output"] == "changed", name="something-changed"):
            explored = eda(raw_data=raw, manifest=manifest, eda=sections["eda"])
            step(explored, step_title("eda"), cluster)
            collected: Any = None
            # what a training step and an ensemble step both read
            fitted_on = {
                "raw_data": raw,
                "training_manifest": prepared["training_manifest"],
                "data": sections["data"],
                "validate": sections["validate"],
                "tracking": sections["tracking"],
                "train": sections["train"],
                "params_hash": sections["params_hash"],
                "kfp_run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                "image": cluster.images["gpu"],
            }
            for name in models:
                trained = train(model_name=name, input=sections["input"], **fitted_on)
                step(trained, step_title("train", name), cluster, kind="train", retry=True)
                on_gpu_nodes(trained, cluster)
                secrets(trained, cluster, "mlflow", "s3")
                collected = _evaluated(name, trained, raw, manifest, sections, cluster, collected)
            for name in ensembles:
                built = ensemble(model_name=name, reports=collected, **fitted_on)
                step(built, step_title("ensemble", name), cluster, kind="evaluate", retry=True)
                secrets(built, cluster, "mlflow", "s3")
                collected = _evaluated(name, built, raw, manifest, sections, cluster, collected)
            compared = compare(
                reports=collected,
                train=sections["train"],
                compare=sections["compare"],
                tracking=sections["tracking"],
            )
            step(compared, step_title("compare"), cluster)
            secrets(compared, cluster, "mlflow")
            promotion = promote(
                raw_data=raw,
                manifest=manifest,
                reports=collected,
                train=sections["train"],
                evaluate=sections["evaluate"],
                promote=sections["promote"],
                tracking=sections["tracking"],
            )
            step(promotion, step_title("promote"), cluster, retry=True, cache=False)
            secrets(promotion, cluster, "mlflow")

    return training_pipeline


def _evaluated(
    name: str, produced: Any, raw: Any, manifest: Any, sections: Any, cluster: Any, earlier: Any
) -> Any:
    """Step 9 for one model or ensemble: its evaluation on the test part, then its two
    reports added to those gathered so far (what comparison and promotion read)."""
    scored = evaluate(
        model_name=name,
        model=produced.outputs["model"],
        raw_data=raw,
        manifest=manifest,
        evaluate=sections["evaluate"],
    )
    step(scored, step_title("evaluate", name), cluster, kind="evaluate")
    own = {"report": produced.outputs["report"], "evaluation": scored.outputs["evaluation"]}
    gathered = (
        start_reports(model_name=name, **own)
        if earlier is None
        else collect_reports(model_name=name, earlier=earlier, **own)
    )
    step(gathered, step_title("collect_reports", name), cluster)
    return gathered.outputs["reports"]
