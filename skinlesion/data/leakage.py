"""The leakage check: no lesion and no identical image content on two sides of a split.

This is the mistake behind the original study's 97%: oversampling before splitting put
copies of the same minority images in both train and test. Every stage that writes a
manifest runs this check and fails the run when it does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from skinlesion.errors import SkinlesionError

SPLITS: tuple[str, ...] = ("train", "val", "test")


class LeakageError(SkinlesionError, RuntimeError):
    """The same lesion or the same image bytes appear in more than one split."""


@dataclass(frozen=True)
class LeakageFinding:
    key: str
    value: str
    splits: tuple[str, ...]


def find_leaks(
    manifest: pd.DataFrame, keys: tuple[str, ...] = ("lesion_id", "sha256")
) -> list[LeakageFinding]:
    """Each value of each key that occurs in more than one split."""
    findings: list[LeakageFinding] = []
    for key in keys:
        if key not in manifest.columns:
            continue
        rows = manifest[manifest[key].notna() & (manifest[key].astype(str) != "")]
        per_value = rows.groupby(key)["split"].agg(lambda s: tuple(sorted(set(s))))
        for value, splits in per_value.items():
            if len(splits) > 1:
                findings.append(LeakageFinding(key, str(value), splits))
    return findings


def assert_no_leakage(manifest: pd.DataFrame, show: int = 10) -> None:
    """Raise LeakageError naming the leaking lesions / images; silent when clean."""
    missing = {"split", "lesion_id"} - set(manifest.columns)
    if missing:
        raise LeakageError(f"manifest lacks column(s) {sorted(missing)}; cannot check leakage")
    unknown = set(manifest["split"].unique()) - set(SPLITS)
    if unknown:
        raise LeakageError(f"manifest has unknown split value(s): {sorted(map(str, unknown))}")
    findings = find_leaks(manifest)
    if findings:
        lines = [
            f"LEAKAGE: {len(findings)} value(s) appear in more than one split; "
            "evaluation on such a split is not honest:"
        ]
        lines += [f"  {f.key}={f.value} in {', '.join(f.splits)}" for f in findings[:show]]
        if len(findings) > show:
            lines.append(f"  ... and {len(findings) - show} more")
        raise LeakageError("\n".join(lines))
