"""A small synthetic dataset in the HAM10000 layout, for tests and demos.

Each class gets its own lesion colour and shape so that a model can learn something, and
some lesions get several images (as in HAM10000), so lesion-grouped splitting is exercised.
It is only ever written where the user asks; nothing substitutes it for real data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from skinlesion.labels import CLASSES, DX_TYPES, LOCALIZATIONS

# Lesion RGB colour per class, far enough apart for a tiny CNN to separate them.
_CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "akiec": (200, 60, 60),
    "bcc": (230, 170, 200),
    "bkl": (120, 90, 40),
    "df": (160, 110, 80),
    "mel": (30, 20, 20),
    "nv": (90, 55, 35),
    "vasc": (170, 20, 90),
}
# Relative class frequencies, HAM10000-like but less extreme so tiny sets keep every class.
_CLASS_WEIGHTS: dict[str, float] = {
    "akiec": 0.06,
    "bcc": 0.08,
    "bkl": 0.12,
    "df": 0.05,
    "mel": 0.14,
    "nv": 0.50,
    "vasc": 0.05,
}

Layout = Literal["single", "official"]


def _draw_lesion(rng: np.random.Generator, dx: str, size: tuple[int, int]) -> Image.Image:
    width, height = size
    skin = np.array([225, 180, 150]) + rng.normal(0, 12, 3)
    base = np.clip(skin + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(base, "RGB")
    draw = ImageDraw.Draw(image)
    cx, cy = width / 2 + rng.normal(0, width / 12), height / 2 + rng.normal(0, height / 12)
    rx = width * rng.uniform(0.15, 0.3) * (1.4 if dx in ("mel", "bcc") else 1.0)
    ry = height * rng.uniform(0.15, 0.3)
    colour = tuple(int(np.clip(c + rng.normal(0, 10), 0, 255)) for c in _CLASS_COLOURS[dx])
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=colour)
    if dx in ("mel", "akiec"):  # irregular border blotches
        for _ in range(4):
            bx, by = cx + rng.normal(0, rx / 1.5), cy + rng.normal(0, ry / 1.5)
            r = rng.uniform(4, 10)
            draw.ellipse((bx - r, by - r, bx + r, by + r), fill=colour)
    return image


def make_synthetic_dataset(
    out_dir: str | Path,
    n_images: int = 200,
    seed: int = 0,
    image_size: tuple[int, int] = (200, 150),
    layout: Layout = "single",
    append: bool = False,
) -> pd.DataFrame:
    """Write ``n_images`` JPEGs and ``HAM10000_metadata.csv`` under ``out_dir``.

    Returns the metadata frame. Every class appears at least twice when ``n_images >= 14``.
    With ``append``, new lesions and images (ids after the existing ones) are added to a
    synthetic folder, as a new batch of data arrives before a scheduled retraining.
    """
    if n_images < len(CLASSES):
        raise ValueError(f"n_images must be at least {len(CLASSES)} (one per class)")
    rng = np.random.default_rng(seed)
    root = Path(out_dir)
    weights = np.array([_CLASS_WEIGHTS[c] for c in CLASSES])
    rows: list[dict[str, object]] = []
    existing = pd.DataFrame()
    if append and (root / "HAM10000_metadata.csv").is_file():
        existing = pd.read_csv(root / "HAM10000_metadata.csv", dtype={"age": float})
    lesion_no = _last_number(existing, "lesion_id")
    image_no = first_image = _last_number(existing, "image_id")
    # Guarantee coverage of every class, then draw the rest by weight.
    forced = [c for c in CLASSES for _ in range(2)] if n_images >= 2 * len(CLASSES) else []
    while image_no - first_image < n_images:
        dx = forced.pop() if forced else str(rng.choice(CLASSES, p=weights / weights.sum()))
        n_for_lesion = min(int(rng.choice([1, 1, 1, 2, 3])), n_images - (image_no - first_image))
        lesion_no += 1
        age = float(rng.integers(1, 18) * 5) if rng.random() > 0.02 else np.nan
        sex = str(rng.choice(["male", "female"]))
        site = str(rng.choice(LOCALIZATIONS))
        dx_type = str(rng.choice(DX_TYPES))
        for _ in range(n_for_lesion):
            image_no += 1
            rows.append(
                {
                    "lesion_id": f"HAM_{lesion_no:07d}",
                    "image_id": f"ISIC_{image_no:07d}",
                    "dx": dx,
                    "dx_type": dx_type,
                    "age": age,
                    "sex": sex,
                    "localization": site,
                }
            )
    frame = pd.DataFrame(rows)
    for i, row in enumerate(frame.itertuples(index=False), start=first_image):
        if layout == "single":
            folder = root / "images"
        else:
            folder = root / ("HAM10000_images_part_1" if i % 2 == 0 else "HAM10000_images_part_2")
        folder.mkdir(parents=True, exist_ok=True)
        _draw_lesion(rng, str(row.dx), image_size).save(folder / f"{row.image_id}.jpg", quality=90)
    root.mkdir(parents=True, exist_ok=True)
    frame = pd.concat([existing, frame], ignore_index=True) if len(existing) else frame
    frame.to_csv(root / "HAM10000_metadata.csv", index=False)
    return frame


def _last_number(frame: pd.DataFrame, column: str) -> int:
    """The highest number in ids like ``HAM_0000042`` (0 for none)."""
    if frame.empty:
        return 0
    return int(frame[column].str.rsplit("_", n=1).str[-1].astype(int).max())
