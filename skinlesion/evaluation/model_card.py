"""The model card: what a clinician or reviewer should know about a registered version.

Markdown, set as the registry version's description (the MLflow UI renders it) and logged
with the training run.
"""

from __future__ import annotations

from typing import Any

from skinlesion.labels import CLASS_NAMES, CLASSES


def _intervals(ci: dict[str, Any] | None) -> list[str]:
    """The 95% bootstrap intervals as one line, when the evaluation computed them."""
    if not ci or not ci.get("balanced_accuracy"):
        return []
    bal, mel = ci["balanced_accuracy"], ci.get("melanoma_sensitivity") or [float("nan")] * 2
    return [
        f"- 95% intervals ({ci['resamples']} bootstrap resamples of lesions): balanced "
        f"accuracy {_pct(bal[0])}-{_pct(bal[1])}, melanoma sensitivity "
        f"{_pct(mel[0])}-{_pct(mel[1])}"
    ]


def _pct(value: Any) -> str:
    try:
        return f"{100 * float(value):.1f}%"
    except (TypeError, ValueError):
        return "n/a"


def _conformal(conformal: dict[str, Any] | None) -> list[str]:
    """The prediction sets and referrals, and how to read them."""
    if not conformal:
        return []
    level = 1 - conformal["alpha"]
    ci = conformal.get("coverage_by_class_ci95", {})
    lines = [
        "",
        "## Prediction sets and referral",
        f"Each answer carries a conformal prediction set: the classes the model cannot rule "
        f"out, calibrated on the validation lesions so that the set holds the true class of "
        f"at least {level:.0%} of each class's images. An answer is referred to a clinician "
        "when its set is not a single class, when melanoma is in it, when the image is out "
        "of the training distribution, or when it breaks the training data's input rules.",
        f"- Coverage on the test part {_pct(conformal['coverage'])} (promised {level:.0%}); "
        f"sets of {conformal['set_size_mean']:.2f} classes on average, "
        f"{_pct(conformal['singleton_share'])} single-class",
        f"- Referred {_pct(conformal['refer_rate'])} of test images; the answers not referred "
        f"({conformal['answered']}) are right {_pct(conformal['answered_accuracy'])} of the time",
        "",
        "| class | coverage | 95% lesion interval |",
        "|---|---:|---|",
    ]
    for cls, value in conformal["coverage_by_class"].items():
        bounds = ci.get(cls) or []
        interval = f"{_pct(bounds[0])}-{_pct(bounds[1])}" if bounds else "n/a"
        lines.append(f"| {cls} | {_pct(value)} | {interval} |")
    return lines


def render_model_card(
    name: str,
    metrics: dict[str, Any],
    tags: dict[str, str],
    split_summary: dict[str, Any] | None = None,
    members: list[str] | None = None,
) -> str:
    """Markdown model card from the evaluation metrics and provenance tags; an ensemble's
    card names its ``members``."""
    lines = [
        f"# Model card: {name}",
        "",
        *(
            [
                f"An ensemble of {', '.join(f'`{m}`' for m in members)}: the members' "
                "probabilities combined, with its own operating point and "
                "prediction sets fitted on validation; each member reads the image at its "
                "own input size.",
                "",
            ]
            if members
            else []
        ),
        "## Intended use",
        "Research and decision *support* for classifying dermatoscopic images of pigmented "
        "skin lesions into the 7 HAM10000 diagnoses. Not a diagnostic device: every "
        "prediction needs review by a qualified clinician, and melanoma suspicion warrants "
        "biopsy regardless of the model's output. Models trained with metadata also read the "
        "patient's age, sex and body site; without them they fall back to the image.",
        "",
        "## Data and split",
        "HAM10000 (CC BY-NC 4.0). Split by `lesion_id` (lesions sharing identical images "
        "merged), each lesion's side a stable seeded hash of its id; oversampling and "
        "augmentation on the training "
        "part only; the model was selected on the validation part; figures below are on the "
        "lesion-disjoint test part, never seen in training or selection.",
        f"Data version (content hash): `{tags.get('data.version', 'unknown')}`; training "
        f"manifest md5: `{tags.get('data.manifest_md5', 'unknown')}`; code: "
        f"`{tags.get('git_commit', 'unknown')}`; params hash: "
        f"`{tags.get('params.hash', 'unknown')}`; image: `{tags.get('image', 'none')}`; "
        f"pipeline run: `{tags.get('kfp.run_id', 'none')}`.",
    ]
    if split_summary:
        lines.append("")
        lines.append("| split | images | lesions |")
        lines.append("|---|---:|---:|")
        for part in ("train", "val", "test"):
            if part in split_summary:
                lines.append(
                    f"| {part} | {split_summary[part]['images']} | "
                    f"{split_summary[part]['lesions']} |"
                )
    mel = metrics.get("melanoma", {})
    lines += [
        "",
        f"## Test metrics ({metrics.get('n_images', '?')} images)",
        f"- **Melanoma sensitivity {_pct(mel.get('sensitivity'))}**, specificity "
        f"{_pct(mel.get('specificity'))}",
        f"- Balanced accuracy {_pct(metrics.get('balanced_accuracy'))}; macro AUC "
        f"{metrics.get('macro_auc', float('nan')):.3f}; macro F1 {_pct(metrics.get('macro_f1'))}; "
        f"accuracy {_pct(metrics.get('accuracy'))} (dominated by `nv`, read with care)",
        f"- Expected calibration error {metrics.get('ece', float('nan')):.3f}"
        + (
            f" (the network's own, before the calibration and the melanoma operating point "
            f"fitted on validation: "
            f"{metrics['ece_uncalibrated']:.3f})"
            if "ece_uncalibrated" in metrics
            else ""
        ),
        *_intervals(metrics.get("ci95")),
        "",
        "| class | name | recall | precision | test images |",
        "|---|---|---:|---:|---:|",
    ]
    for cls in CLASSES:
        lines.append(
            f"| {cls} | {CLASS_NAMES[cls]} | {_pct(metrics.get('recall', {}).get(cls))} | "
            f"{_pct(metrics.get('precision', {}).get(cls))} | "
            f"{metrics.get('support', {}).get(cls, '?')} |"
        )
    lines += _conformal(metrics.get("conformal"))
    subgroups = metrics.get("subgroups", {})
    if subgroups:
        lines += [
            "",
            "## Subgroups",
            "",
            "| group | value | images | balanced accuracy | melanoma sensitivity |",
            "|---|---|---:|---:|---:|",
        ]
        for group, values in subgroups.items():
            for value, figures in values.items():
                lines.append(
                    f"| {group} | {value} | {figures.get('n_images')} | "
                    f"{_pct(figures.get('balanced_accuracy'))} | "
                    f"{_pct(figures.get('melanoma_sensitivity'))} |"
                )
    lines += [
        "",
        "## Limitations",
        "- HAM10000 comes from two sites (Vienna, Queensland) and mostly fair skin; "
        "performance on other populations, devices and clinical photographs is unknown.",
        "- Small classes (df, vasc, akiec) have few test images: their recall has wide "
        "confidence intervals.",
        "- Subgroups with few images report counts only; differences between subgroups "
        "may be noise.",
        "- Probabilities are only as calibrated as the ECE above says.",
    ]
    return "\n".join(lines) + "\n"
