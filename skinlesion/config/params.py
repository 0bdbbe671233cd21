"""The whole of ``params.yaml``: the sections that decide a model
(:mod:`skinlesion.config.schema`) and those that say where and how it runs, is served,
watched or searched (:mod:`skinlesion.config.operations`), with the hash that provenance
records.

Why apart from both: the library's steps read sections, and only what reads the whole
file (loading it, a pipeline's first step, provenance) needs this class at run time;
the training code names it for type checkers alone, so its DVC stages do not depend on the
operations schema.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import ConfigDict, Field

from skinlesion.config.base import ParamsError, Section
from skinlesion.config.operations import (
    ClusterSettings,
    InfraSettings,
    MonitorSettings,
    ReviewSettings,
    ServeSettings,
    TuneSettings,
)
from skinlesion.config.schema import (
    CompareSettings,
    DataSettings,
    EdaSettings,
    EvalSettings,
    InputSettings,
    OversampleSettings,
    PromotionSettings,
    SplitSettings,
    TrackingSettings,
    TrainSettings,
    ValidationSettings,
)

# Sections that say where and how a model is run, tracked, searched for, served or
# watched, not what it computes: left out of the hash.
NOT_HASHED: tuple[str, ...] = ("cluster", "monitor", "review", "serve", "tracking", "tune")


class Params(Section):
    """The whole of params.yaml."""

    data: DataSettings
    validate_: ValidationSettings = Field(alias="validate")
    split: SplitSettings
    eda: EdaSettings
    oversample: OversampleSettings
    input: InputSettings
    tracking: TrackingSettings
    train: TrainSettings
    evaluate: EvalSettings
    compare: CompareSettings
    promote: PromotionSettings
    serve: ServeSettings
    review: ReviewSettings
    monitor: MonitorSettings
    tune: TuneSettings
    infra: InfraSettings
    cluster: ClusterSettings

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def complete(self) -> bool:
        """Whether every section is here; a pipeline step holds only the sections it reads
        (:func:`skinlesion.config.parse.parse_sections`)."""
        return set(type(self).model_fields) <= self.model_fields_set

    def raw(self) -> dict[str, Any]:
        """The plain mapping, shaped like params.yaml (what KFP and MLflow receive), of the
        sections held; unset optional keys are left out (JSON and a pipeline parameter
        carry no null)."""
        return self.model_dump(
            mode="json", by_alias=True, exclude_none=True, include=set(self.model_fields_set)
        )

    def stages(self) -> dict[str, Any]:
        """Every section but :data:`NOT_HASHED`: what decides a model (hashed for
        provenance). Only a complete Params has them all."""
        if not self.complete:
            fields = type(self).model_fields
            missing = sorted(fields[n].alias or n for n in set(fields) - self.model_fields_set)
            raise ParamsError(f"these params hold only some sections (not {', '.join(missing)})")
        raw = self.raw()
        for section in NOT_HASHED:
            raw.pop(section)
        return raw

    def hash(self) -> str:
        """SHA-256 of :meth:`stages` (every section but :data:`NOT_HASHED`), key order
        ignored: a local run of params.yaml and a pipeline run of the same values give the
        same hash, whatever their cluster, serving, monitoring or search settings."""
        canonical = json.dumps(self.stages(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()
