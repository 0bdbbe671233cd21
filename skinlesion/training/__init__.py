"""The parts of a training run that every recipe shares: the device, the callbacks, the
fit loop with checkpoint/resume, the operating point and the training plots. The run's
lifecycle is :mod:`skinlesion.train`; the models are :mod:`skinlesion.recipes`."""
