"""Class geometry: each class is what its definition says, at any rotation."""

import math

import cv2
import numpy as np
import pytest

from geojax import CLASSES
from geojax.data import render_shape, sample_shape, shape_outline
from geojax.data.shapes import ELONGATION_MIN, RHOMBUS_ANGLE_DEG, class_index

RNG_SEEDS = range(40)


def outline_of(name, seed, frame=(224, 224)):
    return shape_outline(sample_shape(np.random.default_rng(seed), name, frame))


def sides_and_angles(pts):
    edges = np.roll(pts, -1, axis=0) - pts
    sides = np.linalg.norm(edges, axis=1)
    prev = -np.roll(edges, 1, axis=0)
    cos = np.sum(edges * prev, axis=1) / (sides * np.roll(sides, 1))
    return sides, np.degrees(np.arccos(np.clip(cos, -1, 1)))


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_square_has_equal_sides_and_right_angles(seed):
    sides, angles = sides_and_angles(outline_of("square", seed))
    assert len(sides) == 4
    np.testing.assert_allclose(sides, sides.mean(), rtol=1e-9)
    np.testing.assert_allclose(angles, 90, atol=1e-6)


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_rectangle_is_right_angled_and_clearly_elongated(seed):
    sides, angles = sides_and_angles(outline_of("rectangle", seed))
    np.testing.assert_allclose(angles, 90, atol=1e-6)
    assert ELONGATION_MIN <= sides.max() / sides.min() <= 3.0
    assert ELONGATION_MIN <= 1.25  # the seed's generator draws rectangles from 1.25:1


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_rhombus_has_equal_sides_and_clearly_non_right_angles(seed):
    sides, angles = sides_and_angles(outline_of("rhombus", seed))
    np.testing.assert_allclose(sides, sides.mean(), rtol=1e-9)
    low, high = RHOMBUS_ANGLE_DEG
    assert np.all(np.abs(angles - 90) >= 90 - high - 1e-6)
    assert high >= 80 and low <= 58  # the seed's rhombi: acute angles of 58-80 degrees


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_triangles_are_valid_and_varied(seed):
    sides, angles = sides_and_angles(outline_of("triangle", seed))
    assert len(sides) == 3
    assert angles.sum() == pytest.approx(180)
    assert angles.min() >= 20 - 1e-6


def test_triangle_forms_include_obtuse_right_and_scalene():
    maxima = [sides_and_angles(outline_of("triangle", s))[1].max() for s in range(300)]
    assert any(m > 100 for m in maxima)
    assert any(abs(m - 90) < 1e-6 for m in maxima)


@pytest.mark.parametrize(("name", "n"), [("pentagon", 5), ("hexagon", 6), ("octagon", 8)])
def test_regular_polygons(name, n):
    for seed in RNG_SEEDS:
        sides, angles = sides_and_angles(outline_of(name, seed))
        assert len(sides) == n
        np.testing.assert_allclose(sides, sides.mean(), rtol=1e-9)
        np.testing.assert_allclose(angles, 180 * (n - 2) / n, atol=1e-6)


def test_star_has_five_points_and_a_clearly_concave_inner_radius():
    for seed in RNG_SEEDS:
        params = sample_shape(np.random.default_rng(seed), "star", (224, 224))
        radii = np.linalg.norm(shape_outline(params) - params.center, axis=1)
        assert len(radii) == 10
        np.testing.assert_allclose(radii[::2], params.radius, rtol=1e-9)
        assert 0.3 <= radii[1] / radii[0] <= 0.6  # a pentagon's would be 0.81


def test_circle_round_and_ellipse_elongated():
    for seed in RNG_SEEDS:
        params = sample_shape(np.random.default_rng(seed), "circle", (224, 224))
        radii = np.linalg.norm(shape_outline(params) - params.center, axis=1)
        np.testing.assert_allclose(radii, params.radius, rtol=1e-9)
        pts = outline_of("ellipse", seed)
        (_, _), (w, h), _ = cv2.minAreaRect(pts.astype(np.float32))
        assert max(w, h) / min(w, h) >= ELONGATION_MIN - 1e-3


@pytest.mark.parametrize("name", CLASSES)
def test_outline_fits_the_frame_at_any_size(name):
    for seed in RNG_SEEDS:
        pts = outline_of(name, seed, frame=(100, 60))
        assert pts.min() >= 0 and pts[:, 0].max() <= 100 and pts[:, 1].max() <= 60


@pytest.mark.parametrize(("name", "lo", "hi"), [
    ("square", 0.93, 1.07), ("rectangle", 1.12, 3.2), ("circle", 0.93, 1.07), ("ellipse", 1.12, 3.2)])
def test_rendered_pixels_keep_the_class_geometry_after_rotation(name, lo, hi):
    for seed in range(15):
        shape = render_shape(np.random.default_rng(seed), 224, name, size_range=(0.5, 0.9))
        contours, _ = cv2.findContours(shape.mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        (_, _), (w, h), _ = cv2.minAreaRect(max(contours, key=cv2.contourArea))
        assert lo <= max(w, h) / min(w, h) <= hi, (name, seed, w, h)


def test_unknown_class_and_bad_sizes_fail_clearly():
    with pytest.raises(ValueError, match="unknown shape class 'trapezoid'; valid: circle"):
        class_index("trapezoid")
    with pytest.raises(ValueError, match="out of range"):
        class_index(10)
    with pytest.raises(ValueError, match="frame must have positive"):
        sample_shape(np.random.default_rng(0), "circle", (0, 10))
    with pytest.raises(ValueError, match="size_range"):
        sample_shape(np.random.default_rng(0), "circle", (10, 10), size_range=(0.5, 1.5))
    with pytest.raises(ValueError, match="img_size must be an int >= 8"):
        render_shape(np.random.default_rng(0), -3)
    assert math.isclose(sides_and_angles(outline_of("hexagon", 0))[1][0], 120)
