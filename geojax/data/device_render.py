"""Draw shapes in JAX, on the accelerator: the classes, rules and styles of the OpenCV renderer.

Everything is per sample, with static shapes, so `jax.vmap` and `jax.jit` take it as is:

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
- `sample_style` draws fill/outline/bordered styles, colours that contrast with the background,
  flat, the seed's flat dark, gradient and textured backgrounds and the blur/noise effects, as
  `geojax.data.render.sample_image_style` / `sample_shape_style` do (JPEG has no device form).
- `render_sample` draws a shape-free sample (label `geojax.NO_SHAPE`: a bare background, a
  fragment of a large shape cut by the border, `fragment_geometry`, or stripes) with probability
  `no_shape_fraction`, as `geojax.data.render.render_no_shape`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from geojax import CLASSES, NO_SHAPE
from geojax.data import render as cpu_render
from geojax.data import shapes
from geojax.data.device_augment import (
    gaussian_blur,
    hsv_to_rgb,
    luma,
    materialise,
    standard_normal,
)
from geojax.data.render import SUPERSAMPLE

MAX_VERTICES = 10  # the star's; every other polygon class pads to it
ELLIPSE_ITERATIONS = 3  # within 0.04 px of converged in the drawn band (aspect 3, radius 100)
JITTER_HARMONICS = 5  # as geojax.data.render.jittered_outline
TEXTURE_MIN_SCALE = 3.0
EDGE_BIAS = 0.5 / SUPERSAMPLE  # px; see `coverage`
Geometry = dict[str, jax.Array]
Style = dict[str, jax.Array]

_CIRCLE, _SQUARE, _RECTANGLE, _TRIANGLE, _PENTAGON, _HEXAGON, _OCTAGON, _STAR, _RHOMBUS, \
    _ELLIPSE = (CLASSES.index(n) for n in ("circle", "square", "rectangle", "triangle",
                                           "pentagon", "hexagon", "octagon", "star",
                                           "rhombus", "ellipse"))


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


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


def _between(u: jax.Array, low: float | jax.Array, high: float | jax.Array) -> jax.Array:
    """A uniform in [low, high) from a uniform `u` in [0, 1)."""
    return low + u * (high - low)


def _integer(u: jax.Array, low: int, high: int) -> jax.Array:
    """An integer in [low, high) from a uniform `u` in [0, 1), as rng.integers."""
    return jnp.minimum(jnp.floor(_between(u, low, high)), high - 1)


def _triangle_angles(u: jax.Array) -> jax.Array:
    """As `shapes._triangle_angles` (9 uniforms `u`): a third named forms (equilateral,
    isosceles, right), the rest uniform on the simplex of angles >= the minimum, permuted."""
    lo = math.radians(shapes.TRIANGLE_MIN_ANGLE_DEG)
    form = _integer(u[0], 0, 6)
    apex = _between(u[1], lo, math.pi - 2 * lo)
    other = _between(u[2], lo, math.pi / 2 - lo)
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
    elongation = _between(u[1], shapes.ELONGATION_MIN, jnp.where(
        low_half, shapes.ELONGATION_LOW_MAX, shapes.ELONGATION_MAX))
    acute = jnp.deg2rad(_between(u[2], *shapes.RHOMBUS_ANGLE_DEG))
    aspect = jnp.select([(label == _RECTANGLE) | (label == _ELLIPSE), label == _RHOMBUS],
                        [elongation, 1 / jnp.tan(acute / 2)], 1.0)
    triangle = jnp.where(label == _TRIANGLE, _triangle_angles(u[7:16]), jnp.full(3, math.pi / 3))
    inner = jnp.where(label == _STAR, _between(u[3], *shapes.STAR_INNER_RATIO), 0.5)
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
    radius = jnp.minimum(_between(u[0], lo, hi) * size / span.max(), fit)
    geometry["radius"] = radius.astype(jnp.float32)
    low, high = low * radius, high * radius
    # The outline may touch the border, as in `shapes.sample_shape`.
    first = -low
    last = jnp.maximum(first, size - 1 - high)
    geometry["center"] = _between(u[5:7], first, last)
    return geometry


def fragment_geometry(key: jax.Array, geometry: Geometry, size: int) -> Geometry:
    """`geometry` made large and centred beyond one border of the frame, so only a piece of it
    shows: the rules of `geojax.data.render.fragment_params`."""
    u = jax.random.uniform(key, (4,))
    radius = _between(u[0], *cpu_render.FRAGMENT_RADIUS) * size
    outside = _between(u[1], *cpu_render.FRAGMENT_OUTSIDE) * radius
    along = u[2] * (size - 1)
    side = _integer(u[3], 0, 4)
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
    inside; `jitter` [JITTER_HARMONICS, 2] (amplitude-scaled, see `sample_style`) bends it."""
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


