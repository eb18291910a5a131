"""Draw shapes with OpenCV: antialiased, in any colour and style, on varied backgrounds.

`render_shape` makes one classification sample: a single shape in a square frame, with the image,
its label, the exact box of the drawn pixels and the mask. `draw_shape` is the one drawing routine
(also used by `geojax.data.scenes`); `sample_style` draws everything that is not geometry.

The variety is the point: models are judged on images from other people's renderers, so styles
cover filled, hatched, outline-only, dashed or dotted and filled-with-border shapes, thin to thick
strokes, hand-drawn jitter, flat, gradient and textured backgrounds, black-on-white line art, the seed generator's
flat dark backgrounds with bright inks, blur, noise and JPEG.

`render_no_shape` draws the same backgrounds with no whole shape in them (nothing, or a fragment
of a large shape cut by the border): training images labelled `geojax.NO_SHAPE`.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import numpy.typing as npt

from geojax import NO_SHAPE
from geojax.data.shapes import ShapeParams, class_index, sample_shape, shape_outline

SUBPIXEL_BITS = 4  # OpenCV's fixed-point drawing: coordinates in 1/16 pixel
SUPERSAMPLE = 8  # coverage from an 8x8 grid of samples per pixel
MASK_THRESHOLD = 0.5  # a pixel belongs to the shape when at least half of it is covered
# Background kinds: plain paper, the seed generator's flat dark, else flat / gradient / texture.
PAPER_P, DARK_P = 0.2, 0.2
DARK_MAX = 100  # the seed's background channels are uniform in 0..100, its inks in 50..255
DARK_INK_MIN = 50
DARK_MIN_CONTRAST = 0.1
# Shape-free samples: a fragment of a large shape (radius as a fraction of the frame) whose
# centre lies beyond a border, so that no whole shape shows; a few parallel lines across the
# frame (spacing and width as fractions of the frame and of the spacing); else the bare background.
FRAGMENT_P, STRIPES_P = 0.4, 0.25
STRIPES_SPACING, STRIPES_DUTY = (0.1, 0.4), (0.04, 0.25)
FRAGMENT_RADIUS = (0.4, 1.0)
FRAGMENT_OUTSIDE = (0.15, 0.7)  # the centre's distance beyond the border, in radii
# Sketch styles: a share of outlines is dashed or dotted, a share of fills hatched (with an
# outline), as people draw them.
DASHED_P, DASHES, DASH_DUTY = 0.3, (12, 29), (0.3, 0.7)  # fewer dashes read as sides
HATCHED_P, HATCH_SPACING, HATCH_DUTY = 0.25, (0.12, 0.3), (0.3, 0.6)  # spacing: of the radius
MIN_HATCH_SPACING = 2.5  # px
# A sketch style needs room and a quiet ground to be read: only shapes of radius >= this (px;
# 12 dashes of >= 2 px around the outline) and backgrounds other than textures get one. Below
# it, 12-28 dashes are dots of a pixel and hatching is a few blobs; on a blotchy texture a
# dashed outline dissolves into the blotches.
SKETCH_MIN_RADIUS = 8.0


@dataclasses.dataclass(frozen=True)
class ShapeStyle:
    """How one shape is painted: `fill` and/or `stroke` colour (RGB uint8), stroke width in px,
    and hand-drawn `jitter` as a fraction of the shape's radius (0 = exact geometry)."""

    fill: tuple[int, int, int] | None
    stroke: tuple[int, int, int] | None
    stroke_width: float = 1.0
    jitter: float = 0.0
    # Dashed or dotted outlines: `dashes` dashes around the centre (0 = a solid line), each
    # `dash_duty` of its period long. Hatched fills: parallel lines `hatch_spacing` px apart
    # (0 = a solid fill) at `hatch_angle`, `hatch_duty` of the spacing wide.
    dashes: int = 0
    dash_duty: float = 0.5
    dash_phase: float = 0.0
    hatch_spacing: float = 0.0
    hatch_angle: float = 0.0
    hatch_duty: float = 0.5


@dataclasses.dataclass(frozen=True)
class ImageStyle:
    """The whole picture: background kind and colours, and post effects."""

    background: str  # 'flat' | 'dark' (flat, the seed's: channels 0-100) | 'gradient' | 'texture'
    colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    gradient_angle: float = 0.0
    texture_scale: float = 8.0
    texture_strength: float = 0.0
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    jpeg_quality: int = 0  # 0 = no JPEG round trip


