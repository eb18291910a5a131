"""The OpenCV renderer and scene composer: determinism, exact boxes, masks, variety."""

import numpy as np
import pytest

from geojax import CLASSES
from geojax.data import compose_scene, render_shape
from geojax.data.render import ShapeStyle, draw_shape, mask_bbox
from geojax.data.shapes import sample_shape, shape_outline


def test_same_seed_same_image_different_seed_different_image():
    a = render_shape(np.random.default_rng(7), 64, "star")
    b = render_shape(np.random.default_rng(7), 64, "star")
    c = render_shape(np.random.default_rng(8), 64, "star")
    assert np.array_equal(a.image, b.image) and a.bbox == b.bbox
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("name", CLASSES)
def test_box_is_the_extent_of_the_drawn_pixels(name):
    for seed in range(5):
        rng = np.random.default_rng(seed)
        params = sample_shape(rng, name, (96, 96))
        canvas = np.zeros((96, 96, 3), np.float32)
        mask = draw_shape(canvas, params, ShapeStyle(fill=(255, 255, 255), stroke=None), rng)
        drawn = canvas[..., 0] >= 127.5  # at least half covered
        assert np.array_equal(mask, drawn)
        x0, y0, x1, y1 = mask_bbox(mask)
        ys, xs = np.nonzero(drawn)
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        # ...and hugs the geometric outline (pixel i spans [i-0.5, i+0.5]): never more than
        # half a pixel (+ the 1/8 px supersampling step) outside it, and inside it only by what
        # a sharp tip leaves uncovered.
        pts = shape_outline(params)
        lo, hi = np.array([x0 - 0.5, y0 - 0.5]), np.array([x1 - 0.5, y1 - 0.5])
        assert np.all(lo >= pts.min(0) - 0.625) and np.all(hi <= pts.max(0) + 0.625)
        assert np.all(lo <= pts.min(0) + 3) and np.all(hi >= pts.max(0) - 3)


def test_render_returns_consistent_sample():
    shape = render_shape(np.random.default_rng(3), 64, "pentagon")
    assert shape.image.shape == (64, 64, 3) and shape.image.dtype == np.uint8
    assert shape.label == CLASSES.index("pentagon")
    assert shape.mask.shape == (64, 64) and shape.mask.any()
    assert shape.bbox == mask_bbox(shape.mask)


def test_styles_vary_fill_outline_background_and_size():
    samples = [render_shape(np.random.default_rng(s), 64) for s in range(200)]
    extents = [max(s.bbox[2] - s.bbox[0], s.bbox[3] - s.bbox[1]) / 64 for s in samples]
    assert min(extents) < 0.4 and max(extents) > 0.85
    fill_ratio = [s.mask.sum() / max(1, (s.bbox[2] - s.bbox[0]) * (s.bbox[3] - s.bbox[1]))
                  for s in samples]
    assert min(fill_ratio) < 0.2 and max(fill_ratio) > 0.7  # outlines and filled shapes
    corners = np.array([s.image[0, 0] for s in samples])
    assert corners.std(axis=0).min() > 40  # backgrounds of many colours
    assert len({s.label for s in samples}) == 10


def test_scene_shapes_do_not_overlap_and_boxes_are_inside():
    for seed in range(10):
        scene = compose_scene(np.random.default_rng(seed), 320, 240, num_shapes=(3, 6))
        assert scene.image.shape == (240, 320, 3)
        assert len(scene.boxes) == len(scene.labels) >= 1
        assert np.all(scene.boxes[:, :2] >= 0)
        assert np.all(scene.boxes[:, 2] <= 320) and np.all(scene.boxes[:, 3] <= 240)
        for i in range(len(scene.boxes)):
            for j in range(i):
                a, b = scene.boxes[i], scene.boxes[j]
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_scene_with_no_shapes_and_bad_arguments():
    empty = compose_scene(np.random.default_rng(0), 64, 48, num_shapes=(0, 0))
    assert empty.boxes.shape == (0, 4) and empty.labels.shape == (0,)
    with pytest.raises(ValueError, match="width and height must be positive"):
        compose_scene(np.random.default_rng(0), 0, 48)
    with pytest.raises(ValueError, match="num_shapes"):
        compose_scene(np.random.default_rng(0), 64, 48, num_shapes=(3, 1))


