"""Training one model: the run's lifecycle (``lifecycle``: resume, fit, save and log), the
recipes per model, the tf.data inputs, and what every recipe shares (device, callbacks,
checkpoints, phases of ``fit``, the melanoma operating point, curves)."""
