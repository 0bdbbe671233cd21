"""Kubeflow Pipelines v2 pipelines built from the components in ``components/``."""