def test_overlapping_scenes_allow_overlap():
    overlaps = 0
    for seed in range(10):
        scene = compose_scene(np.random.default_rng(seed), 160, 120, num_shapes=(6, 6),
                              size_range=(0.3, 0.5), overlap=True)
        b = scene.boxes
        for i in range(len(b)):
            for j in range(i):
                overlaps += not (b[i][2] <= b[j][0] or b[j][2] <= b[i][0]
                                 or b[i][3] <= b[j][1] or b[j][3] <= b[i][1])
    assert overlaps > 0


def test_shape_free_images_show_no_whole_shape():
    from geojax import NO_SHAPE
    from geojax.data.render import fragment_params, render_no_shape

    size = 48
    for seed in range(40):
        sample = render_no_shape(np.random.default_rng(seed), size)
        assert sample.label == NO_SHAPE and not sample.mask.any()
        assert sample.image.shape == (size, size, 3) and sample.image.dtype == np.uint8
        # A fragment's shape is cut by the border (or, thin and along it, wholly outside):
        # its centre lies outside the frame, and so does part of its outline.
        params = fragment_params(np.random.default_rng(seed), seed % 10, size)
        (cx, cy), outline = params.center, shape_outline(params)
        assert not (-0.5 <= cx <= size - 0.5 and -0.5 <= cy <= size - 0.5)
        inside = ((outline >= -0.5) & (outline <= size - 0.5)).all(axis=1)
        assert not inside.all()


def test_dark_backgrounds_are_the_seed_generators():
    from geojax.data.render import DARK_INK_MIN, DARK_MAX, sample_image_style, sample_shape_style

    dark = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        style = sample_image_style(rng)
        if style.background == "dark":
            dark += 1
            assert max(style.colors[0]) <= DARK_MAX and style.colors[0] == style.colors[1]
            ink = sample_shape_style(rng, style, 20.0)
            color = ink.fill if ink.fill is not None else ink.stroke
            assert min(color) >= DARK_INK_MIN
    assert 20 <= dark <= 60  # one picture in five


def test_dashed_outlines_and_hatched_fills_leave_gaps_inside_the_mask():
    from geojax.data.render import sketch_patterns

    size = 64
    params = sample_shape(np.random.default_rng(0), "circle", (size, size), (0.8, 0.8))
    solid = ShapeStyle(fill=None, stroke=(255, 255, 255), stroke_width=3.0)
    dashed = ShapeStyle(fill=None, stroke=(255, 255, 255), stroke_width=3.0, dashes=12,
                        dash_duty=0.5)
    hatched = ShapeStyle(fill=(255, 255, 255), stroke=None, hatch_spacing=6.0,
                         hatch_angle=0.3, hatch_duty=0.5)
    inked = {}
    for name, style in (("solid", solid), ("dashed", dashed), ("hatched", hatched)):
        canvas = np.zeros((size, size, 3), np.float32)
        mask = draw_shape(canvas, params, style, np.random.default_rng(0))
        inked[name] = (canvas[..., 0] > 127, mask)
    solid_ink, solid_mask = inked["solid"]
    dashed_ink, dashed_mask = inked["dashed"]
    np.testing.assert_array_equal(dashed_mask, solid_mask)  # the box is the whole shape's
    assert 0.35 < dashed_ink.sum() / solid_ink.sum() < 0.65  # half of each dash period inked
    hatched_ink, hatched_mask = inked["hatched"]
    assert 0.35 < hatched_ink.sum() / hatched_mask.sum() < 0.65
    fill, stroke = sketch_patterns(params.center, (size, size), hatched)
    assert set(np.unique(fill)) == {0.0, 1.0} and stroke.min() == 1.0  # no dashes asked for
