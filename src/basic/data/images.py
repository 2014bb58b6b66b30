"""Image loading and LLaVA-1.5's `image_aspect_ratio` handling, before the vision tower's own image processor.

`pad` (LLaVA-1.5 stage 2) pads the image to a square with the image processor's mean colour, centred, so
that nothing is cropped away; `square` (LLaVA's default, used in stage 1) hands the image to the processor
as is (CLIP's processor resizes the short side and centre-crops; SigLIP's resizes to a square).
Evaluation applies the same `expand2square` when a checkpoint's config says `image_aspect_ratio: pad`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

ASPECT_RATIOS = ("square", "pad")


class UnreadableImage(Exception):
    """An image file that exists but cannot be decoded (a late, per-sample failure)."""


def expand2square(image: Image.Image, background: tuple[int, ...]) -> Image.Image:
    """Pad `image` to a square of its longer side, centred, filling with `background`."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    result = Image.new(image.mode, (side, side), background)
    result.paste(image, ((side - width) // 2, (side - height) // 2))
    return result


def background_color(image_processor) -> tuple[int, ...]:
    """The processor's mean colour in 0..255, as LLaVA pads with it."""
    return tuple(int(x * 255) for x in image_processor.image_mean)


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB, fully decoded; any decoding failure becomes `UnreadableImage`."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise UnreadableImage(f"cannot read image {path}: {error}") from error


class ImageTransform:
    """Path -> pixel tensor [3, H, W] as the vision tower expects, honouring `image_aspect_ratio`."""

    def __init__(self, image_processor, image_aspect_ratio: str = "square"):
        if image_aspect_ratio not in ASPECT_RATIOS:
            raise ValueError(
                f"--image_aspect_ratio {image_aspect_ratio!r} is not supported; use one of {', '.join(ASPECT_RATIOS)}"
            )
        self.image_processor = image_processor
        self.pad = image_aspect_ratio == "pad"
        self.background = background_color(image_processor)

    def __call__(self, path: str | Path) -> torch.Tensor:
        image = load_image(path)
        if self.pad:
            image = expand2square(image, self.background)
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
