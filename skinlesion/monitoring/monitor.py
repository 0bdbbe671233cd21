"""`skinlesion monitor`: one window of served traffic judged against the model's reference.

1. Window: [``since``, ``until``), by default the last ``monitor.window_days`` days.
2. Records: the prediction log's records of the window answered by the version the
   model URI points to now (an alias is pinned first); records of other versions are
   counted and left out, since each version has its own reference.
3. Verdict: ``insufficient`` with fewer than ``monitor.min_images`` images (no alarm on a
   quiet week), else ``drift`` when any test of :mod:`skinlesion.monitoring.drift` fires,
   else ``stable``.
4. Realised accuracy (when the labelled data is given): every version's answers in the
   window against the diagnoses that came back, by week
   (:mod:`skinlesion.monitoring.realised`).
5. Outputs: ``monitor.json`` (verdict, tests, figures), Evidently's ``report.html``, and
   an MLflow run in ``monitor.experiment`` holding both, with one metric per test.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from skinlesion.config.operations import MonitorSettings
from skinlesion.errors import SkinlesionError
from skinlesion.monitoring.drift import EMBEDDING, DriftCheck, check_drift, monitored_columns

Verdict = Literal["stable", "drift", "insufficient"]
SUMMARY_FILE = "monitor.json"
REPORT_FILE = "report.html"


class MonitorError(SkinlesionError, ValueError):
    """The monitor cannot run as asked; the message says why."""


@dataclass
class MonitorResult:
    """What one monitoring window found."""

    verdict: Verdict
    model_uri: str
    model_version: str
    since: str
    until: str
    images: int  # records of the model version in the window
    other_versions: int  # records of the window answered by other versions (left out)
    checks: list[DriftCheck] = field(default_factory=list)
    realised: list[dict[str, Any]] = field(default_factory=list)
    summary: str = ""
    report: str = ""
    run_id: str = ""

    def describe(self) -> str:
        head = (
            f"{self.verdict.upper()}: {self.images} images answered by {self.model_uri} "
            f"from {self.since} to {self.until}"
        )
        if self.other_versions:
            head += f" ({self.other_versions} by other versions left out)"
        marks = {True: "FIRED ", False: "ok    "}
        lines = [head, *(f"  {marks[c.fired]}{c.describe()}" for c in self.checks)]
        lines += [
            f"  week {w['week']} version {w['model_version']}: {w['labelled']} confirmed"
            + (
                f", accuracy {w['accuracy']:.3f}, balanced accuracy {w['balanced_accuracy']:.3f}"
                if w["labelled"]
                else ""
            )
            + f", {w.get('not_a_lesion', 0)} not a lesion"
            for w in self.realised
        ]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``monitor.json`` (NaN written as null)."""

        def clean(value: Any) -> Any:
            if isinstance(value, float) and math.isnan(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        body = asdict(self)
        body["fired"] = [c.name for c in self.checks if c.fired]
        return clean(body)


def _utc(text: str) -> pd.Timestamp:
    """A time as given on the command line, in UTC (a time without a zone is UTC)."""
    try:
        stamp = pd.Timestamp(text)
    except ValueError as err:
        raise MonitorError(
            f"not a date or time: {text!r} (e.g. 2026-11-23 or 2026-11-23T06:00)"
        ) from err
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def window(
    since: str | None, until: str | None, days: int, now: pd.Timestamp | None = None
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[since, until) in UTC: ``until`` defaults to now, ``since`` to ``days`` before it."""
    end = _utc(until) if until else (now or pd.Timestamp.now(tz="UTC"))
    start = _utc(since) if since else end - pd.Timedelta(days=days)
    if start >= end:
        raise MonitorError(f"--since {start} is not before --until {end}")
    return start, end


def _verdict(images: int, checks: list[DriftCheck], settings: MonitorSettings) -> Verdict:
    if images < settings.min_images:
        return "insufficient"
    return "drift" if any(c.fired for c in checks) else "stable"


def _traffic(records: pd.DataFrame, version: str) -> tuple[pd.DataFrame, int]:
    """The records answered by ``version`` with an embedding, and how many others."""
    if records.empty:
        return records, 0
    if EMBEDDING not in records:  # a model that answers no embeddings: nothing to judge
        return records.iloc[:0], len(records)
    mine = records["model_version"].astype(str) == version if version else True
    served = records[mine & records[EMBEDDING].notna()]
    return served, len(records) - len(served)


def run_monitor(
    settings: MonitorSettings,
    log_uri: str,
    out_dir: str | Path,
    since: str | None = None,
    until: str | None = None,
    model_uri: str | None = None,
    reference_file: str | Path | None = None,
    labels: str | Path | None = None,
    workers: int = 4,
    track: bool = True,
    reviews: str | None = None,
) -> MonitorResult:
    """Judge one window of the prediction log at ``log_uri`` (see the module). ``labels``,
    a folder or an s3:// prefix of labelled data in the HAM10000 layout, adds the realised
    accuracy of the served versions by week, counting the agreed answers of the review
    store at ``reviews`` (a SQLAlchemy URL) too."""
    from skinlesion.monitoring.reference import load_reference
    from skinlesion.promotion.registry import resolve_version
    from skinlesion.serving.prediction_log import read_records
    from skinlesion.tracking import configure_tracking

    if not log_uri:
        raise MonitorError("no prediction log: give --log (or set monitor.log_uri)")
    start, end = window(since, until, settings.window_days)
    configure_tracking(settings.experiment)  # the registry the model URI names
    served, _ = resolve_version(model_uri or settings.model)
    records = read_records(log_uri, start, end)
    traffic, others = _traffic(records, served.version)
    result = MonitorResult(
        verdict="insufficient",
        model_uri=served.uri,
        model_version=served.version,
        since=start.isoformat(),
        until=end.isoformat(),
        images=len(traffic),
        other_versions=others,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(traffic) >= settings.min_images:
        reference = pd.read_parquet(reference_file) if reference_file else load_reference(served)
        drift = check_drift(monitored_columns(traffic), monitored_columns(reference), settings)
        result.checks = drift.checks
        result.report = str(drift.save_html(out / REPORT_FILE))
    result.verdict = _verdict(len(traffic), result.checks, settings)
    if labels:
        result.realised = _realised(records, str(labels), workers, reviews)
    result.summary = str(out / SUMMARY_FILE)
    if track:
        result.run_id = _log_run(result)
    Path(result.summary).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return result


def _realised(
    records: pd.DataFrame, labels: str, workers: int, reviews: str | None
) -> list[dict[str, Any]]:
    """Realised accuracy by week against the labels at ``labels`` (a folder, or an s3://
    prefix copied here first) and the reviewed images of the store at ``reviews``."""
    import tempfile

    from skinlesion.monitoring.realised import (
        confirmed_labels,
        merged_labels,
        realised_accuracy,
        reviewed_labels,
    )

    reviewed = reviewed_labels(reviews)
    if not labels.startswith("s3://"):
        data = confirmed_labels(labels, workers)
        return realised_accuracy(records, merged_labels(data, reviewed))
    from skinlesion.data.storage import mirror_from_s3

    with tempfile.TemporaryDirectory() as work:
        mirror_from_s3(labels, Path(work))
        data = confirmed_labels(work, workers)
        return realised_accuracy(records, merged_labels(data, reviewed))


def _log_run(result: MonitorResult) -> str:
    """An MLflow run of the window: verdict and version as tags, one metric per test
    score, the realised accuracy per week, and the report and summary as artifacts."""
    import mlflow

    name = f"monitor-{result.since[:10]}-{result.until[:10]}"
    with mlflow.start_run(run_name=name) as run:
        mlflow.set_tags(
            {
                "verdict": result.verdict,
                "model_uri": result.model_uri,
                "model_version": result.model_version,
                "fired": ",".join(c.name for c in result.checks if c.fired),
            }
        )
        mlflow.log_params({"since": result.since, "until": result.until})
        mlflow.log_metrics(
            {
                "images": result.images,
                "other_versions": result.other_versions,
                "drift": float(result.verdict == "drift"),
                **{f"drift_{c.name}": c.score for c in result.checks},
            }
        )
        for step, week in enumerate(result.realised):
            mlflow.log_metrics(
                {
                    f"realised_{k}": v
                    for k, v in week.items()
                    if isinstance(v, int | float) and not math.isnan(v)
                },
                step=step,
            )
        if result.report:
            mlflow.log_artifact(result.report, "monitor")
        mlflow.log_dict(result.as_dict(), f"monitor/{SUMMARY_FILE}")
        return run.info.run_id
