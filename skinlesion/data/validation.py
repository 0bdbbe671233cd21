"""Step 2 of the flow: Great Expectations validation of a HAM10000 folder.

The images are profiled first (exists, decodes, mode, size) into columns of the metadata
frame, so every check, per row or per table, is a real GX expectation that shows up in the
Data Docs and names the offending ``image_id`` values. The run stops here when anything
fails: nothing downstream is trained or promoted on bad data.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from skinlesion.config.schema import ValidationSettings
from skinlesion.data.catalog import find_metadata, index_images, read_metadata
from skinlesion.data.contract import IMAGE_MODES
from skinlesion.errors import SkinlesionError
from skinlesion.labels import CLASSES, DX_TYPES, LOCALIZATIONS, METADATA_COLUMNS, SEXES
from skinlesion.progress import progress

log = logging.getLogger(__name__)

SUITE_NAME = "ham10000"
DOCS_SITE = "skinlesion"
IMAGE_ID_PATTERN = r"^ISIC_\d{7}$"
LESION_ID_PATTERN = r"^HAM_\d{7}$"
NUMBER_PATTERN = r"^\d+(?:\.\d+)?$"


@dataclass
class FailedExpectation:
    """One failed expectation, with a few offending rows for the error message."""

    expectation: str
    column: str | None
    unexpected_count: int | None
    observed: Any
    examples: list[dict[str, Any]]

    def describe(self) -> str:
        target = f"({self.column})" if self.column else ""
        head = f"- {self.expectation}{target}"
        if self.unexpected_count is not None:
            head += f": {self.unexpected_count} offending row(s)"
        elif self.observed is not None:
            head += f": observed {self.observed}"
        lines = [head]
        lines += [f"    {json.dumps(row, default=str)}" for row in self.examples]
        return "\n".join(lines)


@dataclass
class ValidationReport:
    """What validation found; written as JSON beside the Data Docs."""

    success: bool
    data_dir: str
    n_rows: int
    n_expectations: int
    failed: list[FailedExpectation]
    data_docs: str | None = None

    def describe(self) -> str:
        if self.success:
            return (
                f"data valid: {self.n_rows} rows passed {self.n_expectations} expectations "
                f"({self.data_dir})"
            )
        lines = [
            f"data INVALID: {len(self.failed)} of {self.n_expectations} expectations failed "
            f"on {self.n_rows} rows of {self.data_dir}"
        ]
        lines += [f.describe() for f in self.failed]
        if self.data_docs:
            lines.append(f"Data Docs (in the report folder): {self.data_docs}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def require_valid(self) -> None:
        """Stop the run here: raise :class:`InvalidDataError` naming each failure."""
        if not self.success:
            raise InvalidDataError(self.describe())


class InvalidDataError(SkinlesionError, ValueError):
    """The data failed validation; nothing downstream may run on it."""


def _profile_image(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {
            "image_exists": False,
            "image_decodable": False,
            "image_mode": None,
            "image_width": None,
            "image_height": None,
        }
    try:
        with Image.open(path) as img:
            img.load()  # a truncated JPEG fails here, not at open()
            return {
                "image_exists": True,
                "image_decodable": True,
                "image_mode": img.mode,
                "image_width": img.width,
                "image_height": img.height,
            }
    except (OSError, SyntaxError, ValueError):
        return {
            "image_exists": True,
            "image_decodable": False,
            "image_mode": None,
            "image_width": None,
            "image_height": None,
        }


def profile_frame(data_dir: Path, workers: int) -> pd.DataFrame:
    """Metadata plus one column per image property and per group property that GX checks."""
    frame = read_metadata(find_metadata(data_dir))
    if "age" in frame.columns:  # keep the raw text for the type check, numbers for the range
        frame["age_years"] = pd.to_numeric(frame["age"], errors="coerce")
        frame["age"] = frame["age"].astype(object)
    if "image_id" in frame.columns:
        images = index_images(data_dir)
        paths = [
            data_dir / images[i] if isinstance(i, str) and i in images else None
            for i in frame["image_id"]
        ]
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            profiles = list(
                progress(pool.map(_profile_image, paths), total=len(paths), desc="profiling images")
            )
        frame = pd.concat([frame, pd.DataFrame(profiles, index=frame.index)], axis=1)
    if {"lesion_id", "dx"} <= set(frame.columns):
        frame["diagnoses_per_lesion"] = frame.groupby("lesion_id")["dx"].transform("nunique")
    if "dx" in frame.columns:
        frame["images_in_class"] = frame.groupby("dx")["dx"].transform("size")
    return frame


def build_expectations(frame: pd.DataFrame, settings: ValidationSettings) -> list[Any]:
    """The expectation suite; column checks only for columns present (the table check
    reports missing ones, rather than a cascade of errors)."""
    import great_expectations.expectations as gxe

    cols = set(frame.columns)
    exps: list[Any] = [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(METADATA_COLUMNS), exact_match=False),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
    ]
    for col in ("lesion_id", "image_id", "dx", "dx_type"):
        if col in cols:
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column=col))
    if "image_id" in cols:
        exps += [
            gxe.ExpectColumnValuesToMatchRegex(column="image_id", regex=IMAGE_ID_PATTERN),
            gxe.ExpectColumnValuesToBeUnique(column="image_id"),
            gxe.ExpectColumnValuesToBeInSet(column="image_exists", value_set=[True]),
            gxe.ExpectColumnValuesToBeInSet(column="image_decodable", value_set=[True]),
            gxe.ExpectColumnValuesToBeInSet(column="image_mode", value_set=list(IMAGE_MODES)),
            gxe.ExpectColumnValuesToBeBetween(column="image_width", min_value=settings.min_width),
            gxe.ExpectColumnValuesToBeBetween(column="image_height", min_value=settings.min_height),
        ]
    if "lesion_id" in cols:
        exps.append(gxe.ExpectColumnValuesToMatchRegex(column="lesion_id", regex=LESION_ID_PATTERN))
    if "dx" in cols:
        exps += [
            gxe.ExpectColumnValuesToBeInSet(column="dx", value_set=list(CLASSES)),
            gxe.ExpectColumnDistinctValuesToContainSet(column="dx", value_set=list(CLASSES)),
            gxe.ExpectColumnValuesToBeBetween(
                column="images_in_class", min_value=settings.min_class_count
            ),
        ]
    if "diagnoses_per_lesion" in cols:
        exps.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="diagnoses_per_lesion", min_value=1, max_value=1
            )
        )
    known_sets = {"dx_type": DX_TYPES, "sex": SEXES, "localization": LOCALIZATIONS}
    for col, values in known_sets.items():
        if col in cols:
            exps.append(gxe.ExpectColumnValuesToBeInSet(column=col, value_set=list(values)))
    if "age" in cols:
        exps += [
            gxe.ExpectColumnValuesToMatchRegex(column="age", regex=NUMBER_PATTERN),
            gxe.ExpectColumnValuesToBeBetween(
                column="age_years", min_value=settings.age_min, max_value=settings.age_max
            ),
        ]
    for col, max_missing in settings.max_missing_fraction.items():
        target = "age_years" if col == "age" else col
        if target in cols:
            exps.append(
                gxe.ExpectColumnValuesToNotBeNull(column=target, mostly=1.0 - float(max_missing))
            )
    return exps


def _failure(result: Any, limit: int) -> FailedExpectation:
    res = result.result or {}
    examples = list(res.get("partial_unexpected_index_list") or [])[:limit]
    if not examples and res.get("partial_unexpected_list"):
        examples = [{"value": v} for v in res["partial_unexpected_list"][:limit]]
    observed = res.get("observed_value")
    details = res.get("details")
    if details:
        observed = {"observed": observed, "details": details}
    if result.exception_info and result.exception_info.get("raised_exception"):
        observed = result.exception_info.get("exception_message")
    return FailedExpectation(
        expectation=result.expectation_config.type,
        column=result.expectation_config.kwargs.get("column"),
        unexpected_count=res.get("unexpected_count"),
        observed=observed,
        examples=examples,
    )


def validate_dataset(
    data_dir: str | Path, report_dir: str | Path, settings: ValidationSettings, workers: int
) -> ValidationReport:
    """Run the suite with GX, build Data Docs under ``report_dir/data_docs`` and write
    ``report_dir/validation.json``. Returns the report; never raises on invalid data
    (callers decide), only on an unreadable layout."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    root = Path(data_dir)
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = profile_frame(root, workers)

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    docs_dir = (out / "data_docs").resolve()
    context.add_data_docs_site(
        DOCS_SITE,
        {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    batch = (
        context.data_sources.add_pandas("ham10000")
        .add_dataframe_asset("metadata")
        .add_batch_definition_whole_dataframe("all_rows")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME))
    for expectation in build_expectations(frame, settings):
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="ham10000_metadata_and_images", data=batch, suite=suite)
    )
    index_cols = ["image_id"] if "image_id" in frame.columns else []
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="validate_ham10000",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE])],
            result_format={
                "result_format": "SUMMARY",
                "unexpected_index_column_names": index_cols,
                "partial_unexpected_count": settings.offending_rows,
            },
        )
    )
    run = checkpoint.run(batch_parameters={"dataframe": frame})
    results = [r for vr in run.run_results.values() for r in vr.results]
    report = ValidationReport(
        success=bool(run.success),
        data_dir=str(root),
        n_rows=len(frame),
        n_expectations=len(results),
        failed=[_failure(r, settings.offending_rows) for r in results if not r.success],
        data_docs="data_docs/index.html",  # relative to report_dir: portable
    )
    (out / "validation.json").write_text(
        json.dumps(report.to_dict(), indent=2, default=str) + "\n", encoding="utf-8"
    )
    log.info(report.describe())
    return report
