"""Read images from files or bytes into the one form the project uses: RGB uint8 [H, W, 3].

Any mode a user may bring is prepared the same way: grayscale is repeated to three channels,
alpha is composited over white (how a viewer shows a transparent PNG), 16-bit is scaled to 8 bits.
The pixel count is checked from the header before decoding, so a decompression bomb is refused
without allocating it. Every failure raises `ImageError` naming the source and the problem.
"""

from __future__ import annotations

import io
import os
import warnings

import cv2
import numpy as np
from PIL import Image

DEFAULT_MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    """An image that cannot be used; the message names the file (or 'upload') and why."""


def _header_size(data: bytes, source: str) -> tuple[int, int]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                return probe.size
    except Image.DecompressionBombError as err:
        raise ImageError(f"{source}: image is too large to decode ({err})") from err
    except Exception as err:  # PIL raises many types for garbage; all mean the same here
        raise ImageError(f"{source}: not a readable image ({type(err).__name__}: {err})") from err


def decode_image(
    data: bytes, source: str = "upload", max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, BMP, TIFF, WebP...) to RGB uint8 [H, W, 3]."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ImageError(f"{source}: expected encoded image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageError(f"{source}: empty file")
    width, height = _header_size(bytes(data), source)
    if width * height > max_pixels:
        raise ImageError(
            f"{source}: {width}x{height} is {width * height:,} pixels, over the limit of "
            f"{max_pixels:,}"
        )
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.size == 0:
        raise ImageError(f"{source}: OpenCV could not decode the image data (corrupt or truncated)")
    return to_rgb8(raw)


def to_rgb8(raw: np.ndarray) -> np.ndarray:
    """An OpenCV-decoded array (gray, BGR or BGRA; 8, 16-bit or float) as RGB uint8."""
    if raw.dtype == np.uint16:
        img = raw.astype(np.float32) / 65535.0
    elif raw.dtype == np.uint8:
        img = raw.astype(np.float32) / 255.0
    else:
        img = np.clip(raw.astype(np.float32), 0.0, 1.0)
    if img.ndim == 2:
        img = img[..., None]
    channels = img.shape[2]
    if channels == 1:
        img = np.repeat(img, 3, axis=2)
    elif channels == 4:
        alpha = img[..., 3:4]
        img = img[..., :3] * alpha + (1.0 - alpha)
    elif channels != 3:
        raise ImageError(f"unsupported channel count {channels}")
    if channels in (3, 4):
        img = img[..., ::-1]  # OpenCV decodes to BGR
    return np.ascontiguousarray(np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8))


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as RGB uint8 [H, W, 3]; failures name the file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ImageError(f"{path}: cannot read file ({err.strerror})") from err
    return decode_image(data, source=str(path), max_pixels=max_pixels)


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """Pad the shorter side symmetrically with the median colour of the image's border.

    Squashing instead would change classes (a circle into an ellipse, a square into a rectangle).
    """
    height, width = image.shape[:2]
    if height == width:
        return image
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    fill = np.median(border, axis=0).astype(image.dtype)
    side = max(height, width)
    out = np.empty((side, side, image.shape[2]), image.dtype)
    out[...] = fill
    top, left = (side - height) // 2, (side - width) // 2
    out[top:top + height, left:left + width] = image
    return out


def resize_to(image: np.ndarray, size: int) -> np.ndarray:
    """Pad to square, then resize to `size` x `size` (area averaging when shrinking)."""
    image = pad_to_square(image)
    if image.shape[0] == size:
        return image
    interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def encode_png(image: np.ndarray) -> bytes:
    """RGB uint8 [H, W, 3] to PNG bytes."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise ImageError("OpenCV failed to encode PNG")
    return buf.tobytes()
