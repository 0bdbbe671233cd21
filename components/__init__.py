"""Kubeflow Pipelines v2 components: one per step of the flow, each a thin adapter from
typed artifacts to the `skinlesion` library (the code that the DVC stages run too).

Every component imports the library inside its body (KFP ships only the function's
source to the container) and runs in the project's image, which has the package
installed. ``PLACEHOLDER_IMAGE`` is what a component says on its own; the pipeline sets
each task's image from ``params.yaml`` (``cluster.images``), as `make images` pushed it.
"""

PLACEHOLDER_IMAGE = "skinlesion"

# The one numbering of the project's steps, by component folder: the pipelines' display
# names, their docstrings, each component's docstring and README, and the library modules
# that implement a step all use it (tests/code/test_pipeline_spec.py keeps them in step).
# Steps 1-4 are one sub-pipeline (pipelines/data_preparation.py) of both pipelines; the
# tuning pipeline runs 0-4, then its own 11 to 13, and can run 7 to 10; the batch-scoring
# pipeline runs 0 and 14; the monitoring pipeline runs 0 and 15, then (when it retrains on
# drift) the training pipeline's 0 to 10. Step 16 (ensembles) came later: it runs after
# step 7 and before the ensembles' own 8.
STEPS: dict[str, tuple[int, str]] = {
    "read_params": (0, "Read params"),
    "fetch_data": (1, "Fetch data"),
    "validate": (2, "Validate data"),
    "split": (3, "Split by lesion"),
    "oversample": (4, "Oversample training part"),
    "check_changes": (5, "Check for changes"),
    "eda": (6, "Explore data"),
    "train": (7, "Train"),
    "evaluate": (8, "Evaluate"),
    "collect_reports": (8, "Collect reports of"),
    "compare": (9, "Compare models"),
    "promote": (10, "Promote in MLflow"),
    "open_study": (11, "Open the study"),
    "tune_trials": (12, "Trials, worker"),
    "best_params": (13, "Pick the best on validation"),
    "score": (14, "Score a batch"),
    "monitor": (15, "Monitor served traffic"),
    "ensemble": (16, "Build ensemble"),
}


def step_title(component: str, suffix: object = "") -> str:
    """The display name of a task of ``component``: its number and title, then ``suffix``
    (the model, or the worker's index) when one task per model or worker runs."""
    number, title = STEPS[component]
    return f"{number}. {title} {suffix}".rstrip()