@dataclasses.dataclass(frozen=True)
class RenderedShape:
    """One sample: `image` uint8 [H, W, 3] RGB, `label`, `bbox` (x0, y0, x1, y1) with exclusive
    ends (the drawn pixels are x0 <= x < x1), `mask` bool [H, W] of the drawn pixels."""

    image: np.ndarray
    label: int
    bbox: tuple[int, int, int, int]
    mask: np.ndarray
    params: ShapeParams


def _luma(rgb: npt.ArrayLike) -> float:
    return float(np.dot(np.asarray(rgb, float), (0.299, 0.587, 0.114)) / 255.0)


def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    # Mix vivid hues with greys: other renderers use both.
    if rng.random() < 0.25:
        v = int(rng.integers(0, 256))
        return (v, v, v)
    hsv = np.array([[[rng.integers(0, 180), rng.integers(40, 256), rng.integers(40, 256)]]], np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return (int(r), int(g), int(b))


def contrasting_color(
    rng: np.random.Generator, against: tuple[int, int, int], min_contrast: float = 0.3
) -> tuple[int, int, int]:
    """A random colour whose luma differs from `against` by at least `min_contrast` (0..1)."""
    for _ in range(32):
        color = _random_color(rng)
        if abs(_luma(color) - _luma(against)) >= min_contrast:
            return color
    return (0, 0, 0) if _luma(against) > 0.5 else (255, 255, 255)


def sample_image_style(rng: np.random.Generator, effects: bool = True) -> ImageStyle:
    """Background and post effects. One picture in five is plain line-art on white or paper,
    one in five the seed generator's flat dark background (each channel 0-100)."""
    choice = rng.random()
    if choice < PAPER_P:
        v = int(rng.integers(225, 256))
        colors = ((v, v, v), (v, v, v))
        kind = "flat"
    elif choice < PAPER_P + DARK_P:
        dark = rng.integers(0, DARK_MAX + 1, size=3)
        colors = ((int(dark[0]), int(dark[1]), int(dark[2])),) * 2
        kind = "dark"
    else:
        kind = str(rng.choice(["flat", "gradient", "texture"], p=[0.4, 0.3, 0.3]))
        first = _random_color(rng)
        # Gradients and textures stay within a luma band so one shape colour contrasts with all.
        second = first if kind == "flat" else _near_color(rng, first)
        colors = (first, second)
    blur = noise = 0.0
    quality = 0
    if effects:
        blur = float(rng.uniform(0.3, 1.2)) if rng.random() < 0.25 else 0.0
        noise = float(rng.uniform(2, 12)) if rng.random() < 0.25 else 0.0
        quality = int(rng.integers(30, 95)) if rng.random() < 0.25 else 0
    return ImageStyle(
        background=kind,
        colors=colors,
        gradient_angle=float(rng.uniform(0, 2 * math.pi)),
        texture_scale=float(rng.uniform(3, 16)),
        texture_strength=float(rng.uniform(10, 40)) if kind == "texture" else 0.0,
        blur_sigma=blur,
        noise_sigma=noise,
        jpeg_quality=quality,
    )


def _dark_ink(rng: np.random.Generator, against: tuple[int, int, int]) -> tuple[int, int, int]:
    """The seed generator's ink on its dark backgrounds: each channel uniform in 50..255, redrawn
    (a few times) while its luma is within DARK_MIN_CONTRAST of the background's."""
    for _ in range(8):
        ink = rng.integers(DARK_INK_MIN, 256, size=3)
        color = (int(ink[0]), int(ink[1]), int(ink[2]))
        if abs(_luma(color) - _luma(against)) >= DARK_MIN_CONTRAST:
            break
    return color


def _near_color(rng: np.random.Generator, color: tuple[int, int, int]) -> tuple[int, int, int]:
    shifted = np.clip(np.asarray(color) + rng.integers(-60, 61, size=3), 0, 255)
    return (int(shifted[0]), int(shifted[1]), int(shifted[2]))


def sample_shape_style(
    rng: np.random.Generator, background: ImageStyle, radius: float, sketch: bool = True
) -> ShapeStyle:
    """Fill/stroke choice and colours that stand out from the background; with `sketch`, some
    outlines dashed and some fills hatched (DASHED_P, HATCHED_P) where the shape is large
    enough and the background not a texture (SKETCH_MIN_RADIUS)."""
    r, g, b = (int(c) for c in np.mean(background.colors, axis=0))
    base = (r, g, b)
    if background.colors[0] == background.colors[1] and _luma(base) > 0.85 and rng.random() < 0.5:
        ink: tuple[int, int, int] = (0, 0, 0)  # line-art on white
    elif background.background == "dark":
        ink = _dark_ink(rng, base)
    else:
        ink = contrasting_color(rng, base)
    mode = rng.choice(["filled", "outline", "bordered"], p=[0.45, 0.4, 0.15])
    max_width = max(1.5, radius * 0.12)
    width = float(rng.uniform(1.0, max_width))
    jitter = float(rng.uniform(0.005, 0.03)) if rng.random() < 0.25 else 0.0
    draws = rng.random(7)
    sketch = sketch and background.background != "texture" and radius >= SKETCH_MIN_RADIUS
    sketched = sketch and draws[0] < HATCHED_P
    if mode == "filled":
        if sketched:
            spacing = max(MIN_HATCH_SPACING, _between(draws[1], *HATCH_SPACING) * radius)
            return ShapeStyle(fill=ink, stroke=ink, stroke_width=width, jitter=jitter,
                              hatch_spacing=spacing, hatch_angle=math.pi * draws[2],
                              hatch_duty=_between(draws[3], *HATCH_DUTY))
        return ShapeStyle(fill=ink, stroke=None, jitter=jitter)
    if mode == "outline":
        dashes = int(_between(draws[4], *DASHES)) if sketch and draws[0] < DASHED_P else 0
        return ShapeStyle(fill=None, stroke=ink, stroke_width=width, jitter=jitter,
                          dashes=dashes, dash_duty=_between(draws[5], *DASH_DUTY),
                          dash_phase=float(draws[6]))
    return ShapeStyle(fill=ink, stroke=contrasting_color(rng, ink, 0.2), stroke_width=width,
                      jitter=jitter)


def draw_background(style: ImageStyle, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A float32 [H, W, 3] background in 0..255."""
    width, height = size
    c0, c1 = (np.asarray(c, np.float32) for c in style.colors)
    if style.background == "gradient":
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        d = xs * math.cos(style.gradient_angle) + ys * math.sin(style.gradient_angle)
        t = (d - d.min()) / max(float(np.ptp(d)), 1.0)
        return c0 + t[..., None] * (c1 - c0)
    image = np.broadcast_to(c0, (height, width, 3)).astype(np.float32)
    if style.background == "texture":
        small = (max(2, int(width / style.texture_scale)), max(2, int(height / style.texture_scale)))
        coarse: np.ndarray = rng.standard_normal((small[1], small[0], 1)).astype(np.float32)
        coarse = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)[..., None]
        fine = rng.standard_normal((height, width, 1)).astype(np.float32) * 0.3
        tint = (c1 - c0) / 60.0
        image = image + (coarse + fine) * style.texture_strength * (1 + tint)
    return image


def jittered_outline(
    points: np.ndarray, radius: float, amount: float, rng: np.random.Generator
) -> np.ndarray:
    """The outline as if drawn by hand: resampled about every 2 px along its length and displaced
    along the normal by smooth noise of `amount` * radius; corners stay where they were."""
    closed = np.vstack([points, points[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(len(points) * 4, int(arc[-1] / 2))
    s = np.linspace(0, arc[-1], n, endpoint=False)
    dense = np.stack([np.interp(s, arc, closed[:, i]) for i in range(2)], axis=1)
    tangent = np.roll(dense, -1, axis=0) - np.roll(dense, 1, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
    # Smooth noise: a few low-frequency sinusoids around the loop.
    phase = 2 * math.pi * s / arc[-1]
    offset = np.zeros(n)
    for k in range(1, 6):
        offset += rng.normal() / k * np.sin(k * phase + rng.uniform(0, 2 * math.pi))
    offset *= amount * radius / max(np.abs(offset).max(), 1e-9)
    return dense + normal * offset[:, None]


def _region_coverage(outline: np.ndarray, size: tuple[int, int], pad: float, paint) -> np.ndarray:
    """Coverage of what `paint(canvas, fixed_point_pts, scale)` draws, by 8x supersampling of the
    outline's neighbourhood (OpenCV's own LINE_AA edges sit ~0.7 px outside the true outline)."""
    width, height = size
    ss = SUPERSAMPLE
    x0, y0 = np.maximum(np.floor(outline.min(0) - pad), 0).astype(int)
    x1 = int(min(np.ceil(outline[:, 0].max() + pad) + 1, width))
    y1 = int(min(np.ceil(outline[:, 1].max() + pad) + 1, height))
    full = np.zeros((height, width), np.float32)
    if x1 <= x0 or y1 <= y0:
        return full
    fine = np.zeros(((y1 - y0) * ss, (x1 - x0) * ss), np.uint8)
    # Output pixel i spans [i - 0.5, i + 0.5]; its sub-pixel k has centre i - 0.5 + (k + 0.5)/ss.
    sub = (outline - (x0, y0)) * ss + (ss - 1) / 2
    paint(fine, np.round(sub * (1 << SUBPIXEL_BITS)).astype(np.int32).reshape(-1, 1, 2), ss)
    small = cv2.resize(fine, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    full[y0:y1, x0:x1] = small.astype(np.float32) / 255.0
    return full


def coverage(
    outline: np.ndarray, size: tuple[int, int], style: ShapeStyle
) -> tuple[np.ndarray, np.ndarray]:
    """Antialiased coverage (float32 0..1, [H, W]) of the fill and of the stroke."""
    width, height = size
    fill = stroke = np.zeros((height, width), np.float32)
    if style.fill is not None:
        fill = _region_coverage(outline, size, 1.0, lambda canvas, pts, ss: cv2.fillPoly(
            canvas, [pts], 255, cv2.LINE_8, shift=SUBPIXEL_BITS))
    if style.stroke is not None:
        width_px = style.stroke_width
        stroke = _region_coverage(
            outline, size, width_px / 2 + 1.0, lambda canvas, pts, ss: cv2.polylines(
                canvas, [pts], True, 255, max(1, round(width_px * ss)), cv2.LINE_8,
                shift=SUBPIXEL_BITS))
    return fill, stroke


def _between(u: float, low: float, high: float) -> float:
    return float(low + u * (high - low))


def sketch_patterns(center: tuple[float, float], size: tuple[int, int], style: ShapeStyle
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Where the fill and the stroke are inked ([H, W] float32 0/1): hatching lines across the
    frame, and dashes by the angle around the shape's centre (all ones for solid styles)."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    fill = stroke = np.ones((height, width), np.float32)
    if style.hatch_spacing > 0:
        d = xs * math.cos(style.hatch_angle) + ys * math.sin(style.hatch_angle)
        fill = (np.mod(d / style.hatch_spacing, 1.0) < style.hatch_duty).astype(np.float32)
    if style.dashes > 0:
        turn = np.arctan2(ys - center[1], xs - center[0]) / (2 * math.pi)
        stroke = (np.mod(turn * style.dashes + style.dash_phase, 1.0)
                  < style.dash_duty).astype(np.float32)
    return fill, stroke


def draw_shape(
    canvas: np.ndarray,
    params: ShapeParams,
    style: ShapeStyle,
    rng: np.random.Generator,
) -> np.ndarray:
    """Paint one shape onto a float32 [H, W, 3] canvas in place; returns its bool mask (of the
    whole outline and area, hatching gaps and dash gaps included)."""
    height, width = canvas.shape[:2]
    outline = shape_outline(params)
    if style.jitter > 0:
        outline = jittered_outline(outline, params.radius, style.jitter, rng)
    fill, stroke = coverage(outline, (width, height), style)
    mask = np.maximum(fill, stroke) >= MASK_THRESHOLD
    if style.hatch_spacing > 0 or style.dashes > 0:
        hatch, dash = sketch_patterns(params.center, (width, height), style)
        fill, stroke = fill * hatch, stroke * dash
    if style.fill is not None:
        canvas += fill[..., None] * (np.asarray(style.fill, np.float32) - canvas)
    if style.stroke is not None:
        canvas += stroke[..., None] * (np.asarray(style.stroke, np.float32) - canvas)
    return mask


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a mask's pixels, ends exclusive; all zeros for an empty mask."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return (0, 0, 0, 0)
    return (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)


def finish_image(canvas: np.ndarray, style: ImageStyle, rng: np.random.Generator) -> np.ndarray:
    """Post effects on the painted canvas (blur, sensor noise, JPEG), then uint8 RGB."""
    image = canvas
    if style.blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), style.blur_sigma)
    if style.noise_sigma > 0:
        image = image + rng.normal(0, style.noise_sigma, image.shape).astype(np.float32)
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    if style.jpeg_quality:
        ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, style.jpeg_quality])
        assert ok, "OpenCV failed to JPEG-encode an in-memory image"
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        assert decoded is not None, "OpenCV failed to decode the JPEG it encoded"
        image = decoded[..., ::-1]
    return np.ascontiguousarray(image)


def fragment_params(rng: np.random.Generator, label: int, img_size: int) -> ShapeParams:
    """A large shape of class `label` whose centre lies beyond one border of an `img_size`
    frame (FRAGMENT_OUTSIDE radii out), so that only a piece of it shows."""
    params = sample_shape(rng, label, (img_size, img_size), (0.5, 0.5), center=(0.0, 0.0))
    radius = float(rng.uniform(*FRAGMENT_RADIUS)) * img_size
    outside = float(rng.uniform(*FRAGMENT_OUTSIDE)) * radius
    along = float(rng.uniform(0, img_size - 1))
    side = int(rng.integers(4))
    across = -0.5 - outside if side < 2 else img_size - 0.5 + outside
    center = (across, along) if side % 2 == 0 else (along, across)
    return dataclasses.replace(params, radius=radius, center=center)


def stripes_style(style: ShapeStyle, u: np.ndarray, img_size: int) -> ShapeStyle:
    """`style`'s ink as a few parallel lines (STRIPES_SPACING of the frame apart, STRIPES_DUTY
    of that wide) across whatever it fills: `render_no_shape`'s stripes, from 3 uniforms `u`."""
    ink = style.fill if style.fill is not None else style.stroke
    return ShapeStyle(fill=ink, stroke=None,
                      hatch_spacing=_between(u[0], *STRIPES_SPACING) * img_size,
                      hatch_angle=math.pi * float(u[1]),
                      hatch_duty=_between(u[2], *STRIPES_DUTY))


