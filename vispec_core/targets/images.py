"""Images in, with errors that say what is wrong: a missing file, a corrupt one, a wrong type.
Every image is turned upright (its EXIF orientation) and to 8-bit RGB, 16-bit and float ones scaled."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_PLACE = "<image>"   # where an image goes in a user prompt; without one, images precede the text


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB. PIL's own conversion clips 16-bit and float pixels to white: 16-bit ("I;16")
    is scaled by its full range, 32-bit integer ("I") and float ("F") by the image's own value range."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        x = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            x = x / 257.0
        else:
            low, high = float(x.min()), float(x.max())
            x = (x - low) * (255.0 / (high - low)) if high > low else np.clip(x, 0, 255)
        image = Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


def load_image(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"Image file not found: {path}. Check the path (relative paths start at {Path.cwd()}).")
        try:
            with Image.open(path) as im:
                im.load()
                return to_rgb(im)
        except Image.DecompressionBombError as e:
            raise ValueError(f"Image {path} has more pixels than PIL reads safely ({e}); downscale it first.") from e
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f"Cannot read image {path}: the file is corrupt or not an image ({e}).") from e
    raise TypeError(f"An image must be a PIL.Image or a file path, not {type(image).__name__}.")


def load_images(images) -> list[Image.Image]:
    if images is None:
        return []
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]
    return [load_image(im) for im in images]


def interleave(prompt: str, n_images: int) -> list[dict]:
    """User content as a list of text and image items, images at the prompt's places."""
    places = prompt.count(IMAGE_PLACE)
    if places == 0:
        parts = [""] * n_images + [prompt]
    elif places != n_images:
        raise ValueError(
            f"The prompt has {places} image place(s) ('{IMAGE_PLACE}') but {n_images} image(s) were given; "
            "pass one image per place."
        )
    else:
        parts = prompt.split(IMAGE_PLACE)
    content = []
    for i, text in enumerate(parts):
        if text:
            content.append({"type": "text", "text": text})
        if i < len(parts) - 1:
            content.append({"type": "image"})
    return content
