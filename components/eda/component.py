"""Step 6: exploratory data analysis of the split, as an HTML page in the KFP UI."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Output

from components import PLACEHOLDER_IMAGE


@dsl.component(base_image=PLACEHOLDER_IMAGE, install_kfp_package=False)
def eda(raw_data: Input[Dataset], manifest: Input[Dataset], eda: str, report: Output[HTML]):
    """Class balance, demographics and samples per class (``skinlesion.data.eda``)."""
    import tempfile
    from pathlib import Path

    from skinlesion.config.files import from_pipeline
    from skinlesion.data.eda import run_eda
    from skinlesion.data.split import read_manifest
    from skinlesion.kfp_outputs import write_html

    params = from_pipeline(eda=eda)
    with tempfile.TemporaryDirectory() as out_dir:
        out = Path(out_dir)
        run_eda(read_manifest(manifest.path), Path(raw_data.path), out, params.eda)
        write_html(
            report.path,
            "Exploratory data analysis",
            (out / "summary.md").read_text(encoding="utf-8"),
            out.glob("*.png"),
        )
