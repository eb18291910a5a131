"""The JAX renderer draws what the OpenCV renderer draws, for the same geometric parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geojax import CLASSES
from geojax.data import render, shapes
from geojax.data.device import geometry as device_geometry
from geojax.data.device import render as device_render
from geojax.data.device.pixels import mask_box

SEEDS = 4


def _params_and_widths(size: int):
    """SEEDS shapes of every class with the CPU sampler, and stroke widths from the renderer's
    range (as the CPU actually strokes them)."""
    params, widths = [], []
    for name in CLASSES:
        for seed in range(SEEDS):
            rng = np.random.default_rng([size, seed])
            # 40%+ of the frame: the edge pixels, where the two rasters may differ, stay a
            # small part of the area (a 20% triangle at 64 px is only ~40 px in all).
            p = shapes.sample_shape(rng, name, (size, size), size_range=(0.4, 0.95))
            params.append(p)
            width = float(rng.uniform(1.0, max(1.5, 0.12 * p.radius)))
            widths.append(device_geometry.cpu_stroke_width(width))
    return params, widths


def _device_coverage(params, widths, size):
    geometry = jax.tree.map(lambda *x: jnp.stack(x),
                            *[device_geometry.geometry_from_params(p) for p in params])

    @jax.jit
    @jax.vmap
    def cover(g, w):
        return device_geometry.coverage(device_geometry.signed_distance(g, size), w)

    fill, stroke = cover(geometry, jnp.asarray(widths))
    return np.asarray(fill), np.asarray(stroke)


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("size", [64, 224])
def test_filled_shapes_match_the_opencv_renderer_for_every_class(size):
    params, widths = _params_and_widths(size)
    fill, stroke = _device_coverage(params, widths, size)
    for i, p in enumerate(params):
        outline = shapes.shape_outline(p)
        cpu_fill, _ = render.coverage(outline, (size, size),
                                      render.ShapeStyle(fill=(255, 255, 255), stroke=None))
        cpu, dev = cpu_fill >= render.MASK_THRESHOLD, fill[i] >= render.MASK_THRESHOLD
        # A star's tip can be a 20-degree wedge: pixels whose centres it holds are less than
        # half covered, which a distance-based coverage (exact along edges) overestimates.
        assert _iou(cpu, dev) >= (0.96 if p.name == "star" else 0.98), (p.name, size, i)
        box = np.asarray(mask_box(jnp.asarray(dev)))
        tolerance = 2 if p.name == "star" else 1
        assert np.abs(box - render.mask_bbox(cpu)).max() <= tolerance, (p.name, size, i)

        # Outlines are bands 1-13 px wide: a 1/16 px difference between the CPU's 8x8
        # sub-samples and exact distances moves whole rows of thin-band pixels across the
        # half-coverage threshold, so the soft coverage is compared (and the box).
        _, cpu_stroke = render.coverage(outline, (size, size), render.ShapeStyle(
            fill=None, stroke=(255, 255, 255), stroke_width=widths[i]))
        soft_iou = np.minimum(cpu_stroke, stroke[i]).sum() / np.maximum(cpu_stroke, stroke[i]).sum()
        assert soft_iou >= 0.9, (p.name, size, i, soft_iou)
        dev_box = np.asarray(mask_box(jnp.asarray(stroke[i] >= render.MASK_THRESHOLD)))
        cpu_box = render.mask_bbox(cpu_stroke >= render.MASK_THRESHOLD)
        assert np.abs(dev_box - cpu_box).max() <= 1, (p.name, size, i)


def test_sampled_geometry_follows_the_class_rules_and_stays_in_the_frame():
    size = 64
    labels = jnp.arange(200) % len(CLASSES)
    keys = jax.random.split(jax.random.PRNGKey(0), 200)
    geometry = jax.jit(jax.vmap(
        lambda k, label: device_geometry.sample_geometry(k, label, size)))(keys, labels)
    g = jax.tree.map(np.asarray, geometry)
    names = np.asarray(CLASSES)[g["label"]]
    elongated = np.isin(names, ["rectangle", "ellipse"])
    assert np.all((g["aspect"][elongated] >= shapes.ELONGATION_MIN)
                  & (g["aspect"][elongated] <= shapes.ELONGATION_MAX))
    assert np.all(g["aspect"][np.isin(names, ["circle", "square"])] == 1.0)
    acute = np.degrees(2 * np.arctan(1 / g["aspect"][names == "rhombus"]))
    low, high = shapes.RHOMBUS_ANGLE_DEG
    assert np.all((acute >= low - 0.01) & (acute <= high + 0.01))
    angles = g["angles"][names == "triangle"]
    assert np.allclose(angles.sum(1), np.pi, atol=1e-5)
    assert angles.min() >= np.radians(shapes.TRIANGLE_MIN_ANGLE_DEG) - 1e-5
    inner = g["inner_ratio"][names == "star"]
    assert np.all((inner >= 0.3) & (inner <= 0.6))
    radius_fraction = 2 * g["radius"] / size
    assert radius_fraction.min() < 0.4 and radius_fraction.max() > 0.85
    # The outline lies inside the frame (it may touch the border), as with the CPU sampler.
    for i in range(200):
        p = shapes.ShapeParams(int(g["label"][i]), tuple(g["center"][i]), float(g["radius"][i]),
                               float(g["rotation"][i]), float(g["aspect"][i]),
                               tuple(g["angles"][i]), float(g["inner_ratio"][i]))
        pts = shapes.shape_outline(p)
        assert pts.min() >= -1e-3 and pts.max() <= size - 1 + 1e-3, (p, pts.min(), pts.max())


def test_outline_jitter_bends_the_distance_by_its_harmonics_of_the_angle():
    size = 64
    params, _ = _params_and_widths(size)
    geometry = device_geometry.geometry_from_params(params[3 * SEEDS])  # a triangle
    rng = np.random.default_rng(0)
    jitter = np.stack([rng.normal(size=device_geometry.JITTER_HARMONICS),
                       rng.uniform(0, 2 * np.pi, device_geometry.JITTER_HARMONICS)], 1)
    bent = np.asarray(device_geometry.signed_distance(geometry, size, jnp.asarray(jitter, jnp.float32)))
    plain = np.asarray(device_geometry.signed_distance(geometry, size))
    # The angle of each pixel around the centre, in the shape's own frame.
    ys, xs = np.mgrid[:size, :size].astype(np.float64)
    fx, fy = xs - params[3 * SEEDS].center[0], ys - params[3 * SEEDS].center[1]
    c, s = np.cos(params[3 * SEEDS].rotation), np.sin(params[3 * SEEDS].rotation)
    phase = np.arctan2(-fx * s + fy * c, fx * c + fy * s)
    k = np.arange(1, device_geometry.JITTER_HARMONICS + 1)
    expected = (jitter[:, 0] * np.sin(k * phase[..., None] + jitter[:, 1])).sum(-1)
    np.testing.assert_allclose(plain - bent, expected, atol=2e-4)


def test_deferred_effects_leave_the_picture_clean_and_hand_over_the_sigmas():
    keys = jax.random.split(jax.random.PRNGKey(0), 32)
    deferred = jax.jit(jax.vmap(lambda k: device_render.render_sample(
        k, 32, defer_effects=True)))(keys)
    clean = jax.jit(jax.vmap(lambda k: device_render.render_sample(k, 32, effects=False)))(keys)
    np.testing.assert_array_equal(deferred["image"], clean["image"])
    blur, noise = np.asarray(deferred["blur_sigma"]), np.asarray(deferred["noise_sigma"])
    assert 0 < (blur > 0).sum() < 32 and 0 < (noise > 0).sum() < 32  # a quarter each
    assert blur.max() <= 1.2 and noise.max() <= 12.0


def test_shape_free_samples_and_dark_backgrounds_as_the_cpu_renderer():
    from geojax import NO_SHAPE

    size = 32
    keys = jax.random.split(jax.random.PRNGKey(1), 200)
    drawn = jax.jit(jax.vmap(lambda k: device_render.render_sample(
        k, size, no_shape_fraction=0.5)))(keys)
    labels, masks = np.asarray(drawn["label"]), np.asarray(drawn["mask"])
    empty = labels == NO_SHAPE
    assert 70 <= empty.sum() <= 130
    assert np.all((labels[~empty] >= 0) & (labels[~empty] < len(CLASSES)))
    assert not masks[empty].any() and masks[~empty].max(axis=(1, 2)).min() > 0.5
    # Without the fraction, the same keys draw the same shapes as before (no extra draws).
    plain = jax.jit(jax.vmap(lambda k: device_render.render_sample(k, size)))(keys)
    np.testing.assert_array_equal(np.asarray(plain["label"])[~empty], labels[~empty])
    styles = jax.vmap(lambda k: device_render.sample_style(k, jnp.float32(10.0)))(keys)
    dark = np.asarray(styles["background"]) == 3
    assert 20 <= dark.sum() <= 60
    assert np.asarray(styles["colors"])[dark].max() <= render.DARK_MAX
    assert np.asarray(styles["fill"])[dark].min() >= render.DARK_INK_MIN


def test_sketch_patterns_match_the_cpu_renderer():
    size = 48
    center = (20.3, 27.8)
    for dashes, spacing in ((12, 0.0), (0, 5.5), (9, 4.0)):
        cpu_style = render.ShapeStyle(fill=(0, 0, 0), stroke=(0, 0, 0), dashes=dashes,
                                      dash_duty=0.4, dash_phase=0.25, hatch_spacing=spacing,
                                      hatch_angle=1.1, hatch_duty=0.45)
        cpu_fill, cpu_stroke = render.sketch_patterns(center, (size, size), cpu_style)
        style = {"dashes": jnp.float32(dashes), "dash_duty": jnp.float32(0.4),
                 "dash_phase": jnp.float32(0.25), "hatch_spacing": jnp.float32(spacing),
                 "hatch_angle": jnp.float32(1.1), "hatch_duty": jnp.float32(0.45)}
        fill, stroke = device_render.sketch_patterns(jnp.asarray(center), size, style)
        # The same pattern up to float32 rounding at the stripes' and dashes' edges.
        assert (np.asarray(fill) != cpu_fill).mean() < 0.01
        assert (np.asarray(stroke) != cpu_stroke).mean() < 0.01


def test_sketch_styles_only_on_large_shapes_and_quiet_backgrounds_in_both_renderers():
    """Dashes and hatching need room (SKETCH_MIN_RADIUS) and no texture under them."""
    sketched = {}
    for radius in (render.SKETCH_MIN_RADIUS - 1, render.SKETCH_MIN_RADIUS + 10):
        keys = jax.random.split(jax.random.PRNGKey(0), 2000)
        styles = jax.vmap(lambda k, r=radius: device_render.sample_style(k, jnp.float32(r)))(
            keys)
        any_sketch = (styles["dashes"] > 0) | (styles["hatch_spacing"] > 0)
        textured = styles["background"] == 2
        assert not bool(jnp.any(any_sketch & textured))
        sketched[("device", radius)] = float(jnp.mean(any_sketch))
        rng = np.random.default_rng(0)
        count = 0
        for _ in range(2000):
            background = render.sample_image_style(rng)
            style = render.sample_shape_style(rng, background, radius)
            drawn = style.dashes > 0 or style.hatch_spacing > 0
            assert not (drawn and background.background == "texture")
            count += drawn
        sketched[("cpu", radius)] = count / 2000
    small, large = render.SKETCH_MIN_RADIUS - 1, render.SKETCH_MIN_RADIUS + 10
    assert sketched[("device", small)] == sketched[("cpu", small)] == 0.0
    # About 0.7 x (0.45 x 0.25 + 0.4 x 0.3) of large shapes, alike in both renderers.
    assert 0.12 < sketched[("cpu", large)] < 0.2
    assert abs(sketched[("device", large)] - sketched[("cpu", large)]) < 0.04
