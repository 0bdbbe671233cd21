"""Kubeflow Pipelines v2 components: one per step of the flow, each a thin adapter from
typed artifacts to the `skinlesion` library (the code that the DVC stages run too).

Every component imports the library inside its body (KFP ships only the function's
source to the container) and runs in the project's image, which has the package
installed. ``PLACEHOLDER_IMAGE`` is what a component says on its own; the pipeline sets
each task's image from ``params.yaml`` (``cluster.images``), as `make images` pushed it.
"""

PLACEHOLDER_IMAGE = "skinlesion"

# The one numbering of the project's steps, by component folder, in the order a training run
# takes them: the pipelines' display names, their docstrings, each component's docstring and
# README, the library modules that implement a step, dvc.yaml's stage order and the docs all
# use it (tests/code/test_pipeline_spec.py and tests/code/test_docs.py keep them in step).
# Steps 1-4 are one sub-pipeline (pipelines/data_preparation.py) of the training and the
# tuning pipeline. The training pipeline runs 0 to 12; the tuning pipeline runs 0-4, then
# 13 to 15, and can run 5 to 12 on the best params; the batch-scoring pipeline runs 0 and 16;
# the monitoring pipeline runs 0 and 17, then (when it retrains on drift) 0 to 12.
STEPS: dict[str, tuple[int, str]] = {
    "read_params": (0, "Read params"),
    "fetch_data": (1, "Fetch data"),
    "validate": (2, "Validate data"),
    "split": (3, "Split by lesion"),
    "oversample": (4, "Oversample training part"),
    "check_changes": (5, "Check for changes"),
    "eda": (6, "Explore data"),
    "train": (7, "Train"),
    "ensemble": (8, "Build ensemble"),
    "evaluate": (9, "Evaluate"),
    "collect_reports": (10, "Collect reports of"),
    "compare": (11, "Compare models"),
    "promote": (12, "Promote in MLflow"),
    "open_study": (13, "Open the study"),
    "tune_trials": (14, "Trials, worker"),
    "best_params": (15, "Pick the best on validation"),
    "score": (16, "Score a batch"),
    "monitor": (17, "Monitor served traffic"),
}


def step_title(component: str, suffix: object = "") -> str:
    """The display name of a task of ``component``: its number and title, then ``suffix``
    (the model, or the worker's index) when one task per model or worker runs."""
    number, title = STEPS[component]
    return f"{number}. {title} {suffix}".rstrip()
