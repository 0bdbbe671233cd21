"""The input contract: what an image must be for a model to answer about it.

Data validation (:mod:`skinlesion.data.validation`) refuses training images that are not
RGB or are smaller than ``validate.min_width`` x ``validate.min_height``, and rows whose age
is outside ``validate.age_min``..``validate.age_max``. A model has never seen anything else,
so wherever it is used (the server, `predict`) the same rules are applied to the image's
header and the request's age before the model runs. Decoding would otherwise turn a
greyscale, CMYK or 16-bit image into RGB and a 1x1 image into a full-size one, and the
model would answer about them with confidence. The rules travel with the model
(:mod:`skinlesion.model.reliability`), so every path applies the ones it was trained with.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    from skinlesion.config.schema import ValidationSettings

# PIL modes a training image may have: 8-bit RGB, what HAM10000's JPEGs are.
IMAGE_MODES: tuple[str, ...] = ("RGB",)


@dataclass(frozen=True)
class InputContract:
    """Validation's rules for one request row: the image's smallest size and the colour
    modes allowed, and the patient's age range (a model saved before the range travelled
    with it accepts any age that is not negative)."""

    min_width: int
    min_height: int
    modes: tuple[str, ...] = IMAGE_MODES
    age_min: float = 0.0
    age_max: float = math.inf

    @classmethod
    def of(cls, settings: ValidationSettings) -> InputContract:
        """The contract of a model trained on data that ``settings`` (``validate``) passed."""
        return cls(
            settings.min_width,
            settings.min_height,
            age_min=settings.age_min,
            age_max=settings.age_max,
        )

    def age_violation(self, age: float) -> str | None:
        """Why ``age`` (years) is outside what validation let through, else None."""
        if math.isnan(age) or not self.age_min <= age <= self.age_max:
            return (
                f"age is not a number of years in {self.age_min:g}..{self.age_max:g}, the range "
                "the model was trained on (validate.age_min/age_max)"
            )
        return None

    def violations(self, width: int, height: int, mode: str) -> list[str]:
        """Each rule the image breaks, in words that name the rule; empty when it keeps
        them all."""
        found = []
        if width < self.min_width or height < self.min_height:
            found.append(
                f"image is {width}x{height} pixels, smaller than the {self.min_width}x"
                f"{self.min_height} the model was trained on (validate.min_width/min_height)"
            )
        if mode not in self.modes:
            found.append(
                f"image colour mode is {mode}, the model was trained on "
                f"{' or '.join(self.modes)} images only (validate: image mode)"
            )
        return found

    def check_bytes(self, raw: bytes) -> list[str]:
        """:meth:`violations` of encoded image bytes, read from the header alone; bytes
        PIL cannot identify are left to the decoder, whose error says more."""
        try:
            with Image.open(io.BytesIO(raw)) as image:
                return self.violations(image.width, image.height, image.mode)
        except (UnidentifiedImageError, OSError, ValueError):
            return []
