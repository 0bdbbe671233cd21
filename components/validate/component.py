"""Step 2: data validation with Great Expectations; invalid data stops the run here."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def validate(
    raw_data: Input[Dataset],
    data: str,
    validate: str,
    report: Output[HTML],
    data_docs: Output[Artifact],
    summary: Output[Metrics],
):
    """Validate the raw folder (``skinlesion.data.validation``); fail the task when invalid."""
    from pathlib import Path

    from skinlesion.config.files import from_pipeline
    from skinlesion.data.validation import validate_dataset
    from skinlesion.kfp_outputs import write_html

    params = from_pipeline(data=data, validate=validate)
    result = validate_dataset(
        Path(raw_data.path), Path(data_docs.path), params.validate_, params.data.workers
    )
    write_html(report.path, "Data validation", result.describe())
    summary.log_metric("rows", result.n_rows)
    summary.log_metric("expectations", result.n_expectations)
    summary.log_metric("failed_expectations", len(result.failed))
    result.require_valid()
