"""Step 1: bring the raw HAM10000 folder into the run (S3 prefix or a mounted PVC), at
the data version the run pins."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def fetch_data(data_uri: str, data_version: str, raw_data: Output[Dataset]):
    """Copy ``data_uri`` (``s3://bucket/prefix`` or a folder) into ``raw_data`` and record
    its version (``skinlesion.data.versions``). A non-empty ``data_version`` pins it: other
    data at ``data_uri`` fails the task before anything is copied.

    S3 endpoint and credentials come from the environment (the pipeline maps a Kubernetes
    Secret onto it)."""
    from skinlesion.data.publish import fetch_version

    raw_data.metadata["version"] = fetch_version(data_uri, raw_data.path, data_version)
    raw_data.metadata["source"] = data_uri