# ---------------------------------------------------------------------------------------------
# Style: colours, fill/outline, background, effects (as geojax.data.render)
# ---------------------------------------------------------------------------------------------


COLOR_DRAWS = 5  # uniforms per `random_color`
CONTRAST_TRIES = 8


def random_color(u: jax.Array) -> jax.Array:
    """As `render._random_color` (5 uniforms `u`): a quarter greys, the rest vivid HSV (RGB
    float 0..255)."""
    grey = _integer(u[0], 0, 256)
    h = _integer(u[1], 0, 180) / 180.0
    s = _integer(u[2], 40, 256) / 255.0
    v = _integer(u[3], 40, 256)
    return jnp.where(u[4] < 0.25, jnp.full(3, grey), hsv_to_rgb(h, s, v))


def contrasting_color(u: jax.Array, against: jax.Array, min_contrast: float = 0.3) -> jax.Array:
    """As `render.contrasting_color`: the first of the random colours (uniforms `u`
    [tries, COLOR_DRAWS]) whose luma differs from `against` by at least `min_contrast` (0..1);
    black or white when none does."""
    candidates = jax.vmap(random_color)(u)
    ok = jnp.abs(luma(candidates) - luma(against)) / 255.0 >= min_contrast
    fallback = jnp.where(luma(against) / 255.0 > 0.5, 0.0, 255.0) * jnp.ones(3)
    return jnp.where(ok.any(), candidates[jnp.argmax(ok)], fallback)


