"""Drift of served traffic against a model's reference, by Evidently's tests.

What is tested, each with the method and threshold of ``monitor.drift`` /
``monitor.embedding``:

* the patient fields a client sends: ``age``, ``sex``, ``localization`` (another clinic,
  another population);
* what the model answers: the mix of decisions (``prediction``) and their
  ``confidence`` (the top probability), which move when the images do, before any label
  comes back;
* the images themselves, through the pooled features the model computed (``embedding``
  in the log): first reduced to ``components`` principal components fitted on the
  reference and scaled to its unit variance, then Evidently's embedding drift method (by
  default ``distance``: how far the mean embedding of the traffic lies from the
  reference's, in the reference's standard deviations; a domain classifier, ``model``,
  caught blurred images less often in the replay at a threshold without false alarms).

A distance fires above its threshold, a p-value (``ks``, ``chisquare``) below it. The
verdict is ``drift`` when any test fires. The thresholds in params.yaml were chosen by
replaying held-out lesions and shifted copies of them (bench/monitor_replay.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.config.operations import EmbeddingDriftTest, MonitorSettings
from skinlesion.labels import CLASSES

NUMERICAL = ("age", "confidence")
CATEGORICAL = ("sex", "localization", "prediction")
EMBEDDING = "embedding"
P_VALUE_METHODS = frozenset({"ks", "chisquare"})


@dataclass(frozen=True)
class DriftCheck:
    """One test: its score, threshold and whether it fired."""

    name: str
    method: str
    score: float
    threshold: float
    fired: bool

    def describe(self) -> str:
        side = "below" if self.method in P_VALUE_METHODS else "above"
        state = f"{side} its threshold" if self.fired else "within its threshold"
        return f"{self.name}: {self.method} {self.score:.3f}, {state} {self.threshold:g}"


@dataclass
class DriftResult:
    """Every test of one comparison, and Evidently's snapshot of it (for the HTML)."""

    checks: list[DriftCheck]
    snapshot: Any = None

    @property
    def fired(self) -> list[DriftCheck]:
        return [c for c in self.checks if c.fired]

    def save_html(self, path: str | Path) -> Path:
        """Evidently's report of the comparison (distributions side by side)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.snapshot.save_html(str(path))
        return Path(path)


def monitored_columns(table: pd.DataFrame) -> pd.DataFrame:
    """The columns the tests read, from prediction log records or a reference table:
    missing sex or site as ``unknown`` (HAM10000's word), confidence as the top class
    probability, and the embedding as one float column per feature."""
    frame = pd.DataFrame(
        {
            "age": pd.to_numeric(table["age"], errors="coerce").astype("float64"),
            "sex": table["sex"].fillna("unknown").astype(str).str.lower(),
            "localization": table["localization"].fillna("unknown").astype(str).str.lower(),
            "prediction": table["prediction"].astype(str),
            "confidence": table[list(CLASSES)].astype("float64").max(axis=1),
        }
    ).reset_index(drop=True)
    features = np.stack([np.asarray(e, dtype="float64") for e in table[EMBEDDING]])
    frame.attrs[EMBEDDING] = features
    return frame


def _components(
    reference: np.ndarray, current: np.ndarray, n: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both embeddings on ``n`` principal components fitted on the reference, each scaled
    to the reference's unit variance (all features, standardised, when ``n`` is 0 or not
    smaller). In the reference's own units a threshold means the same for every model,
    whatever the scale of its features (a CNN's 192, EfficientNet-Lite's 1,280)."""
    if 0 < n < min(reference.shape):
        from sklearn.decomposition import PCA

        pca = PCA(n_components=n, whiten=True, random_state=0).fit(reference)
        reference, current = pca.transform(reference), pca.transform(current)
    else:
        centre, scale = reference.mean(axis=0), reference.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        reference, current = (reference - centre) / scale, (current - centre) / scale
    names = [f"{EMBEDDING}_{i}" for i in range(reference.shape[1])]
    return pd.DataFrame(reference, columns=names), pd.DataFrame(current, columns=names)


def _embedding_method(settings: EmbeddingDriftTest) -> Any:
    """Evidently's embedding drift method of ``settings``, with a fixed threshold (no
    bootstrap: the threshold is the one measured for this project)."""
    from evidently.metrics.embeddings import (
        DistanceDriftMethod,
        MMDDriftMethod,
        ModelDriftMethod,
        RatioDriftMethod,
    )

    if settings.method == "ratio":  # the share of components that drifted
        return RatioDriftMethod(threshold=settings.threshold)
    methods = {"model": ModelDriftMethod, "distance": DistanceDriftMethod, "mmd": MMDDriftMethod}
    return methods[settings.method](threshold=settings.threshold, bootstrap=False)


def check_drift(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    settings: MonitorSettings,
    render: bool = True,
) -> DriftResult:
    """Every test of ``settings`` on ``current`` traffic against ``reference`` (both from
    :func:`monitored_columns`). ``render`` also keeps Evidently's snapshot with the
    embeddings' view (a t-SNE map, about 15 s): the monitor renders, a replay of many
    windows does not."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift, ValueDrift

    ref_emb, cur_emb = _components(
        reference.attrs[EMBEDDING], current.attrs[EMBEDDING], settings.embedding.components
    )
    embedded = list(ref_emb.columns)
    definition = DataDefinition(
        numerical_columns=[*NUMERICAL, *embedded],
        categorical_columns=list(CATEGORICAL),
        embeddings={EMBEDDING: embedded},
    )
    method = _embedding_method(settings.embedding)
    metrics: list[Any] = [
        ValueDrift(column=column, method=test.method, threshold=test.threshold)
        for column, test in settings.drift.items()
    ]
    if render:
        metrics.append(EmbeddingsDrift(embeddings_name=EMBEDDING, drift_method=method))
    snapshot = Report(metrics, include_tests=True).run(
        Dataset.from_pandas(pd.concat([current, cur_emb], axis=1), data_definition=definition),
        Dataset.from_pandas(pd.concat([reference, ref_emb], axis=1), data_definition=definition),
    )
    scores = {
        m["config"]["column"]: float(m["value"])
        for m in snapshot.dict()["metrics"]
        if m["config"].get("column")
    }
    checks = []
    for column, test in settings.drift.items():
        score = scores[column]
        fired = score < test.threshold if test.method in P_VALUE_METHODS else score > test.threshold
        checks.append(DriftCheck(column, test.method, score, test.threshold, bool(fired)))
    score, fired, _ = method(cur_emb.copy(), ref_emb.copy())
    checks.append(
        DriftCheck(
            EMBEDDING, settings.embedding.method, float(score), settings.embedding.threshold,
            bool(fired),
        )
    )  # fmt: skip
    return DriftResult(checks, snapshot if render else None)
