"""Read images from files or bytes into the one form the project uses: RGB uint8 [H, W, 3].

Any mode a user may bring is prepared the same way: grayscale is repeated to three channels,
alpha is composited over white (how a viewer shows a transparent PNG), 16-bit is scaled to 8 bits.
The pixel count and the longest side are checked from the header before decoding, so a
decompression bomb or a 1,000,000 x 40 strip is refused without allocating it; decoding goes
straight to uint8 (3 bytes per pixel, no float copies), and `resize_to` shrinks before it pads, so
preparing an image for the model never holds more than the decoded image and a model-sized one.
Every failure, OpenCV's own errors and a failed allocation included, raises `ImageError` naming
the source and the problem.
"""

from __future__ import annotations

import io
import os
import re
import warnings

import cv2
import numpy as np
from PIL import Image

from geojax.core.errors import UserError

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_SIDE = 20_000


class ImageError(UserError, ValueError):
    """An image that cannot be used; the message names the file (or 'upload') and why."""


class ImageTooLarge(ImageError):
    """An image over the pixel or side limit (HTTP 413 at the proxy)."""


def _header_size(data: bytes, source: str) -> tuple[int, int]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                return probe.size
    except Image.DecompressionBombError as err:
        raise ImageTooLarge(f"{source}: image is too large to decode ({err})") from err
    except Exception as err:  # PIL raises many types for garbage; all mean the same here
        # PIL names its file object ("<_io.BytesIO object at 0x7f...>"): no addresses out.
        reason = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(err))
        raise ImageError(f"{source}: not a readable image ({type(err).__name__}: "
                         f"{reason})") from err


def check_size(width: int, height: int, source: str = "upload",
               max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int = DEFAULT_MAX_SIDE) -> None:
    """Raise `ImageTooLarge` for more than `max_pixels` pixels or a side over `max_side`."""
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{source}: {width}x{height} is {width * height:,} pixels, over the limit of "
            f"{max_pixels:,}"
        )
    if max(width, height) > max_side:
        raise ImageTooLarge(f"{source}: {width}x{height} has a side of {max(width, height):,} "
                            f"pixels, over the limit of {max_side:,}")


def decode_image(
    data: bytes, source: str = "upload", max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
) -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, BMP, TIFF, WebP...) to RGB uint8 [H, W, 3]."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ImageError(f"{source}: expected encoded image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageError(f"{source}: empty file")
    width, height = _header_size(bytes(data), source)
    check_size(width, height, source, max_pixels, max_side)
    try:
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.size == 0:
            raise ImageError(f"{source}: OpenCV could not decode the image data "
                             "(corrupt or truncated)")
        # The header may understate what the decoder produced (a lying or multi-frame file).
        check_size(raw.shape[1], raw.shape[0], source, max_pixels, max_side)
        return to_rgb8(raw)
    except cv2.error as err:
        reason = (err.err or str(err)).strip().splitlines()[-1]
        raise ImageError(f"{source}: OpenCV could not decode the image ({reason})") from err
    except MemoryError as err:
        raise ImageTooLarge(f"{source}: not enough memory to decode a {width}x{height} "
                            "image") from err


def to_rgb8(raw: np.ndarray) -> np.ndarray:
    """An OpenCV-decoded array (gray, BGR or BGRA; 8, 16-bit or float) as RGB uint8.

    8-bit images (nearly all) never leave uint8; alpha is composited over white in 16-bit
    integers."""
    if raw.dtype == np.uint16:
        raw = cv2.convertScaleAbs(raw, alpha=255.0 / 65535.0)  # rounds and saturates
    elif raw.dtype != np.uint8:
        raw = np.clip(raw.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[..., 0]
    channels = 1 if raw.ndim == 2 else raw.shape[2]
    if channels == 1:
        return cv2.cvtColor(raw, cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(raw, cv2.COLOR_BGR2RGB, dst=raw)  # in place: no second copy
    if channels != 4:
        raise ImageError(f"unsupported channel count {channels}")
    rgb = cv2.cvtColor(raw, cv2.COLOR_BGRA2RGB)
    alpha = raw[..., 3]
    if alpha.min() == 255:
        return rgb
    # rgb * a / 255 + 255 * (1 - a / 255), rounded: (rgb * a + 255 * (255 - a) + 127) // 255
    a = alpha[..., None].astype(np.uint16)
    out = rgb.astype(np.uint16) * a
    out += (255 - a) * 255 + 127
    out //= 255
    return out.astype(np.uint8)


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Read an image file as RGB uint8 [H, W, 3]; failures name the file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ImageError(f"{path}: cannot read file ({err.strerror})") from err
    return decode_image(data, source=str(path), max_pixels=max_pixels, max_side=max_side)


def border_color(image: np.ndarray) -> np.ndarray:
    """The median colour of the image's outermost pixels."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.median(border, axis=0).astype(image.dtype)


def pad_to_square(image: np.ndarray, fill: np.ndarray | None = None) -> np.ndarray:
    """Pad the shorter side symmetrically with `fill` (default: the median colour of the
    image's border).

    Squashing instead would change classes (a circle into an ellipse, a square into a rectangle).
    """
    height, width = image.shape[:2]
    if height == width:
        return image
    fill = border_color(image) if fill is None else fill
    side = max(height, width)
    out = np.empty((side, side, image.shape[2]), image.dtype)
    out[...] = fill
    top, left = (side - height) // 2, (side - width) // 2
    out[top:top + height, left:left + width] = image
    return out


def resize_to(image: np.ndarray, size: int) -> np.ndarray:
    """`size` x `size` with the image's aspect ratio kept: the longer side scaled to `size`
    (area averaging when shrinking), the shorter padded with the border's median colour.

    Shrinking comes first, so a long strip never becomes a huge square."""
    height, width = image.shape[:2]
    if height == width == size:
        return image
    scale = size / max(height, width)
    shape = (max(1, min(size, round(width * scale))), max(1, min(size, round(height * scale))))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    fill = border_color(image)
    resized = cv2.resize(image, shape, interpolation=interp) if shape != (width, height) else image
    if resized.ndim == 2:
        resized = resized[..., None]
    return pad_to_square(resized, fill)


def encode_png(image: np.ndarray) -> bytes:
    """RGB uint8 [H, W, 3] to PNG bytes."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise ImageError("OpenCV failed to encode PNG")
    return buf.tobytes()
