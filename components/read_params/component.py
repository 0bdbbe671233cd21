"""Step 0: the run's params, validated as a whole, handed to each step as the sections it
reads."""

from typing import NamedTuple

from kfp import dsl

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def read_params(
    params: str,
) -> NamedTuple(
    "Sections",
    data=str,
    validate=str,
    split=str,
    eda=str,
    oversample=str,
    input=str,
    tracking=str,
    train=str,
    evaluate=str,
    compare=str,
    promote=str,
    tune=str,
    monitor=str,
    params_hash=str,
):
    """Validate ``params`` (JSON text, so that every number keeps its type) with every
    problem listed before any work (``skinlesion.config.files.pipeline_sections``); each
    output is one section as JSON text, plus ``params_hash``, the hash of the whole that
    provenance records. A step's inputs are then exactly the sections it reads.

    The outputs are written out in the signature because KFP ships only this function's
    source to the container; ``STEP_SECTIONS`` names the same ones (a test keeps them so)."""
    from collections import namedtuple

    from skinlesion.config.files import STEP_SECTIONS, pipeline_sections

    sections = pipeline_sections(params)
    outputs = namedtuple("Sections", STEP_SECTIONS)
    return outputs(**{name: sections[name] for name in STEP_SECTIONS})
