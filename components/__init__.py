"""Kubeflow Pipelines v2 components: one per step of the flow, each a thin adapter from
typed artifacts to the `skinlesion` library (the code that the DVC stages run too).

Every component imports the library inside its body (KFP ships only the function's
source to the container) and runs in the project's image, which has the package
installed. ``PLACEHOLDER_IMAGE`` is what a component says on its own; the pipeline sets
each task's image from ``params.yaml`` (``cluster.images``), as `make images` pushed it.
"""

PLACEHOLDER_IMAGE = "skinlesion"
