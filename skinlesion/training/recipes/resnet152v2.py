"""ResNet-152V2 from ImageNet weights, in two phases.

Phase 1 trains a new head on the frozen backbone: on CPU (``cache_features: auto``) on
backbone features computed once, since the frozen backbone's output does not change
(augmentation then does not apply). Phase 2 unfreezes the top blocks and fine-tunes at a
lower learning rate; when it does not beat phase 1 on validation, phase 1 is kept.
"""

from __future__ import annotations

import logging

from skinlesion.config.schema import ResNetSettings
from skinlesion.model.metadata import metadata_width
from skinlesion.training.fitting import Context, Fitted, Phase, fit_images, fit_phase
from skinlesion.training.frozen import cached_batches, frozen_outputs

log = logging.getLogger(__name__)


def fit(settings: ResNetSettings, ctx: Context) -> Fitted:
    """Phase 1 (head on frozen backbone, on cached features on CPU), then phase 2."""
    from skinlesion.model.networks import (
        build_backbone,
        build_head,
        build_resnet152v2,
        unfreeze_top,
    )

    cached = settings.cache_features
    use_cache = ctx.device.gpus == 0 if cached == "auto" else bool(cached)
    size, metadata_dim = ctx.inputs.image_size, metadata_width(ctx.inputs.metadata)
    with ctx.device.strategy.scope():
        backbone = build_backbone(settings.weights, size)
        backbone.trainable = False
        head = build_head(settings, int(backbone.output_shape[-1]), metadata_dim=metadata_dim)
        model = build_resnet152v2(backbone, head, size, metadata_dim=metadata_dim)
    head_phase = Phase(
        "head", settings.head_epochs, settings.head_lr, settings.lr_schedule, settings
    )
    if use_cache:
        log.info("phase 1 on cached backbone features (augmentation does not apply)")
        import keras

        pooled = keras.Model(model.get_layer("image").output, model.get_layer("avg_pool").output)
        features = frozen_outputs(pooled, ctx.table.images, ctx.batch_size, "backbone features")
        meta = ctx.table.metadata if metadata_dim else None
        seed = ctx.train.seed
        train_ds = cached_batches(
            features, meta, ctx.train_idx, ctx.y_train, ctx.batch_size, True, seed
        )
        val_ds = cached_batches(features, meta, ctx.val_idx, ctx.y_val, ctx.batch_size, False, seed)
        keeper, resumed, total = fit_phase(head, head_phase, train_ds, val_ds, ctx)
    else:
        keeper, resumed, total = fit_images(model, head_phase, ctx)
    if settings.fine_tune_epochs > 0:
        phase1 = ctx.work_dir / "phase1.weights.h5"
        if not phase1.is_file():
            model.save_weights(phase1)
        with ctx.device.strategy.scope():
            n = unfreeze_top(backbone, settings.fine_tune_from)
        log.info("phase 2: fine-tuning %d backbone layers", n)
        tune = Phase(
            "fine_tune", settings.fine_tune_epochs, settings.fine_tune_lr, "constant", settings
        )
        tune_keeper, start, run = fit_images(model, tune, ctx)
        total += run
        resumed = resumed or start
        if tune_keeper.best > keeper.best:
            keeper = tune_keeper
        else:  # fine-tuning did not beat the head alone on validation: keep phase 1
            log.info("fine-tuning did not beat the head on validation: keeping phase 1")
            model.load_weights(phase1)
    return Fitted(model, keeper, resumed, total)
