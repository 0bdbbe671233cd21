"""Great Expectations validation: accepts good data, rejects each kind of bad data with a
clear message that names the failed expectation and the offending rows."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from skinlesion.cli.main import command_line
from tests.helpers import ROOT

pytestmark = pytest.mark.data
app = command_line()
PARAMS = str(ROOT / "params.yaml")


def _run_validate(data_dir: Path, report_dir: Path):
    return CliRunner().invoke(
        app,
        [
            "validate",
            "--data-dir",
            str(data_dir),
            "--report-dir",
            str(report_dir),
            "--params",
            PARAMS,
        ],
    )


def _edit_metadata(data_dir: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    path = data_dir / "HAM10000_metadata.csv"
    edit(pd.read_csv(path, dtype=str)).to_csv(path, index=False)


def test_valid_synthetic_data_passes_with_data_docs(synth_dir, tmp_path):
    result = _run_validate(synth_dir, tmp_path)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "validation.json").read_text())
    assert summary["success"] is True and summary["failed"] == []
    assert summary["n_expectations"] >= 20
    assert (tmp_path / summary["data_docs"]).is_file()


def _truncate_jpeg(d: Path) -> None:
    path = d / "images/ISIC_0000003.jpg"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _remove_image(d: Path) -> None:
    (d / "images/ISIC_0000003.jpg").unlink()


def _unknown_label(d: Path) -> None:
    def edit(m: pd.DataFrame) -> pd.DataFrame:
        m.loc[2, "dx"] = "melanoma"
        return m

    _edit_metadata(d, edit)


def _missing_column(d: Path) -> None:
    _edit_metadata(d, lambda m: m.drop(columns=["localization"]))


def _two_diagnoses(d: Path) -> None:
    def edit(m: pd.DataFrame) -> pd.DataFrame:
        lesion = m.groupby("lesion_id").size().idxmax()  # a lesion with several images
        rows = m.index[m["lesion_id"] == lesion]
        m.loc[rows[0], "dx"] = "vasc" if m.loc[rows[0], "dx"] != "vasc" else "nv"
        return m

    _edit_metadata(d, edit)


def _duplicate_image_id(d: Path) -> None:
    def edit(m: pd.DataFrame) -> pd.DataFrame:
        m.loc[5, "image_id"] = m.loc[4, "image_id"]
        return m

    _edit_metadata(d, edit)


def _age_out_of_range(d: Path) -> None:
    def edit(m: pd.DataFrame) -> pd.DataFrame:
        m.loc[2, "age"] = "130"
        return m

    _edit_metadata(d, edit)


def _replace_image(d: Path, image_id: str, mode: str, size: tuple[int, int]) -> None:
    from PIL import Image

    Image.new(mode, size, 128).save(d / f"images/{image_id}.jpg", "JPEG")


def _too_small_image(d: Path) -> None:
    _replace_image(d, "ISIC_0000003", "RGB", (40, 30))


def _greyscale_image(d: Path) -> None:
    _replace_image(d, "ISIC_0000004", "L", (200, 150))


def _many_missing_sexes(d: Path) -> None:
    def edit(m: pd.DataFrame) -> pd.DataFrame:
        m.loc[m.index[: len(m) // 5], "sex"] = None  # 20% missing, 5% tolerated
        return m

    _edit_metadata(d, edit)


def _rare_class(d: Path) -> None:
    def edit(m: pd.DataFrame) -> pd.DataFrame:
        df_lesions = m.loc[m["dx"] == "df", "lesion_id"].unique()
        return m[~m["lesion_id"].isin(df_lesions[1:])]  # one dermatofibroma lesion left

    _edit_metadata(d, edit)


def _unknown_value(column: str, value: str) -> Callable[[Path], None]:
    def breakage(d: Path) -> None:
        def edit(m: pd.DataFrame) -> pd.DataFrame:
            m.loc[6, column] = value
            return m

        _edit_metadata(d, edit)

    return breakage


@pytest.mark.parametrize(
    ("breakage", "expectation", "offender"),
    [
        (_truncate_jpeg, "expect_column_values_to_be_in_set(image_decodable)", "ISIC_0000003"),
        (_remove_image, "expect_column_values_to_be_in_set(image_exists)", "ISIC_0000003"),
        (_unknown_label, "expect_column_values_to_be_in_set(dx)", "melanoma"),
        (_missing_column, "expect_table_columns_to_match_set", "localization"),
        (_two_diagnoses, "expect_column_values_to_be_between(diagnoses_per_lesion)", "ISIC_"),
        (_duplicate_image_id, "expect_column_values_to_be_unique(image_id)", "ISIC_0000005"),
        (_age_out_of_range, "expect_column_values_to_be_between(age_years)", "130"),
        (_too_small_image, "expect_column_values_to_be_between(image_width)", "ISIC_0000003"),
        (_greyscale_image, "expect_column_values_to_be_in_set(image_mode)", "ISIC_0000004"),
        (_many_missing_sexes, "expect_column_values_to_not_be_null(sex)", "ISIC_"),
        (_rare_class, "expect_column_values_to_be_between(images_in_class)", "ISIC_"),
        (_unknown_value("sex", "robot"), "expect_column_values_to_be_in_set(sex)", "robot"),
        (
            _unknown_value("localization", "elbow"),
            "expect_column_values_to_be_in_set(localization)",
            "elbow",
        ),
    ],
    ids=[
        "truncated-jpeg",
        "missing-image",
        "unknown-label",
        "missing-column",
        "lesion-two-diagnoses",
        "duplicate-image-id",
        "age-out-of-range",
        "too-small-image",
        "greyscale-image",
        "missing-fraction",
        "class-below-minimum",
        "unknown-sex",
        "unknown-site",
    ],
)
def test_bad_data_is_rejected_clearly(synth_copy, tmp_path, breakage, expectation, offender):
    breakage(synth_copy)
    result = _run_validate(synth_copy, tmp_path / "report")
    assert result.exit_code == 1
    assert "data INVALID" in result.output
    assert expectation in result.output
    assert offender in result.output
    summary = json.loads((tmp_path / "report/validation.json").read_text())
    assert summary["success"] is False


def test_real_data_is_valid(real_data_dir, tmp_path):
    result = _run_validate(real_data_dir, tmp_path)
    assert result.exit_code == 0, result.output
    assert "data valid: 8008 rows passed" in result.output
