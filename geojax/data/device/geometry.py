"""Shapes as signed distances in JAX, per sample and with static shapes: the classes and rules
of `geojax.data.shapes`, drawn as the OpenCV renderer draws them.

- `sample_geometry` draws a class's free parameters by the rules and ranges of
  `geojax.data.shapes.sample_shape` (its constants are reused), `geometry_from_params` converts a
  CPU `ShapeParams` (same fields).
- `signed_distance` is the distance in pixels from each pixel centre to the outline (negative
  inside): every polygon class (the star too, which is not convex) is a polygon of at most
  `MAX_VERTICES` vertices, padded by repeating its last one; circles and ellipses are exact
  ellipses (a few fixed-point iterations to the nearest point), not polygons.
- Coverage comes from the distance: fill = clip(0.5 - d, 0, 1), stroke of width w =
  clip(w/2 + 0.5 - |d|, 0, 1), as a pixel-wide box filter across the edge. A pixel belongs to the
  mask when at least half covered (d <= 0 for a fill), as in `geojax.data.render`, whose 8x
  supersampled coverage this matches (IoU >= 0.98, the same box within a pixel; see the tests).
- Hand-drawn jitter moves the outline along its normal by smooth noise of the angle around the
  centre (the CPU renderer's noise runs along the arc length: same amplitude and smoothness).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from geojax import CLASSES
from geojax.data import render as cpu_render
from geojax.data import shapes
from geojax.data.render import SUPERSAMPLE

MAX_VERTICES = 10  # the star's; every other polygon class pads to it
ELLIPSE_ITERATIONS = 3  # within 0.04 px of converged in the drawn band (aspect 3, radius 100)
JITTER_HARMONICS = 5  # as geojax.data.render.jittered_outline
EDGE_BIAS = 0.5 / SUPERSAMPLE  # px; see `coverage`
Geometry = dict[str, jax.Array]

_CIRCLE, _SQUARE, _RECTANGLE, _TRIANGLE, _PENTAGON, _HEXAGON, _OCTAGON, _STAR, _RHOMBUS, \
    _ELLIPSE = (CLASSES.index(n) for n in ("circle", "square", "rectangle", "triangle",
                                           "pentagon", "hexagon", "octagon", "star",
                                           "rhombus", "ellipse"))


def geometry_from_params(params: shapes.ShapeParams) -> Geometry:
    """The device form of a CPU `ShapeParams` (float32 arrays)."""
    return {
        "label": jnp.int32(params.label),
        "center": jnp.asarray(params.center, jnp.float32),
        "radius": jnp.float32(params.radius),
        "rotation": jnp.float32(params.rotation),
        "aspect": jnp.float32(params.aspect),
        "angles": jnp.asarray(params.angles, jnp.float32),
        "inner_ratio": jnp.float32(params.inner_ratio),
    }


def _pad(points: jax.Array) -> jax.Array:
    """[n, 2] -> [MAX_VERTICES, 2], the last vertex repeated (zero-length edges)."""
    return jnp.concatenate([points, jnp.repeat(points[-1:], MAX_VERTICES - len(points), 0)])


def _regular(n: int) -> jax.Array:
    t = -math.pi / 2 + 2 * math.pi * np.arange(n) / n
    return _pad(jnp.asarray(np.stack([np.cos(t), np.sin(t)], 1), jnp.float32))


def unit_polygon(geometry: Geometry) -> jax.Array:
    """[MAX_VERTICES, 2] outline before rotation and translation, farthest point at 1, as
    `geojax.data.shapes.unit_outline` (circles and ellipses: unused, see `signed_distance`)."""
    a = geometry["aspect"]
    box = jnp.stack([jnp.stack([-a, -1.0]), jnp.stack([a, -1.0]), jnp.stack([a, 1.0]),
                     jnp.stack([-a, 1.0])])
    rhombus = jnp.stack([jnp.array([1.0, 0.0]), jnp.stack([0.0, 1 / a]),
                         jnp.array([-1.0, 0.0]), jnp.stack([0.0, -1 / a])])
    angle_a, angle_b = geometry["angles"][0], geometry["angles"][1]
    t0 = -math.pi / 2
    t = jnp.stack([t0, t0 + 2 * angle_b, t0 + 2 * angle_b + 2 * angle_a]).astype(jnp.float32)
    triangle = jnp.stack([jnp.cos(t), jnp.sin(t)], 1)
    ts = -math.pi / 2 + math.pi * np.arange(10) / 5
    r = jnp.where(np.arange(10) % 2 == 0, 1.0, geometry["inner_ratio"])
    star = jnp.stack([r * np.cos(ts), r * np.sin(ts)], 1)
    table = jnp.zeros((len(CLASSES), MAX_VERTICES, 2), jnp.float32)
    for label, pts in ((_SQUARE, box), (_RECTANGLE, box), (_RHOMBUS, rhombus),
                       (_TRIANGLE, triangle), (_STAR, star)):
        table = table.at[label].set(_pad(pts.astype(jnp.float32)))
    for label, n in ((_PENTAGON, 5), (_HEXAGON, 6), (_OCTAGON, 8)):
        table = table.at[label].set(_regular(n))
    pts = table[geometry["label"]]
    return pts / jnp.maximum(jnp.linalg.norm(pts, axis=1).max(), 1e-6)


def _is_ellipse(label: jax.Array) -> jax.Array:
    return (label == _CIRCLE) | (label == _ELLIPSE)


def _rotation(angle: jax.Array) -> jax.Array:
    """Row-vector rotation as `shapes.shape_outline`: frame = local @ R."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    return jnp.stack([jnp.stack([c, s]), jnp.stack([-s, c])])


