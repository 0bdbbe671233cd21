"""The custom layers a saved model may hold, made known to Keras before any load.

Why a module of its own: a saved model holds the preprocessing layer
(:mod:`skinlesion.model.preprocessing`), the reliability layer
(:mod:`skinlesion.model.reliability`) and, for an ensemble, the members' combination
(:mod:`skinlesion.model.ensemble`). Every loader needs all three, while none of those
modules needs the others' layers; registering them here keeps their imports one way.
"""

from __future__ import annotations


def register_layers() -> None:
    """Make every custom layer of the project's saved models loadable (call before
    ``keras.models.load_model``); calling it again does nothing more."""
    from skinlesion.model.ensemble import register as register_ensemble
    from skinlesion.model.preprocessing import register as register_preprocessing
    from skinlesion.model.reliability import register as register_reliability

    register_preprocessing()
    register_reliability()
    register_ensemble()
