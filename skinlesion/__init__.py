"""skinlesion: honest, lesion-disjoint MLOps for HAM10000 skin-lesion classifiers."""

__version__ = "0.1.0"
