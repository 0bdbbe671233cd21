"""Step 0: bring the raw HAM10000 folder into the run (S3 prefix or a mounted PVC)."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def fetch_data(data_uri: str, raw_data: Output[Dataset]):
    """Copy ``data_uri`` (``s3://bucket/prefix`` or a folder) into ``raw_data``.

    S3 endpoint and credentials come from the environment (the pipeline maps a Kubernetes
    Secret onto it)."""
    from skinlesion.storage import fetch_dataset

    raw_data.metadata["files"] = fetch_dataset(data_uri, raw_data.path)
    raw_data.metadata["source"] = data_uri
