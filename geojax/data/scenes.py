"""Compose detection scenes: an image of any size with 0..N shapes and their ground truth.

Shapes are placed without overlap by default (their boxes, grown by a margin, are disjoint);
with `overlap=True` they may cover each other and each box is the extent of that shape's own
drawn pixels. Ground truth is what the detection tests and metrics compare against.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from geojax.data.render import (
    draw_background,
    draw_shape,
    finish_image,
    mask_bbox,
    sample_image_style,
    sample_shape_style,
)
from geojax.data.shapes import sample_shape, shape_outline, style_margin


@dataclasses.dataclass(frozen=True)
class Scene:
    """`image` uint8 [H, W, 3] RGB; `boxes` int [K, 4] (x0, y0, x1, y1, ends exclusive);
    `labels` int [K]."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


def _overlaps(box: np.ndarray, placed: list[np.ndarray], margin: float) -> bool:
    for other in placed:
        if (box[0] - margin < other[2] and other[0] < box[2] + margin
                and box[1] - margin < other[3] and other[1] < box[3] + margin):
            return True
    return False


def compose_scene(
    rng: np.random.Generator,
    width: int = 640,
    height: int = 480,
    num_shapes: tuple[int, int] = (1, 6),
    size_range: tuple[float, float] = (0.12, 0.35),
    overlap: bool = False,
    effects: bool = True,
    margin: float = 2.0,
) -> Scene:
    """A random scene with between num_shapes[0] and num_shapes[1] shapes (inclusive).

    `size_range` is each shape's extent as a fraction of the scene's shorter side. When the
    shapes do not fit without overlap after a bounded number of tries, fewer are placed.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"scene width and height must be positive, got {width}x{height}")
    lo, hi = num_shapes
    if not 0 <= lo <= hi:
        raise ValueError(f"num_shapes must satisfy 0 <= min <= max, got {num_shapes}")
    wanted = int(rng.integers(lo, hi + 1))
    style = sample_image_style(rng, effects)
    canvas = draw_background(style, (width, height), rng)
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    placed: list[np.ndarray] = []
    for _ in range(wanted):
        for _attempt in range(50):
            params = sample_shape(rng, int(rng.integers(10)), (width, height), size_range)
            pts = shape_outline(params)
            grow = style_margin(params.radius)
            extent = np.concatenate([pts.min(0) - grow, pts.max(0) + grow])
            if overlap or not _overlaps(extent, placed, margin):
                break
        else:
            break
        # Solid strokes and fills only: a dashed outline or hatched fill is many contours to
        # the contour proposals (classifying such crops is the training renderer's job).
        shape_style = sample_shape_style(rng, style, params.radius, sketch=False)
        mask = draw_shape(canvas, params, shape_style, rng)
        placed.append(extent)
        boxes.append(np.asarray(mask_bbox(mask)))
        labels.append(params.label)
    image = finish_image(canvas, style, rng)
    return Scene(
        image=image,
        boxes=np.asarray(boxes, np.int32).reshape(-1, 4),
        labels=np.asarray(labels, np.int32),
    )
