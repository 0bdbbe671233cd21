"""The study's CNN trained from scratch: one phase on augmented image batches, with an
optional moving average of the weights."""

from __future__ import annotations

from skinlesion.config.schema import CnnSettings
from skinlesion.model.metadata import metadata_width
from skinlesion.training.fitting import Context, Fitted, Phase, fit_images


def fit(settings: CnnSettings, ctx: Context) -> Fitted:
    from skinlesion.model.networks import build_cnn

    with ctx.device.strategy.scope():
        model = build_cnn(
            settings, ctx.inputs.image_size, metadata_dim=metadata_width(ctx.inputs.metadata)
        )
    phase = Phase(
        "train",
        settings.epochs,
        settings.lr,
        settings.lr_schedule,
        settings,
        settings.ema_momentum,
    )
    keeper, resumed, epochs_run = fit_images(model, phase, ctx)
    return Fitted(model, keeper, resumed, epochs_run)