def render_no_shape(rng: np.random.Generator, img_size: int, effects: bool = True
                    ) -> RenderedShape:
    """A training image with no whole shape: a background as `render_shape` draws them, bare,
    with a fragment of a large shape cut by the border (FRAGMENT_P), or with stripes across it
    (STRIPES_P). Label `NO_SHAPE`, no box."""
    image_style = sample_image_style(rng, effects)
    canvas = draw_background(image_style, (img_size, img_size), rng)
    params = fragment_params(rng, int(rng.integers(10)), img_size)
    style = sample_shape_style(rng, image_style, params.radius)
    kind, u = rng.random(3), rng.random(3)
    if kind[0] < FRAGMENT_P:
        draw_shape(canvas, params, style, rng)
    elif kind[0] < FRAGMENT_P + STRIPES_P:
        # Stripes: a hatched square far larger than the frame, centred on it.
        params = dataclasses.replace(params, label=class_index("square"), aspect=1.0,
                                     radius=2.0 * img_size,
                                     center=((img_size - 1) / 2, (img_size - 1) / 2))
        draw_shape(canvas, params, stripes_style(style, u, img_size), rng)
    image = finish_image(canvas, image_style, rng)
    empty = np.zeros((img_size, img_size), bool)
    return RenderedShape(image, NO_SHAPE, (0, 0, 0, 0), empty, params)


def render_shape(
    rng: np.random.Generator,
    img_size: int,
    label: int | str | None = None,
    size_range: tuple[float, float] = (0.3, 0.95),
    effects: bool = True,
) -> RenderedShape:
    """One random shape of `label` (random class if None) in an `img_size` square image."""
    if isinstance(img_size, bool) or not isinstance(img_size, int | np.integer) or img_size < 8:
        raise ValueError(f"img_size must be an int >= 8, got {img_size!r}")
    label = int(rng.integers(10)) if label is None else class_index(label)
    params = sample_shape(rng, label, (img_size, img_size), size_range)
    image_style = sample_image_style(rng, effects)
    canvas = draw_background(image_style, (img_size, img_size), rng)
    mask = draw_shape(canvas, params, sample_shape_style(rng, image_style, params.radius), rng)
    image = finish_image(canvas, image_style, rng)
    return RenderedShape(image, label, mask_bbox(mask), mask, params)
