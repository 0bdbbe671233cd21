"""The building blocks of the params model (:mod:`skinlesion.config.schema`): a section,
its error, and the number types its keys share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from skinlesion.errors import SkinlesionError

Fraction = Annotated[float, Field(ge=0, le=1)]
Positive = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]


class ParamsError(SkinlesionError, ValueError):
    """params.yaml is missing, malformed, or holds a key or value the model refuses."""


class Section(BaseModel):
    """A section of params.yaml: every key required, no unknown key, values immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
