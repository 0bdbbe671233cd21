"""Step 4 of the flow: oversampling against class imbalance, on the training part only.

The original study oversampled before splitting, so copies of minority images reached
the test set. Here the split manifest comes in, only ``split == "train"`` rows are
resampled (imbalanced-learn's RandomOverSampler over row indices), validation and test
rows pass through byte for byte, and the leakage check runs again on the result.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from imblearn.over_sampling import RandomOverSampler

from skinlesion.config.schema import OversampleSettings
from skinlesion.data.leakage import assert_no_leakage


def target_counts(counts: pd.Series, min_per_class: int) -> dict[str, int]:
    """Each class raised to ``min_per_class`` images, never above the majority, never down."""
    ceiling = int(counts.max())
    return {str(c): max(int(n), min(min_per_class, ceiling)) for c, n in counts.items()}


def oversample_manifest(manifest: pd.DataFrame, settings: OversampleSettings) -> pd.DataFrame:
    """The training manifest: oversampled train rows (``oversampled`` marks the copies)
    followed by the untouched val and test rows."""
    train = manifest[manifest["split"] == "train"].reset_index(drop=True)
    rest = manifest[manifest["split"] != "train"]
    if train.empty:
        raise ValueError("the manifest has no training rows to oversample")
    sampler = RandomOverSampler(
        sampling_strategy=target_counts(train["dx"].value_counts(), settings.min_per_class),
        random_state=settings.seed,
    )
    rows, _ = sampler.fit_resample(np.arange(len(train)).reshape(-1, 1), train["dx"])
    picked = rows.ravel()
    resampled = train.iloc[picked].reset_index(drop=True)
    resampled["oversampled"] = pd.Series(picked).duplicated().to_numpy()  # copies only
    untouched = rest.assign(oversampled=False)
    result = pd.concat([resampled, untouched], ignore_index=True)
    assert_no_leakage(result)
    return result
