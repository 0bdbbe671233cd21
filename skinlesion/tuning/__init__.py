"""Hyperparameter search: an Optuna study whose trials are real trainings judged on
validation (``study``), its space from params.yaml (``space``) and what it found
(``report``)."""
