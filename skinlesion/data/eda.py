"""Step 6 of the flow: exploratory data analysis, what the original study did by hand.

Writes PNG plots (declared as DVC plots) and a markdown summary: class distribution by
split, age / sex / localization by class, images per lesion, and sample images per class.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI, cluster pods
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from skinlesion.config.schema import EdaSettings
from skinlesion.data.leakage import SPLITS
from skinlesion.labels import CLASS_NAMES


def _save(fig: plt.Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def plot_class_distribution(manifest: pd.DataFrame, out: Path) -> str:
    counts = manifest.groupby(["dx", "split"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=[s for s in SPLITS if s in counts.columns])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    counts.plot.bar(ax=ax, log=True)
    ax.set_title("Images per diagnosis and split (log scale)")
    ax.set_xlabel("diagnosis")
    ax.set_ylabel("images")
    return _save(fig, out / "class_distribution.png")


def plot_age_by_class(manifest: pd.DataFrame, out: Path) -> str:
    classes = sorted(manifest["dx"].unique())
    ages = [pd.to_numeric(manifest.loc[manifest["dx"] == c, "age"]).dropna() for c in classes]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.boxplot(ages, tick_labels=classes)
    ax.set_title("Age by diagnosis")
    ax.set_ylabel("age (years)")
    return _save(fig, out / "age_by_class.png")


def plot_sex_by_class(manifest: pd.DataFrame, out: Path) -> str:
    share = pd.crosstab(manifest["dx"], manifest["sex"], normalize="index")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    share.plot.bar(stacked=True, ax=ax)
    ax.set_title("Sex by diagnosis (share of images)")
    ax.set_ylabel("share")
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, out / "sex_by_class.png")


def plot_localization_by_class(manifest: pd.DataFrame, out: Path) -> str:
    table = pd.crosstab(manifest["localization"], manifest["dx"], normalize="columns")
    fig, ax = plt.subplots(figsize=(8, 6))
    im = ax.imshow(table.to_numpy(), aspect="auto", cmap="viridis")
    ax.set_xticks(range(table.shape[1]), table.columns)
    ax.set_yticks(range(table.shape[0]), table.index)
    ax.set_title("Localization by diagnosis (share of each class)")
    fig.colorbar(im, ax=ax)
    return _save(fig, out / "localization_by_class.png")


def plot_images_per_lesion(manifest: pd.DataFrame, out: Path) -> str:
    per_lesion = manifest.groupby("lesion_id").size()
    fig, ax = plt.subplots(figsize=(6, 4))
    values, counts = np.unique(per_lesion.to_numpy(), return_counts=True)
    ax.bar(values, counts)
    ax.set_xticks(values)
    ax.set_title("Images per lesion: why splits must group by lesion")
    ax.set_xlabel("images of the same lesion")
    ax.set_ylabel("lesions")
    return _save(fig, out / "images_per_lesion.png")


def plot_sample_grid(
    manifest: pd.DataFrame, data_dir: Path, out: Path, settings: EdaSettings
) -> str:
    classes = sorted(manifest["dx"].unique())
    n = settings.samples_per_class
    fig, axes = plt.subplots(len(classes), n, figsize=(1.6 * n, 1.3 * len(classes)), squeeze=False)
    rng = np.random.default_rng(settings.seed)
    for row, dx in enumerate(classes):
        rows = manifest[manifest["dx"] == dx]
        picks = rows.iloc[rng.permutation(len(rows))[:n]]
        for col in range(n):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(picks):
                with Image.open(data_dir / picks.iloc[col]["image_path"]) as img:
                    ax.imshow(img.convert("RGB"))
        axes[row][0].set_title(dx, loc="left", fontsize=9)
    fig.suptitle("Sample images per diagnosis")
    return _save(fig, out / "samples_per_class.png")


def _summary_markdown(manifest: pd.DataFrame, plots: list[str]) -> str:
    per_class = manifest.groupby("dx").agg(
        images=("image_id", "size"), lesions=("lesion_id", "nunique")
    )
    per_class["share"] = (per_class["images"] / len(manifest)).round(3)
    per_lesion = manifest.groupby("lesion_id").size()
    lines = [
        "# HAM10000 exploratory data analysis",
        "",
        f"{len(manifest)} images of {manifest['lesion_id'].nunique()} lesions; "
        f"{int((per_lesion > 1).sum())} lesions have more than one image "
        f"(up to {int(per_lesion.max())}). Majority class share: "
        f"{per_class['share'].max():.1%}, so accuracy alone rewards predicting `nv`.",
        "",
        "| class | name | images | lesions | share |",
        "|---|---|---:|---:|---:|",
    ]
    for dx, row in per_class.iterrows():
        lines.append(
            f"| {dx} | {CLASS_NAMES.get(str(dx), '')} | {row['images']} | {row['lesions']} "
            f"| {row['share']:.3f} |"
        )
    lines += ["", "## Plots", ""]
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def run_eda(
    manifest: pd.DataFrame, data_dir: str | Path, out_dir: str | Path, settings: EdaSettings
) -> list[Path]:
    """Write every plot and ``summary.md`` into ``out_dir``; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = [
        plot_class_distribution(manifest, out),
        plot_age_by_class(manifest, out),
        plot_sex_by_class(manifest, out),
        plot_localization_by_class(manifest, out),
        plot_images_per_lesion(manifest, out),
        plot_sample_grid(manifest, Path(data_dir), out, settings),
    ]
    (out / "summary.md").write_text(_summary_markdown(manifest, plots), encoding="utf-8")
    return [out / p for p in plots] + [out / "summary.md"]