def sample_style(key: jax.Array, radius: jax.Array, effects: bool = True) -> Style:
    """Background, shape style and effects, by the rules of `render.sample_image_style` and
    `render.sample_shape_style`."""
    k_u, k_colors, k_jitter = jax.random.split(key, 3)
    u = jax.random.uniform(k_u, (24,))
    colors = jax.random.uniform(k_colors, (1 + 2 * CONTRAST_TRIES, COLOR_DRAWS))
    # The seed's dark background and its inks: channels 0..100 and 50..255.
    dark_draws = jax.random.uniform(jax.random.fold_in(k_u, 1), (1 + CONTRAST_TRIES, 3))
    # Background: plain line-art paper, the seed's flat dark (kind 3), else flat 0.4 /
    # gradient 0.3 / texture 0.3.
    paper = u[0] < cpu_render.PAPER_P
    dark = (u[0] >= cpu_render.PAPER_P) & (u[0] < cpu_render.PAPER_P + cpu_render.DARK_P)
    kind = jnp.where(paper, 0, jnp.where(
        dark, 3, (u[2] >= 0.4).astype(jnp.int32) + (u[2] >= 0.7)))
    dark_color = _integer(dark_draws[0], 0, cpu_render.DARK_MAX + 1)
    first = jnp.where(paper, _integer(u[1], 225, 256),
                      jnp.where(dark, dark_color, random_color(colors[0])))
    near = jnp.clip(first + _integer(u[3:6], -60, 61), 0, 255)
    second = jnp.where((kind == 0) | (kind == 3), first, near)
    # The shape: ink contrasting with the background's mean (black line art on plain paper;
    # the seed's bright inks on its dark backgrounds).
    base = (first + second) / 2
    black_ink = (kind == 0) & (luma(base) / 255.0 > 0.85) & (u[6] < 0.5)
    dark_inks = _integer(dark_draws[1:], cpu_render.DARK_INK_MIN, 256)
    dark_ok = jnp.abs(luma(dark_inks) - luma(base)) / 255.0 >= cpu_render.DARK_MIN_CONTRAST
    dark_ink = dark_inks[jnp.where(dark_ok.any(), jnp.argmax(dark_ok), CONTRAST_TRIES - 1)]
    ink = jnp.where(black_ink, jnp.zeros(3), jnp.where(
        dark, dark_ink, contrasting_color(colors[1:1 + CONTRAST_TRIES], base)))
    mode = (u[7] >= 0.45).astype(jnp.int32) + (u[7] >= 0.85)  # fill/outline/border
    # Sketch styles, as render.sample_shape_style: hatched fills (with an outline), dashed or
    # dotted outlines.
    sketch = jax.random.uniform(jax.random.fold_in(k_u, 2), (7,))
    sketchable = (kind != 2) & (radius >= cpu_render.SKETCH_MIN_RADIUS)
    hatched = sketchable & (mode == 0) & (sketch[0] < cpu_render.HATCHED_P)
    dashed = sketchable & (mode == 1) & (sketch[0] < cpu_render.DASHED_P)
    max_width = jnp.maximum(1.5, radius * 0.12)
    jitter = jnp.where(u[8] < 0.25, _between(u[9], 0.005, 0.03), 0.0)
    # Smooth noise a_k sin(k phase + u_k), a_k ~ N(0, 1) / k, scaled to peak at jitter * radius.
    harmonics = jnp.arange(1, JITTER_HARMONICS + 1, dtype=jnp.float32)
    amplitude = jax.random.normal(k_jitter, (JITTER_HARMONICS,)) / harmonics
    phase = u[10:10 + JITTER_HARMONICS] * 2 * math.pi
    probe = jnp.linspace(0, 2 * math.pi, 128, endpoint=False)
    peak = jnp.abs((amplitude * jnp.sin(harmonics * probe[:, None] + phase)).sum(-1)).max()
    amplitude = amplitude * jitter * radius / jnp.maximum(peak, 1e-6)
    style = {
        "background": kind.astype(jnp.int32),
        "colors": jnp.stack([first, second]).astype(jnp.float32),
        "gradient_angle": u[15] * 2 * math.pi,
        "texture_scale": _between(u[16], TEXTURE_MIN_SCALE, 16.0),
        "texture_strength": jnp.where(kind == 2, _between(u[17], 10.0, 40.0), 0.0),
        "fill": ink,
        "stroke": jnp.where(mode == 2, contrasting_color(colors[1 + CONTRAST_TRIES:], ink, 0.2),
                            ink),
        "has_fill": mode != 1,
        "has_stroke": (mode != 0) | hatched,
        "stroke_width": _between(u[18], 1.0, max_width),
        "hatch_spacing": jnp.where(hatched, jnp.maximum(
            cpu_render.MIN_HATCH_SPACING, _between(sketch[1], *cpu_render.HATCH_SPACING) * radius),
            0.0),
        "hatch_angle": math.pi * sketch[2],
        "hatch_duty": _between(sketch[3], *cpu_render.HATCH_DUTY),
        "dashes": jnp.where(dashed, jnp.floor(_between(sketch[4], *cpu_render.DASHES)), 0.0),
        "dash_duty": _between(sketch[5], *cpu_render.DASH_DUTY),
        "dash_phase": sketch[6],
        "jitter": jnp.stack([amplitude, phase], 1),
        "blur_sigma": jnp.float32(0.0),
        "noise_sigma": jnp.float32(0.0),
    }
    if effects:
        style["blur_sigma"] = jnp.where(u[19] < 0.25, _between(u[20], 0.3, 1.2), 0.0)
        style["noise_sigma"] = jnp.where(u[21] < 0.25, _between(u[22], 2.0, 12.0), 0.0)
    return style


