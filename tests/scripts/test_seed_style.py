"""The seed-style generator (scripts/seed_style_shapes.py) draws the seed project's geometry and
colours, writes its layouts reproducibly, makes shape-free images without a whole shape, and
composes detection scenes whose COCO boxes are the drawn pixels; bench_detection reads them."""

import csv
import json
import math

import cv2
import numpy as np
import pytest
from PIL import Image

from geojax import CLASSES
from scripts import bench_detection
from scripts import seed_style_shapes as seed

# Filled area over bounding-box area, from each class's geometry in the spec.
FILL_RATIO = {"circle": math.pi / 4, "ellipse": math.pi / 4, "square": 1.0, "rectangle": 1.0,
              "triangle": 0.5, "rhombus": 0.5, "pentagon": 0.691, "hexagon": 0.75,
              "octagon": 0.707, "star": 0.427}


def _shape_mask(image: np.ndarray, info: dict) -> np.ndarray:
    """Pixels nearer the fill colour than the background: coverage over a half."""
    pixels = image.astype(float)
    to_fill = ((pixels - info["fill"]) ** 2).sum(-1)
    to_background = ((pixels - info["background"]) ** 2).sum(-1)
    return to_fill < to_background


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize("name", CLASSES)
def test_each_class_has_the_seed_geometry_and_colours(name):
    for i in range(4):
        rng = np.random.default_rng([7, CLASSES.index(name), i])
        image, info = seed.seed_shape(rng, name, blur=0.0)
        assert image.shape == (224, 224, 3) and image.dtype == np.uint8
        assert info["label"] == CLASSES.index(name) and info["augment"] is None
        assert max(info["background"]) <= 100 and min(info["fill"]) >= 50
        mask = _shape_mask(image, info)
        x0, y0, x1, y1 = _box(mask)
        w, h = x1 - x0, y1 - y0
        # The whole shape is inside the frame and the info's box is the drawn one.
        assert min(x0, y0) >= 0 and max(x1, y1) <= 224
        assert info["bbox"] == [x0, y0, x1, y1] and info["blur"] == 0
        assert 47 / 224 <= info["extent"] <= 1.0  # longest side >= 0.95 s, s >= 50
        if name != "rhombus":
            assert info["extent"] <= 181 / 224
        # Flat background outside the shape, the fill colour inside it.
        far = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
        inside = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert (image[far] == info["background"]).all()
        assert (image[inside] == info["fill"]).all()
        assert abs(mask.sum() / (w * h) - FILL_RATIO[name]) < 0.05, (name, i)
        rows, cols = mask[y0:y1, x0:x1].sum(1), mask[y0:y1, x0:x1].sum(0)
        if name in ("circle", "square", "octagon"):
            assert abs(w - h) <= 1
        elif name in ("rectangle", "ellipse"):
            assert 1.25 * h - 2 <= w <= 2 * h + 2
        elif name == "rhombus":
            assert 1.2 * w - 2 <= h <= 1.8 * w + 2
        elif name == "triangle":  # equilateral, apex up: a point on top, a full-width base
            assert abs(h - w * math.sqrt(3) / 2) <= 2
            assert rows[0] <= 4 and rows[-1] >= w - 2
        elif name == "pentagon":  # a vertex right, so a vertical side on the left
            assert abs(w - h * 1.809 / 1.902) <= 2
            assert cols[-1] <= 0.08 * h and cols[0] >= 0.5 * h
        elif name == "hexagon":  # a vertex right: flat top and bottom sides of half the width
            assert abs(w - h * 2 / math.sqrt(3)) <= 2
            assert cols[-1] <= 0.08 * h and abs(rows[0] - w / 2) <= 3
        elif name == "star":  # a point up, two points down
            assert abs(w - h * 1.902 / 1.809) <= 2
            assert rows[0] <= 4 and rows[-1] < 0.5 * w