def outline_extent(geometry: Geometry) -> tuple[jax.Array, jax.Array]:
    """Min and max (x, y) of the outline relative to the centre, in pixels."""
    r, a = geometry["radius"], geometry["aspect"]
    c, s = jnp.cos(geometry["rotation"]), jnp.sin(geometry["rotation"])
    # An ellipse with semi-axes r (local x) and r / a (local y), rotated.
    half = r * jnp.stack([jnp.sqrt(c**2 + (s / a) ** 2), jnp.sqrt(s**2 + (c / a) ** 2)])
    pts = unit_polygon(geometry) * r @ _rotation(geometry["rotation"])
    ellipse = _is_ellipse(geometry["label"])
    return jnp.where(ellipse, -half, pts.min(0)), jnp.where(ellipse, half, pts.max(0))


def uniform_between(u: jax.Array, low: float | jax.Array, high: float | jax.Array) -> jax.Array:
    """A uniform in [low, high) from a uniform `u` in [0, 1)."""
    return low + u * (high - low)


def uniform_integer(u: jax.Array, low: int, high: int) -> jax.Array:
    """An integer in [low, high) from a uniform `u` in [0, 1), as rng.integers."""
    return jnp.minimum(jnp.floor(uniform_between(u, low, high)), high - 1)


def _triangle_angles(u: jax.Array) -> jax.Array:
    """As `shapes._triangle_angles` (9 uniforms `u`): a third named forms (equilateral,
    isosceles, right), the rest uniform on the simplex of angles >= the minimum, permuted."""
    lo = math.radians(shapes.TRIANGLE_MIN_ANGLE_DEG)
    form = uniform_integer(u[0], 0, 6)
    apex = uniform_between(u[1], lo, math.pi - 2 * lo)
    other = uniform_between(u[2], lo, math.pi / 2 - lo)
    exponentials = -jnp.log1p(-u[3:6])  # Dirichlet(1, 1, 1) = normalised exponentials
    spare = exponentials / exponentials.sum() * (math.pi - 3 * lo) + lo
    angles = jnp.select(
        [form == 0, form == 1, form == 2],
        [jnp.full(3, math.pi / 3), jnp.stack([apex, (math.pi - apex) / 2, (math.pi - apex) / 2]),
         jnp.stack([jnp.float32(math.pi / 2), other, math.pi / 2 - other])],
        spare)
    return angles[jnp.argsort(u[6:9])].astype(jnp.float32)


