"""Shape geometry: what each of the ten classes *is*, as outlines in pixel coordinates.

A class is defined by geometry that holds at any rotation, so a renderer (OpenCV here, JAX on
accelerators) only has to fill or stroke the outline:

- circle: one radius; ellipse: two axes with ratio 1.25-3 (visibly elongated)
- square: four equal sides, right angles; rectangle: right angles, side ratio 1.25-3
- rhombus: four equal sides, acute angle 40-80 degrees (10 degrees or more from a square)
- triangle: any triangle whose smallest angle is >= 20 degrees (equilateral, isosceles, right,
  scalene, obtuse)
- pentagon, hexagon, octagon: regular
- star: five points, inner radius 0.3-0.6 of the outer (a pentagon's would be 0.81)

Coordinates follow OpenCV: x right, y down, and pixel (i, j) has its centre at (i, j), so it
spans [i - 0.5, i + 0.5]. `sample_shape` draws the free parameters of a class; `shape_outline` turns them into a closed
polygon (curves are sampled densely enough to be smooth at the drawn size).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from geojax import CLASSES

# The seed's generator draws rectangles and ellipses from 1.25:1 and rhombi with acute angles of
# 58-80 degrees; each boundary keeps a margin to its neighbour class (DESIGN.md, "Classes").
ELONGATION_MIN = 1.25
ELONGATION_MAX = 3.0
# Half of the elongated shapes are drawn up to 2:1 only, so the low ratios nearest the square
# and the circle (the seed's are 1.25-2) are not rare.
ELONGATION_LOW_MAX = 2.0
RHOMBUS_ANGLE_DEG = (40.0, 80.0)
TRIANGLE_MIN_ANGLE_DEG = 20.0
STAR_INNER_RATIO = (0.3, 0.6)
REGULAR_SIDES = {"pentagon": 5, "hexagon": 6, "octagon": 8}
MARGIN_FRACTION = 0.1  # of the radius: half the widest stroke (0.06) plus jitter (0.03)
MARGIN_PX = 2.0


@dataclasses.dataclass(frozen=True)
class ShapeParams:
    """The free parameters of one shape, in pixel units of the frame it is drawn in.

    `radius` is the distance from `center` to the farthest point of the outline; `aspect` is the
    long/short ratio for elongated classes; `angles` are a triangle's angles (radians, summing to
    pi); `inner_ratio` is a star's inner/outer radius.
    """

    label: int
    center: tuple[float, float]
    radius: float
    rotation: float
    aspect: float = 1.0
    angles: tuple[float, float, float] = (math.pi / 3,) * 3
    inner_ratio: float = 0.5

    @property
    def name(self) -> str:
        return CLASSES[self.label]


def style_margin(radius: float) -> float:
    """Room to leave around an outline: the widest stroke and jitter a style may add
    (see `geojax.data.render.sample_shape_style`), plus the antialiased edge."""
    return MARGIN_FRACTION * radius + MARGIN_PX


def class_index(name_or_label: str | int) -> int:
    """The label of a class given by name or index; anything else fails naming the valid ones."""
    if isinstance(name_or_label, str):
        if name_or_label not in CLASSES:
            raise ValueError(f"unknown shape class {name_or_label!r}; valid: {', '.join(CLASSES)}")
        return CLASSES.index(name_or_label)
    if isinstance(name_or_label, bool) or not isinstance(name_or_label, int | np.integer):
        raise TypeError(f"a shape class is a name or an int label, got {type(name_or_label)}")
    if not 0 <= name_or_label < len(CLASSES):
        raise ValueError(f"label {name_or_label} out of range 0..{len(CLASSES) - 1}")
    return int(name_or_label)


def _triangle_angles(rng: np.random.Generator) -> tuple[float, float, float]:
    """Angles of a random triangle with every angle >= TRIANGLE_MIN_ANGLE_DEG.

    A third of the time a named form is drawn outright (equilateral, isosceles, right) so the
    common textbook triangles are never rare.
    """
    lo = math.radians(TRIANGLE_MIN_ANGLE_DEG)
    form = rng.integers(6)
    if form == 0:
        angles = (math.pi / 3,) * 3
    elif form == 1:
        apex = rng.uniform(lo, math.pi - 2 * lo)
        angles = (apex, (math.pi - apex) / 2, (math.pi - apex) / 2)
    elif form == 2:
        other = rng.uniform(lo, math.pi / 2 - lo)
        angles = (math.pi / 2, other, math.pi / 2 - other)
    else:
        # Uniform on the simplex of angles restricted to the minimum: spread pi - 3*lo freely.
        spare = rng.dirichlet((1.0, 1.0, 1.0)) * (math.pi - 3 * lo)
        first, second, third = (float(a) for a in spare + lo)
        angles = (first, second, third)
    i, j, k = rng.permutation(3)
    return (float(angles[i]), float(angles[j]), float(angles[k]))


def sample_shape(
    rng: np.random.Generator,
    label: int | str,
    frame: tuple[int, int],
    size_range: tuple[float, float] = (0.3, 0.95),
    center: tuple[float, float] | None = None,
) -> ShapeParams:
    """Random parameters for a shape of `label` that fits inside a `frame` of (width, height).

    `size_range` bounds the shape's extent (the larger side of its rotated outline's bounding
    box, as other renderers and the held-out sets measure it) as a fraction of the frame's
    shorter side; a shape too large to fit with its style margin is shrunk until it does. The
    centre is drawn so the whole outline stays inside the frame (touching the border is
    allowed), unless given.
    """
    label = class_index(label)
    width, height = frame
    if width <= 0 or height <= 0:
        raise ValueError(f"frame must have positive width and height, got {frame}")
    lo, hi = size_range
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"size_range must satisfy 0 < low <= high <= 1, got {size_range}")
    name = CLASSES[label]
    extent = rng.uniform(lo, hi) * min(width, height)
    rotation = rng.uniform(0, 2 * math.pi)
    aspect = 1.0
    angles: tuple[float, float, float] = (math.pi / 3,) * 3
    inner = 0.5
    if name in ("rectangle", "ellipse"):
        aspect = rng.uniform(ELONGATION_MIN,
                             ELONGATION_LOW_MAX if rng.random() < 0.5 else ELONGATION_MAX)
    elif name == "rhombus":
        acute = math.radians(rng.uniform(*RHOMBUS_ANGLE_DEG))
        aspect = 1 / math.tan(acute / 2)
    elif name == "triangle":
        angles = _triangle_angles(rng)
    elif name == "star":
        inner = rng.uniform(*STAR_INNER_RATIO)
    unit = ShapeParams(label, (0.0, 0.0), 1.0, rotation, aspect, angles, inner)
    radius = radius_for_extent(unit, extent, (width, height))
    params = dataclasses.replace(unit, radius=radius)
    if center is None:
        # Centre so the rotated outline lies inside the frame. It may touch the border (a
        # stroke there is cut by half its width), as other people's shapes often do: the seed's
        # generator places the bounding box anywhere inside the frame.
        pts = shape_outline(params)
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        cx = rng.uniform(-x0, max(-x0, width - 1 - x1))
        cy = rng.uniform(-y0, max(-y0, height - 1 - y1))
        center = (float(cx), float(cy))
    return dataclasses.replace(params, center=center)


def radius_for_extent(unit: ShapeParams, extent: float, frame: tuple[int, int]) -> float:
    """The radius at which the outline of `unit` (radius 1) spans `extent` px (its bounding
    box's larger side), shrunk so that it fits a `frame` of (width, height) with the style
    margin on every side."""
    pts = unit_outline(dataclasses.replace(unit, radius=64.0))
    c, s = math.cos(unit.rotation), math.sin(unit.rotation)
    pts = pts @ np.array([[c, s], [-s, c]])
    span_x, span_y = pts.max(0) - pts.min(0)
    fit = min((frame[0] - 2 * MARGIN_PX) / (span_x + 2 * MARGIN_FRACTION),
              (frame[1] - 2 * MARGIN_PX) / (span_y + 2 * MARGIN_FRACTION))
    return float(min(extent / max(span_x, span_y), fit))


def _curve_points(radius: float) -> int:
    """Vertices for a smooth ellipse or circle: about one per pixel of circumference."""
    return int(np.clip(2 * math.pi * radius, 32, 720))


def unit_outline(params: ShapeParams) -> np.ndarray:
    """The outline before rotation and translation: [K, 2] points, farthest point at distance 1."""
    name = params.name
    if name in ("circle", "ellipse"):
        t = np.linspace(0, 2 * math.pi, _curve_points(params.radius), endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t) / params.aspect], axis=1)
    elif name in ("square", "rectangle"):
        a = params.aspect
        pts = np.array([[-a, -1], [a, -1], [a, 1], [-a, 1]], dtype=np.float64)
    elif name == "rhombus":
        # Diagonals along x and y; aspect = long/short diagonal = cot(acute / 2).
        pts = np.array([[1, 0], [0, 1 / params.aspect], [-1, 0], [0, -1 / params.aspect]], float)
    elif name == "triangle":
        pts = _triangle_vertices(params.angles)
    elif name in REGULAR_SIDES:
        n = REGULAR_SIDES[name]
        t = -math.pi / 2 + 2 * math.pi * np.arange(n) / n
        pts = np.stack([np.cos(t), np.sin(t)], axis=1)
    elif name == "star":
        t = -math.pi / 2 + math.pi * np.arange(10) / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, params.inner_ratio)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    else:  # pragma: no cover - CLASSES and this table change together
        raise AssertionError(name)
    return pts / np.linalg.norm(pts, axis=1).max()


def _triangle_vertices(angles: tuple[float, float, float]) -> np.ndarray:
    """Vertices of a triangle with the given angles, centred on its circumcentre."""
    # On the circumcircle, the vertex opposite angle A sits 2A of arc away from its neighbours.
    a, b, _ = angles
    t0 = -math.pi / 2
    t = np.array([t0, t0 + 2 * b, t0 + 2 * b + 2 * a])
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def shape_outline(params: ShapeParams) -> np.ndarray:
    """The closed outline of a shape in frame pixel coordinates: [K, 2] float (x, y)."""
    pts = unit_outline(params) * params.radius
    c, s = math.cos(params.rotation), math.sin(params.rotation)
    rot = np.array([[c, s], [-s, c]])
    return pts @ rot + np.asarray(params.center)