def test_blur_is_drawn_for_about_three_in_ten_and_changes_only_the_edges():
    blurred = 0
    for i in range(40):
        image, info = seed.seed_shape(np.random.default_rng([9, 3, i]), "triangle", 64)
        sharp, sharp_info = seed.seed_shape(np.random.default_rng([9, 3, i]), "triangle", 64,
                                            blur=0.0)
        assert {k: v for k, v in info.items() if k not in ("blur", "bbox", "extent")} == {
            k: v for k, v in sharp_info.items() if k not in ("blur", "bbox", "extent")}
        if info["blur"]:
            blurred += 1
            assert 0.5 * 64 / 224 <= info["blur"] <= 1.5 * 64 / 224  # the seed's, scaled
            # Blur rounds sharp tips (their last pixels fall under half coverage).
            assert np.abs(np.array(info["bbox"]) - sharp_info["bbox"]).max() <= 2
        else:
            assert np.array_equal(image, sharp)
    assert 6 <= blurred <= 20


def test_tall_rhombuses_shrink_to_fit_the_frame():
    heights = []
    for i in range(60):
        image, info = seed.seed_shape(np.random.default_rng([3, 8, i]), "rhombus", 64)
        x0, y0, x1, y1 = _box(_shape_mask(image, info))
        assert min(x0, y0) >= 0 and max(x1, y1) <= 64
        heights.append(y1 - y0)
    assert max(heights) >= 60  # some were shrunk to the frame


def test_shapes_layout_manifest_and_reproducibility(tmp_path):
    seed.write_shapes(tmp_path / "a", per_class=2, seed=5, img_size=64)
    seed.write_shapes(tmp_path / "b", per_class=2, seed=5, img_size=64)
    seed.write_shapes(tmp_path / "c", per_class=3, seed=5, img_size=64)
    with (tmp_path / "a" / "manifest.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "class", "kind", "style", "palette", "background", "blur",
                       "extent"]
    assert len(rows) == 1 + 2 * len(CLASSES)
    for file, name, kind, style, palette, background, blur, extent in rows[1:]:
        assert file.split("/")[0] == name and file.endswith(".png") and len(file) == len(name) + 10
        assert (kind, style, palette, background) == ("filled", "seed", "seed", "flat_dark")
        assert blur in ("0", "1") and len(extent.split(".")[1]) == 3
        for other in ("b", "c"):  # same seed, same bytes, also in a larger set
            assert (tmp_path / "a" / file).read_bytes() == (tmp_path / other / file).read_bytes()
        with Image.open(tmp_path / "a" / file) as img:
            assert img.mode == "RGB" and img.size == (64, 64)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted([*CLASSES, "manifest.csv"])
    seed.write_shapes(tmp_path / "d", per_class=2, seed=6, img_size=64)
    assert (tmp_path / "a/star/00000.png").read_bytes() != (tmp_path / "d/star/00000.png").read_bytes()


def test_augment_flag_marks_style_and_keeps_background_corners(tmp_path):
    seed.write_shapes(tmp_path, per_class=2, seed=1, img_size=64, augment=True)
    with (tmp_path / "manifest.csv").open(newline="") as f:
        assert {row["style"] for row in csv.DictReader(f)} == {"seed_aug"}
    augmented = 0
    for i in range(20):
        image, info = seed.seed_shape(np.random.default_rng([1, 0, i]), "square", 64, augment=True)
        plain, _ = seed.seed_shape(np.random.default_rng([1, 0, i]), "square", 64)
        if info["augment"] is None:
            assert np.array_equal(image, plain)
            continue
        augmented += 1
        params = info["augment"]
        assert -30 <= params["angle"] <= 30 and 0.9 <= params["zoom"] <= 1.1
        assert 0.8 <= params["brightness"] <= 1.2 and 0.8 <= params["contrast"] <= 1.2
        # Corners the shape leaves uncovered are background (rotated in), not black.
        x0, y0, x1, y1 = info["bbox"]
        outside = np.ones((64, 64), bool)
        outside[y0:y1, x0:x1] = False
        if not outside.any():
            continue
        colors, counts = np.unique(image[outside], axis=0, return_counts=True)
        background = colors[counts.argmax()]
        for y, x in ((0, 0), (0, 63), (63, 0), (63, 63)):
            if not (x0 <= x < x1 and y0 <= y < y1):
                assert (image[y, x] == background).all()
    assert 8 <= augmented <= 19


