"""The input contract: what an image must be for a model to answer about it.

Data validation (:mod:`skinlesion.data.validation`) refuses training images that are not
RGB or are smaller than ``validate.min_width`` x ``validate.min_height``. A model has
never seen anything else, so wherever it is used (the server, `predict`) the same rules
are applied to the image's header before the model runs. Decoding would otherwise turn a
greyscale, CMYK or 16-bit image into RGB and a 1x1 image into a full-size one, and the
model would answer about them with confidence. The rules travel with the model
(:mod:`skinlesion.model.reliability`), so every path applies the ones it was trained with.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

# PIL modes a training image may have: 8-bit RGB, what HAM10000's JPEGs are.
IMAGE_MODES: tuple[str, ...] = ("RGB",)


@dataclass(frozen=True)
class InputContract:
    """Validation's rules for one image: smallest size and the colour modes allowed."""

    min_width: int
    min_height: int
    modes: tuple[str, ...] = IMAGE_MODES

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
