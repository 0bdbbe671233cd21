"""Watching the served champion: `skinlesion monitor` and the monitoring pipeline.

The prediction log (:mod:`skinlesion.serving.prediction_log`) is compared with the
reference its model was trained with (its validation images, logged with the training
run): drift of the patient fields, of the decisions and their confidence, and of the
image embeddings, judged by Evidently's tests with the thresholds of ``monitor`` in
params.yaml; and, where confirmed diagnoses came back, the accuracy the served versions
really had, week by week.
"""