def _resize_matrix(source: int, scale: jax.Array, size: int) -> jax.Array:
    """[size, source] linear-interpolation weights upsampling the first int(size / scale)
    entries of a length-`source` signal to `size` (pixel-centre aligned, as cv2.resize)."""
    used = jnp.clip(jnp.floor(size / scale), 2, source)
    pos = jnp.clip((jnp.arange(size) + 0.5) * used / size - 0.5, 0, used - 1)
    return jnp.clip(1 - jnp.abs(pos[:, None] - jnp.arange(source)[None, :]), 0, 1)


def draw_background(key: jax.Array, style: Style, size: int, bank: jax.Array | None = None
                    ) -> jax.Array:
    """[size, size, 3] float32 background in 0..255: flat, gradient or texture (its noise
    read from `bank`, see `device_augment.standard_normal`)."""
    c0, c1 = style["colors"][0], style["colors"][1]
    coords = jnp.arange(size, dtype=jnp.float32)
    cos, sin = jnp.cos(style["gradient_angle"]), jnp.sin(style["gradient_angle"])
    d = coords[None, :] * cos + coords[:, None] * sin
    low = (size - 1) * (jnp.minimum(cos, 0) + jnp.minimum(sin, 0))
    t = (d - low) / jnp.maximum((size - 1) * (jnp.abs(cos) + jnp.abs(sin)), 1.0)
    gradient = c0 + t[..., None] * (c1 - c0)
    # Texture: coarse noise upsampled (separable interpolation matrices, no gathers) + fine.
    source = max(2, int(size / TEXTURE_MIN_SCALE))
    kc, kf = jax.random.split(key)
    coarse = standard_normal(kc, (source, source), bank)
    resize = _resize_matrix(source, style["texture_scale"], size)
    noise = resize @ coarse @ resize.T + 0.3 * standard_normal(kf, (size, size), bank)
    texture = c0 + noise[..., None] * style["texture_strength"] * (1 + (c1 - c0) / 60.0)
    flat = jnp.broadcast_to(c0, (size, size, 3))
    kind = style["background"]
    return jnp.where(kind == 1, gradient, jnp.where(kind == 2, texture, flat))


def sketch_patterns(center: jax.Array, size: int, style: Style) -> tuple[jax.Array, jax.Array]:
    """Where fill and stroke are inked ([size, size] 0/1), as `render.sketch_patterns`: hatching
    lines across the frame (spacing 0: solid), dashes by the angle around the centre (0 dashes:
    solid)."""
    coords = jnp.arange(size, dtype=jnp.float32)
    x, y = coords[None, :], coords[:, None]
    d = x * jnp.cos(style["hatch_angle"]) + y * jnp.sin(style["hatch_angle"])
    spacing = jnp.maximum(style["hatch_spacing"], 1e-3)
    hatch = (jnp.mod(d / spacing, 1.0) < style["hatch_duty"]) | (style["hatch_spacing"] <= 0)
    turn = jnp.arctan2(y - center[1], x - center[0]) / (2 * math.pi)
    dash = ((jnp.mod(turn * style["dashes"] + style["dash_phase"], 1.0) < style["dash_duty"])
            | (style["dashes"] <= 0))
    return hatch.astype(jnp.float32), dash.astype(jnp.float32)