def sample_geometry(key: jax.Array, label: jax.Array, size: int,
                    size_range: tuple[float, float] = (0.3, 0.95)) -> Geometry:
    """Random parameters of a shape of class `label` inside a `size` square frame, by the rules
    of `geojax.data.shapes.sample_shape` (extent, the rotated outline's bounding box, as a
    fraction of the frame, shrunk to leave the widest stroke and jitter room; placed so the
    outline stays inside the frame; aspect, angles and star ratios)."""
    lo, hi = size_range
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"size_range must satisfy 0 < low <= high <= 1, got {size_range}")
    # One draw of uniforms for everything (each jax.random call is a hash to compile and run).
    u = jax.random.uniform(key, (16,))
    low_half = jax.random.uniform(jax.random.fold_in(key, 1)) < 0.5
    elongation = uniform_between(u[1], shapes.ELONGATION_MIN, jnp.where(
        low_half, shapes.ELONGATION_LOW_MAX, shapes.ELONGATION_MAX))
    acute = jnp.deg2rad(uniform_between(u[2], *shapes.RHOMBUS_ANGLE_DEG))
    aspect = jnp.select([(label == _RECTANGLE) | (label == _ELLIPSE), label == _RHOMBUS],
                        [elongation, 1 / jnp.tan(acute / 2)], 1.0)
    triangle = jnp.where(label == _TRIANGLE, _triangle_angles(u[7:16]), jnp.full(3, math.pi / 3))
    inner = jnp.where(label == _STAR, uniform_between(u[3], *shapes.STAR_INNER_RATIO), 0.5)
    geometry = {
        "label": jnp.asarray(label, jnp.int32),
        "center": jnp.zeros(2, jnp.float32),
        "radius": jnp.float32(1.0),
        "rotation": u[4] * 2 * math.pi,
        "aspect": aspect.astype(jnp.float32),
        "angles": triangle.astype(jnp.float32),
        "inner_ratio": jnp.float32(inner),
    }
    # The extent is the rotated outline's bounding box (`shapes.radius_for_extent`).
    low, high = outline_extent(geometry)
    span = high - low
    fit = jnp.min((size - 2 * shapes.MARGIN_PX) / (span + 2 * shapes.MARGIN_FRACTION))
    radius = jnp.minimum(uniform_between(u[0], lo, hi) * size / span.max(), fit)
    geometry["radius"] = radius.astype(jnp.float32)
    low, high = low * radius, high * radius
    # The outline may touch the border, as in `shapes.sample_shape`.
    first = -low
    last = jnp.maximum(first, size - 1 - high)
    geometry["center"] = uniform_between(u[5:7], first, last)
    return geometry


def fragment_geometry(key: jax.Array, geometry: Geometry, size: int) -> Geometry:
    """`geometry` made large and centred beyond one border of the frame, so only a piece of it
    shows: the rules of `geojax.data.render.fragment_params`."""
    u = jax.random.uniform(key, (4,))
    radius = uniform_between(u[0], *cpu_render.FRAGMENT_RADIUS) * size
    outside = uniform_between(u[1], *cpu_render.FRAGMENT_OUTSIDE) * radius
    along = u[2] * (size - 1)
    side = uniform_integer(u[3], 0, 4)
    across = jnp.where(side < 2, -0.5 - outside, size - 0.5 + outside)
    center = jnp.where(side % 2 == 0, jnp.stack([across, along]), jnp.stack([along, across]))
    return {**geometry, "radius": radius.astype(jnp.float32),
            "center": center.astype(jnp.float32)}


