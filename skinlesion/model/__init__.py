"""What a trained model is, whichever step holds it: the networks, the preprocessing and
patient-metadata input it carries, running it on raw images (``inference``), its MLflow
form (``servable``) and loading any registered form, earlier ones included (``loading``).
Training, evaluation, promotion and serving all import from here, never from each other,
for these."""