def _largest_closed_convex(image: np.ndarray) -> float:
    """Largest convex-looking region (solidity > 0.9) not touching the border, over the frame."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    _, ink = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    largest = 0.0
    for part in (ink, 1 - ink):
        contours, _ = cv2.findContours(part.astype(np.uint8), cv2.RETR_LIST,
                                       cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            x, y, bw, bh = cv2.boundingRect(contour)
            area = cv2.contourArea(contour)
            if x == 0 or y == 0 or x + bw == w or y + bh == h or area == 0:
                continue
            if area / cv2.contourArea(cv2.convexHull(contour)) > 0.9:
                largest = max(largest, area / (h * w))
    return largest


def test_blank_images_hold_no_whole_shape(tmp_path):
    count = 2 * len(seed.BLANK_KINDS)
    seed.write_blank(tmp_path, count=count, seed=0, img_size=64)
    with (tmp_path / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["kind"] for r in rows] == list(seed.BLANK_KINDS) * 2
    for row in rows:
        with Image.open(tmp_path / row["file"]) as img:
            image = np.asarray(img)
        assert image.shape == (64, 64, 3)
        assert _largest_closed_convex(image) < 0.15, row
    for i in range(12):
        image = seed.blank_image(np.random.default_rng([1, i]), "border_fragment", 64)
        colors, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
        background = colors[counts.argmax()]
        covered = (image != background).any(-1).mean()
        assert 0 < covered < 0.15
        flat = seed.blank_image(np.random.default_rng([1, i]), "flat", 64)
        assert len(np.unique(flat.reshape(-1, 3), axis=0)) == 1
    with pytest.raises(ValueError):
        seed.blank_image(np.random.default_rng(0), "circle", 64)


def _check_scene(image, boxes, labels, width, height, exact):
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    assert boxes.shape == (len(labels), 4) and 1 <= len(labels) <= 6
    assert ((labels >= 0) & (labels < len(CLASSES))).all()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            p, q = boxes[a], boxes[b]
            assert (p[0] >= q[2] + 4 or q[0] >= p[2] + 4
                    or p[1] >= q[3] + 4 or q[1] >= p[3] + 4)
    if not exact:
        return
    colors, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
    background = colors[counts.argmax()]
    assert background.max() <= 100
    ink = (image != background).any(-1)
    covered = np.zeros_like(ink)
    for x0, y0, x1, y1 in boxes:
        assert _box(ink[y0:y1, x0:x1]) == (0, 0, x1 - x0, y1 - y0)  # tight on drawn pixels
        covered[y0:y1, x0:x1] = True
    assert not ink[~covered].any()


def test_scenes_boxes_are_inside_apart_and_tight():
    for i in range(6):
        _check_scene(*seed.seed_scene(np.random.default_rng([2, i]), 320, 240, blur=0.0),
                     320, 240, exact=True)
        _check_scene(*seed.seed_scene(np.random.default_rng([3, i]), 320, 240), 320, 240,
                     exact=False)


def test_write_scenes_coco_and_bench_detection_reads_it(tmp_path):
    path = seed.write_scenes(tmp_path, count=3, seed=4, width=256, height=192, max_shapes=4)
    coco = json.loads(path.read_text())
    assert set(coco) == {"info", "images", "annotations", "categories"}
    assert coco["info"]["seed"] == 4 and isinstance(coco["info"]["description"], str)
    assert coco["categories"] == [{"id": i + 1, "name": n, "supercategory": "shape"}
                                  for i, n in enumerate(CLASSES)]
    assert [im["id"] for im in coco["images"]] == [1, 2, 3]
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    for im in coco["images"]:
        assert set(im) == {"id", "file_name", "width", "height"}
        assert im["file_name"] == f"images/{im['id'] - 1:04d}.png"
        assert (im["width"], im["height"]) == (256, 192)
    for ann in coco["annotations"]:
        assert set(ann) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd"}
        _, _, w, h = ann["bbox"]
        assert all(isinstance(v, int) for v in ann["bbox"]) and ann["area"] == w * h
        assert ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= len(CLASSES)
    scenes = bench_detection.load_scenes(tmp_path)
    assert len(scenes) == 3 and len(bench_detection.load_scenes(tmp_path, 2)) == 2
    for i, scene in enumerate(scenes):
        image, boxes, labels = seed.seed_scene(np.random.default_rng([4, i]), 256, 192, 4)
        assert np.array_equal(scene.image, image)
        assert np.array_equal(scene.boxes, boxes) and np.array_equal(scene.labels, labels)
        assert scene.boxes.dtype.kind == "i" and scene.labels.dtype.kind == "i"
        _check_scene(scene.image, scene.boxes, scene.labels, 256, 192, exact=False)
