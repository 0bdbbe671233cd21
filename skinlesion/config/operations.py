"""The sections of params.yaml that say how models are served, reviewed, watched, searched
for and run on the cluster, not what they are: ``serve``, ``review``, ``monitor``,
``tune``, ``infra`` and ``cluster``. None of them is hashed into a model's provenance
(:meth:`skinlesion.config.params.Params.stages`), and no DVC stage reads them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from skinlesion.config.base import Count, ParamsError, Positive, Section


class ServeSettings(Section):
    """``serve``: the scoring server of `skinlesion serve` (skinlesion.serving.server)."""

    model: Annotated[str, Field(min_length=1)]  # an MLflow model URI, usually an alias
    runtime: Literal["keras", "onnx"]  # onnx: the version's export, without TensorFlow
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)]
    workers: Positive
    follow_seconds: Annotated[float, Field(ge=0)]  # 0: serve one version, never re-check
    max_body_mb: Annotated[float, Field(gt=0)]
    log_uri: str  # prediction log: a folder or s3://bucket/prefix; "": no log
    # also log the image bytes (health data): false | true (every image) | referred (only
    # images answered with refer: true, what the review queue needs)
    log_images: bool | Literal["referred"]
    log_retention_days: Positive  # image bytes older than this are deleted (`prune-log`)
    log_rotate_records: Positive  # a Parquet file every this many records
    log_rotate_seconds: Annotated[float, Field(gt=0)]  # or this often, whichever first
    log_queue: Positive  # records waiting to be written; beyond: dropped and counted


class ReviewSettings(Section):
    """``review``: the review queue of referred images (skinlesion.review)."""

    store: Annotated[str, Field(min_length=1)]  # SQLAlchemy URL: sqlite:///… or postgresql://…
    log_uri: str  # the prediction log to review; "": serve.log_uri
    window_days: Positive  # the queue holds referrals of the last this many days
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)]


# Columns of the prediction log that the monitor tests for drift, one test each.
MonitoredColumn = Literal["age", "sex", "localization", "prediction", "confidence"]


class DriftTest(Section):
    """One test of ``monitor.drift``: an Evidently drift method and the threshold at which
    it fires (a distance above it; for the p-value methods ``ks`` and ``chisquare``, a
    p-value below it)."""

    method: Literal["wasserstein", "jensenshannon", "psi", "hellinger", "ks", "chisquare"]
    threshold: Annotated[float, Field(gt=0)]


class EmbeddingDriftTest(Section):
    """``monitor.embedding``: Evidently's drift test of the pooled image features."""

    method: Literal["model", "distance", "mmd", "ratio"]
    threshold: Annotated[float, Field(gt=0)]  # model: ROC AUC of the domain classifier
    components: Count  # principal components fitted on the reference first; 0: all features


class MonitorSettings(Section):
    """``monitor``: `skinlesion monitor` and the monitoring pipeline: served traffic from the
    prediction log against the served model's reference (skinlesion.monitoring)."""

    model: Annotated[str, Field(min_length=1)]  # the served model, usually an alias
    log_uri: str  # the prediction log (a folder or s3://…); "": give --log
    window_days: Positive  # without --since: the last this many days
    min_images: Positive  # fewer logged images: verdict "insufficient", no alarm
    drift: dict[MonitoredColumn, DriftTest]
    embedding: EmbeddingDriftTest
    on_drift: Literal["report", "retrain"]  # retrain: the monitoring pipeline trains too
    experiment: Annotated[str, Field(min_length=1)]  # MLflow experiment of monitor runs


class Dimension(Section):
    """One searched key of ``tune.<model>.space``: ``choices``, or a ``low``..``high``
    range (integers when both ends are, ``log`` for a log scale, ``step`` a grid)."""

    low: int | float | None = None  # the optional keys of a dimension: it is one or the
    high: int | float | None = None  # other kind, so each leaves the other's keys out
    log: bool = False
    step: int | float | None = None
    choices: Annotated[list[Any], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _kind(self) -> Dimension:
        ranged = self.low is not None or self.high is not None
        if (self.choices is None) == (not ranged):
            raise ValueError("give either choices or low and high")
        if ranged:
            if self.low is None or self.high is None or self.low >= self.high:
                raise ValueError(f"needs low < high (got {self.low}, {self.high})")
            if self.log and (self.low <= 0 or self.step is not None):
                raise ValueError("a log scale needs low > 0 and no step")
        elif self.log or self.step is not None:
            raise ValueError("log and step apply to ranges, not choices")
        return self

    @property
    def integer(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))


class TuneModelSettings(Section):
    """``tune.<model>``: the search space of one model section, by dotted params key."""

    space: Annotated[dict[str, Dimension], Field(min_length=1)]


class TuneSettings(Section):
    """``tune``: the Optuna search (``skinlesion.tuning.study``), plus one section per model that
    can be tuned (extra keys, each a :class:`TuneModelSettings`)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, TuneModelSettings]

    trials: Positive  # finished (complete or pruned) trials a study ends with
    timeout_minutes: Count  # 0: no limit
    seed: int
    startup_trials: Count
    pruner: Literal["median", "halving", "none"]
    pruner_warmup_epochs: Count
    baseline_first: bool
    storage: str  # "": sqlite in work_dir, or $OPTUNA_STORAGE when set
    work_dir: str
    heartbeat_seconds: Positive
    parallel: Positive

    def space(self, model: str) -> dict[str, Dimension]:
        section = (self.__pydantic_extra__ or {}).get(model)
        if section is None:
            tunable = ", ".join(self.__pydantic_extra__ or {}) or "none"
            raise ParamsError(f"params have no tune.{model}.space (tunable: {tunable})")
        return section.space


class InfraSettings(Section):
    buckets: list[str]


class Resources(Section):
    cpu: str
    memory: str
    accelerator: str | None = None  # absent: no accelerator
    gpus: Count = 0


class SecretRef(Section):
    name: str
    keys: list[str]


class Schedule(Section):
    cron: str
    experiment: str


class PvcMount(Section):
    name: str
    mount_path: str


class ClusterSettings(Section):
    """``cluster``: how Kubeflow runs the steps. ``overrides`` is merged over the stage
    sections for a cluster run and validated as a whole
    (:func:`skinlesion.config.parse.for_cluster`)."""

    overrides: dict[str, Any]
    data_uri: str
    data_version: str  # "" : whatever data_uri holds (recorded); a version: pinned
    data_pvc: PvcMount | None = None  # None (or absent): read data_uri
    images: dict[Literal["cpu", "gpu"], str]
    resources: dict[str, Resources]
    retries: Count
    tolerations: list[dict[str, str]]
    gpu_node_selector: dict[str, str]
    secrets: dict[str, SecretRef]
    service_account: str | None = None  # None (or absent): the namespace default
    schedule: Schedule
    monitoring_schedule: Schedule

    @model_validator(mode="after")
    def _needed(self) -> ClusterSettings:
        for mapping, keys in (("resources", ("default",)), ("secrets", ("mlflow", "s3"))):
            missing = [k for k in keys if k not in getattr(self, mapping)]
            if missing:
                raise ValueError(f"{mapping} needs {', '.join(missing)}")
        return self