def _polygon_distance(points: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Signed distance to a closed polygon [K, 2] (any simple polygon, degenerate edges
    allowed) at points x, y: the nearest edge's distance, the sign by crossing parity. The
    per-edge constants are computed for all edges at once; the pixel loop over edges is
    unrolled, so every pixel's work is one elementwise chain (no [..., K] intermediate and
    reduction, which XLA:CPU vectorises poorly)."""
    a = points
    b = jnp.roll(points, -1, axis=0)
    ax, ay = a[:, 0], a[:, 1]
    ex, ey = b[:, 0] - ax, b[:, 1] - ay
    inverse_length2 = 1.0 / jnp.maximum(ex * ex + ey * ey, 1e-12)
    slope = ex / jnp.where(ey == 0, 1.0, ey)
    low, high = jnp.minimum(ay, b[:, 1]), jnp.maximum(ay, b[:, 1])
    squared = inside = None
    for k in range(points.shape[0]):
        wx, wy = x - ax[k], y - ay[k]
        t = jnp.clip((wx * ex[k] + wy * ey[k]) * inverse_length2[k], 0.0, 1.0)
        edge = (wx - ex[k] * t) ** 2 + (wy - ey[k] * t) ** 2
        # The edge crosses the row (half-open in y) left of the pixel.
        crosses = (y >= low[k]) & (y < high[k]) & (x < ax[k] + wy * slope[k])
        squared = edge if squared is None else jnp.minimum(squared, edge)
        inside = crosses if inside is None else inside ^ crosses
    assert squared is not None and inside is not None  # a polygon has edges
    return jnp.where(inside, -1.0, 1.0) * jnp.sqrt(squared)


def _norm(x: jax.Array, y: jax.Array) -> jax.Array:
    """sqrt(x^2 + y^2), for pixel-scale values: `jnp.hypot` guards against overflow with a
    divide, a max, a min and selects, which made up half of the ellipse distance's work on a
    GPU (scripts/gpu_aot_report.py)."""
    return jnp.sqrt(x * x + y * y)


def _ellipse_distance(x: jax.Array, y: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """Signed distance to the ellipse with semi-axes a (x) and b (y), centred at the origin:
    fixed-point iteration to the nearest point on the quarter arc (exact for a circle)."""
    px, py = jnp.abs(x), jnp.abs(y)
    tx = ty = jnp.full(x.shape, math.sqrt(0.5), jnp.float32)
    for _ in range(ELLIPSE_ITERATIONS):
        ex = (a * a - b * b) * tx**3 / a
        ey = (b * b - a * a) * ty**3 / b
        rx, ry = a * tx - ex, b * ty - ey
        qx, qy = px - ex, py - ey
        r = _norm(rx, ry)
        q = jnp.maximum(_norm(qx, qy), 1e-6)
        # (qx * r / q, not qx * (r / q): the shared ratio made XLA:CPU 3x slower.)
        tx = jnp.clip((qx * r / q + ex) / a, 0.0, 1.0)
        ty = jnp.clip((qy * r / q + ey) / b, 0.0, 1.0)
        t2 = tx * tx + ty * ty
        degenerate = t2 < 1e-12  # the very centre: the nearest point is on the minor axis
        inv_t = jax.lax.rsqrt(jnp.where(degenerate, 1.0, t2))
        tx, ty = jnp.where(degenerate, 0.0, tx * inv_t), jnp.where(degenerate, 1.0, ty * inv_t)
    distance = _norm(px - a * tx, py - b * ty)
    inside = (px / a) ** 2 + (py / b) ** 2 < 1.0
    return jnp.where(inside, -distance, distance)


def signed_distance(geometry: Geometry, size: int, jitter: jax.Array | None = None) -> jax.Array:
    """[size, size] signed distance (px) from each pixel centre to the outline, negative
    inside; `jitter` [JITTER_HARMONICS, 2] (amplitude-scaled, see `render.sample_style`)
    bends it."""
    coords = jnp.arange(size, dtype=jnp.float32)
    fx = coords[None, :] - geometry["center"][0]
    fy = coords[:, None] - geometry["center"][1]
    rot = _rotation(geometry["rotation"])
    # Local coordinates: frame = local @ rot, so local = frame @ rot.T.
    lx = fx * rot[0, 0] + fy * rot[0, 1]
    ly = fx * rot[1, 0] + fy * rot[1, 1]
    r = geometry["radius"]
    polygon = _polygon_distance(unit_polygon(geometry) * r, lx, ly)
    ellipse = _ellipse_distance(lx, ly, r, r / geometry["aspect"])
    distance = jnp.where(_is_ellipse(geometry["label"]), ellipse, polygon)
    if jitter is not None:
        # sum_k a_k sin(k phase + u_k) = sum_k a_k (sin(k phase) cos u_k + cos(k phase) sin u_k),
        # with cos and sin of k * phase by repeated rotation from (lx, ly) / |(lx, ly)|: no
        # arctan2 and no sines per pixel.
        norm2 = lx * lx + ly * ly
        inv_norm = jax.lax.rsqrt(jnp.where(norm2 > 0, norm2, 1.0))
        c1 = jnp.where(norm2 > 0, lx * inv_norm, 1.0)
        s1 = jnp.where(norm2 > 0, ly * inv_norm, 0.0)
        a_cos = jitter[:, 0] * jnp.cos(jitter[:, 1])
        a_sin = jitter[:, 0] * jnp.sin(jitter[:, 1])
        ck, sk = c1, s1
        for k in range(JITTER_HARMONICS):
            distance = distance - (a_cos[k] * sk + a_sin[k] * ck)
            ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
    return distance


def coverage(distance: jax.Array, stroke_width: jax.Array | float) -> tuple[jax.Array, jax.Array]:
    """Antialiased fill and stroke coverage (0..1) from a signed distance.

    The CPU renderer's supersampled raster counts the sub-samples the edge passes through, so
    its shapes reach half a sub-sample (1/16 px) beyond the exact outline: the same here. (It
    also draws a stroke of width w as round(8 w) / 8: `cpu_stroke_width`.)"""
    fill = jnp.clip(0.5 + EDGE_BIAS - distance, 0.0, 1.0)
    stroke = jnp.clip(stroke_width / 2 + 0.5 + EDGE_BIAS - jnp.abs(distance), 0.0, 1.0)
    return fill, stroke


def cpu_stroke_width(width: float) -> float:
    """The width the CPU renderer actually strokes for `width`: whole sub-samples."""
    return max(1, round(width * SUPERSAMPLE)) / SUPERSAMPLE
