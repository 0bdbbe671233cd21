"""Steps 1 to 4 as one sub-pipeline, the same in the training and the tuning pipeline:
fetch the raw data, validate it, split it by lesion and oversample the training part.

Why a sub-pipeline: both pipelines must prepare data the same way (a change to one is a
change to both), and the KFP UI shows it as one node that opens onto its four steps.
"""

from typing import Any, NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import Dataset

from components import step_title
from components.fetch_data.component import fetch_data
from components.oversample.component import oversample
from components.split.component import split
from components.validate.component import validate
from pipelines.tasks import secrets, step
from skinlesion.config.operations import ClusterSettings


class Prepared(NamedTuple):
    raw_data: Dataset
    manifest: Dataset
    training_manifest: Dataset


def build_data_preparation(cluster: ClusterSettings) -> Any:
    """The sub-pipeline, its tasks placed as ``cluster`` says."""

    @dsl.pipeline(name="prepare-data")
    def prepare_data(
        data_uri: str,
        data_version: str,
        data_section: str,
        validate_section: str,
        split_section: str,
        oversample_section: str,
    ) -> Prepared:
        """1. Fetch data: copy raw HAM10000 from `data_uri` (an S3 prefix or a PVC folder)
           and record its version; a pinned `data_version` that is not there fails here.
        2. Validate data with Great Expectations; invalid data fails the run here.
        3. Split by lesion (a stable, seeded hash per lesion); a leak fails the run.
        4. Oversample the training part only.
        """
        fetch = fetch_data(data_uri=data_uri, data_version=data_version)
        step(fetch, step_title("fetch_data"), cluster, retry=True, cache=False)
        secrets(fetch, cluster, "s3")
        if cluster.data_pvc:
            kubernetes.mount_pvc(
                fetch, pvc_name=cluster.data_pvc.name, mount_path=cluster.data_pvc.mount_path
            )
        raw = fetch.outputs["raw_data"]
        checked = validate(raw_data=raw, data=data_section, validate=validate_section)
        step(checked, step_title("validate"), cluster)
        splitting = split(raw_data=raw, data=data_section, split=split_section).after(checked)
        step(splitting, step_title("split"), cluster)
        manifest = splitting.outputs["manifest"]
        resampled = oversample(manifest=manifest, oversample=oversample_section)
        step(resampled, step_title("oversample"), cluster)
        return Prepared(
            raw_data=raw,
            manifest=manifest,
            training_manifest=resampled.outputs["training_manifest"],
        )

    return prepare_data


def prepare(prepare_data: Any, data_uri: Any, data_version: Any, sections: Any) -> Any:
    """The task of ``prepare_data`` (built by :func:`build_data_preparation` before the
    pipeline that runs it: KFP defines no pipeline inside another) in a pipeline, fed by
    the read-params step's ``sections``."""
    task = prepare_data(
        data_uri=data_uri,
        data_version=data_version,
        data_section=sections["data"],
        validate_section=sections["validate"],
        split_section=sections["split"],
        oversample_section=sections["oversample"],
    )
    return task.set_display_name("1-4. Prepare data")