def render(key: jax.Array, geometry: Geometry, style: Style, size: int,
           bank: jax.Array | None = None, effects: bool = True) -> tuple[jax.Array, jax.Array]:
    """The painted picture, float32 [size, size, 3] in 0..255 (the style's blur and noise
    applied unless `effects` is off, not yet quantised), and the shape's coverage
    [size, size] (max of fill and stroke). Noise comes from `bank` when given (standard
    normals shared by the batch), else from `key`."""
    kb, kn = jax.random.split(key)
    canvas = draw_background(kb, style, size, bank)
    distance = materialise(signed_distance(geometry, size, style["jitter"]))
    fill, stroke = coverage(distance, style["stroke_width"])
    fill = fill * style["has_fill"]
    stroke = stroke * style["has_stroke"]
    mask = jnp.maximum(fill, stroke)
    hatch, dash = sketch_patterns(geometry["center"], size, style)
    fill, stroke = fill * hatch, stroke * dash
    canvas = canvas + fill[..., None] * (style["fill"] - canvas)
    canvas = canvas + stroke[..., None] * (style["stroke"] - canvas)
    if effects:
        blurred = gaussian_blur(canvas, style["blur_sigma"])
        canvas = jnp.where(style["blur_sigma"] > 0, blurred, canvas)
        canvas = canvas + style["noise_sigma"] * standard_normal(kn, canvas.shape, bank)
    return jnp.clip(canvas, 0.0, 255.0), mask


def render_sample(key: jax.Array, size: int, size_range: tuple[float, float] = (0.2, 0.95),
                  effects: bool = True, bank: jax.Array | None = None,
                  defer_effects: bool = False, no_shape_fraction: float = 0.0
                  ) -> dict[str, jax.Array]:
    """One random shape of a random class: {'image' float32 [S, S, 3] 0..255, 'mask' float32
    coverage [S, S], 'label' int32}, as `geojax.data.render.render_shape` draws it (`bank`:
    see `render`); with probability `no_shape_fraction` a shape-free sample instead, as
    `geojax.data.render.render_no_shape` (label NO_SHAPE). With `defer_effects` the image is
    left unblurred and noiseless and the sample carries the effects' 'blur_sigma' and
    'noise_sigma' for the augmentation to apply (`geojax.data.device_augment.compose`)."""
    k = jax.random.split(key, 4)
    label = _integer(jax.random.uniform(k[0]), 0, len(CLASSES)).astype(jnp.int32)
    geometry = sample_geometry(k[1], label, size, size_range)
    empty = jnp.bool_(False)
    if no_shape_fraction > 0:
        u = jax.random.uniform(jax.random.fold_in(k[0], 1), (5,))
        empty = u[0] < no_shape_fraction
        fragment = empty & (u[1] < cpu_render.FRAGMENT_P)
        stripes = empty & ~fragment & (u[1] < cpu_render.FRAGMENT_P + cpu_render.STRIPES_P)
        cut = fragment_geometry(jax.random.fold_in(k[1], 1), geometry, size)
        # Stripes: a hatched square far larger than the frame, centred on it.
        cover = {**geometry, "label": jnp.int32(_SQUARE), "radius": jnp.float32(2.0 * size),
                 "aspect": jnp.float32(1.0),
                 "center": jnp.full(2, (size - 1) / 2, jnp.float32)}
        geometry = jax.tree.map(lambda a, b, c: jnp.where(stripes, a, jnp.where(empty, b, c)),
                                cover, cut, geometry)
    style = sample_style(k[2], geometry["radius"], effects)
    if no_shape_fraction > 0:
        shown = ~empty | fragment
        style = {**style, "has_fill": (style["has_fill"] & shown) | stripes,
                 "has_stroke": style["has_stroke"] & shown,
                 "fill": jnp.where(stripes & ~style["has_fill"], style["stroke"], style["fill"]),
                 "hatch_spacing": jnp.where(stripes, _between(
                     u[2], *cpu_render.STRIPES_SPACING) * size, style["hatch_spacing"]),
                 "hatch_angle": jnp.where(stripes, math.pi * u[3], style["hatch_angle"]),
                 "hatch_duty": jnp.where(stripes, _between(u[4], *cpu_render.STRIPES_DUTY),
                                         style["hatch_duty"])}
        label = jnp.where(empty, NO_SHAPE, label).astype(jnp.int32)
    image, mask = render(k[3], geometry, style, size, bank, effects and not defer_effects)
    drawn = {"image": image, "mask": mask * ~empty, "label": label}
    if effects and defer_effects:
        drawn.update(blur_sigma=style["blur_sigma"], noise_sigma=style["noise_sigma"])
    return drawn
