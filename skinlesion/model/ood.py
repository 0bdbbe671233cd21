"""Out-of-distribution score: how far an image's features are from the training images'.

The features are the model's pooled image features (its global-average-pooling output,
before the head and the patient metadata), and the score is their Mahalanobis distance
to the nearest class mean of the training images, with one covariance shared by the
classes (Lee et al., 2018). Why this and not the softmax: the softmax of a network asked
about noise, a solid colour or a photograph of a street still sums to one and is often
confident; the features of such an image lie far from every lesion the network learnt.

The covariance is estimated with Ledoit-Wolf shrinkage (stable with 1,280 features and a
few thousand images) and kept as a whitening matrix, so scoring is one matrix product.
The threshold is set on the validation images to a stated false-refer rate
(:mod:`skinlesion.training.reliability`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureDistance:
    """Whitened class centres (K x D) and the whitening matrix (D x D)."""

    centres: np.ndarray
    whitening: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, n_classes: int) -> FeatureDistance:
        """Class means and the shrunk shared covariance of the training features. A class
        without training images gets the overall mean."""
        from sklearn.covariance import LedoitWolf

        x = features.astype("float64")
        overall = x.mean(axis=0)
        means = np.stack(
            [
                x[labels == k].mean(axis=0) if (labels == k).any() else overall
                for k in range(n_classes)
            ]
        )
        covariance = LedoitWolf().fit(x - means[labels]).covariance_
        values, vectors = np.linalg.eigh(covariance)
        whitening = vectors / np.sqrt(np.maximum(values, 1e-12))  # x @ W: unit covariance
        return cls(centres=means @ whitening, whitening=whitening)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row to the nearest class mean (n)."""
        z = features.astype("float64") @ self.whitening
        squared = (
            (z**2).sum(axis=1)[:, None]
            - 2 * z @ self.centres.T
            + (self.centres**2).sum(axis=1)[None, :]
        )
        return np.sqrt(np.maximum(squared.min(axis=1), 0.0))
