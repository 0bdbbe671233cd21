"""Judging a model on lesions it never saw: predictions on a split (``evaluate``), the
figures (``metrics``, with lesion-bootstrap intervals from ``resampling``), their plots and
the model card."""
