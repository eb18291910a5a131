"""The held-out renderer (scripts/heldout_shapes.py) draws each class's geometry, writes the
layout `geojax.evaluate` reads, and the evaluate command scores a model on it."""

import csv
import json
import math
import sys

import cv2
import numpy as np
import pytest

from geojax import CLASSES
from scripts import heldout_shapes as heldout

SIZE = 96
VERTICES = {"triangle": 3, "square": 4, "rectangle": 4, "rhombus": 4, "pentagon": 5,
            "hexagon": 6, "octagon": 8, "star": 10}


def _ink_contour(name: str, seed: int, style: str = "solid") -> np.ndarray:
    """The outer contour of a high-contrast grey drawing of `name`, large and unblurred."""
    image, _ = heldout.render(np.random.default_rng(seed), name, SIZE, style=style,
                              palette="gray", background="flat", scale=(0.75, 0.9),
                              blur=False)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    background = int(np.median(np.r_[gray[0], gray[-1], gray[:, 0], gray[:, -1]]))
    ink = (np.abs(gray.astype(int) - background) > 60).astype(np.uint8)
    contours, _ = cv2.findContours(ink, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return max(contours, key=cv2.contourArea)


def _corners(contour: np.ndarray) -> np.ndarray:
    approx = cv2.approxPolyDP(contour, 0.02 * cv2.arcLength(contour, True), True)
    return approx.reshape(-1, 2).astype(float)


def _angles_deg(corners: np.ndarray) -> np.ndarray:
    prev, nxt = np.roll(corners, 1, 0) - corners, np.roll(corners, -1, 0) - corners
    cos = (prev * nxt).sum(1) / (np.linalg.norm(prev, axis=1) * np.linalg.norm(nxt, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


@pytest.mark.parametrize("name", list(VERTICES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_polygons_have_their_class_vertex_count_and_shape(name, seed):
    contour = _ink_contour(name, seed)
    corners = _corners(contour)
    assert len(corners) == VERTICES[name]
    sides = np.linalg.norm(np.roll(corners, -1, 0) - corners, axis=1)
    (_, _), (w, h), _ = cv2.minAreaRect(contour)
    aspect = max(w, h) / min(w, h)
    angles = _angles_deg(corners)
    if name == "square":
        assert aspect < 1.15 and np.all(np.abs(angles - 90) < 10)
    elif name == "rectangle":
        assert aspect > 1.4 and np.all(np.abs(angles - 90) < 10)
    elif name == "rhombus":
        assert sides.max() / sides.min() < 1.15
        assert 38 < angles.min() < 72  # clearly not a square
    elif name == "triangle":
        assert angles.min() > 20 and abs(angles.sum() - 180) < 5
    elif name in ("pentagon", "hexagon", "octagon"):
        assert sides.max() / sides.min() < 1.3
        n = VERTICES[name]
        assert np.all(np.abs(angles - 180 * (n - 2) / n) < 10)
    elif name == "star":
        hull = cv2.convexHull(contour)
        assert cv2.contourArea(contour) / cv2.contourArea(hull) < 0.8


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_circles_are_round_and_ellipses_elongated(seed):
    for name in ("circle", "ellipse"):
        contour = _ink_contour(name, seed)
        (_, _), axes, _ = cv2.fitEllipse(contour)
        ratio = max(axes) / min(axes)
        circularity = 4 * math.pi * cv2.contourArea(contour) / cv2.arcLength(contour, True) ** 2
        if name == "circle":
            assert ratio < 1.08 and circularity > 0.85
        else:
            assert ratio > 1.4


def test_geometry_follows_the_class_definitions():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pts, info = heldout.class_polygon("triangle", rng)
        assert min(info["angles"]) >= 25 and sum(info["angles"]) == pytest.approx(180)
        assert sorted(_angles_deg(pts)) == pytest.approx(sorted(info["angles"]))
        pts, info = heldout.class_polygon("rhombus", rng)
        sides = np.linalg.norm(np.roll(pts, -1, 0) - pts, axis=1)
        assert sides == pytest.approx(np.full(4, sides[0]))
        assert _angles_deg(pts).min() == pytest.approx(info["acute"])
        assert heldout.class_polygon("ellipse", rng)[1]["ratio"] >= 1.4


def test_every_style_and_palette_draws_a_visible_shape():
    for i, style in enumerate(heldout.FILLED_STYLES + heldout.OUTLINE_STYLES):
        for j, palette in enumerate(heldout.PALETTES):
            image, info = heldout.render(np.random.default_rng([i, j]), CLASSES[(i + j) % 10],
                                         32, style=style, palette=palette)
            assert image.shape == (32, 32, 3) and image.dtype == np.uint8
            assert np.ptp(image.astype(int), axis=(0, 1)).max() > 40, (style, palette)
            assert info["kind"] == ("filled" if style in heldout.FILLED_STYLES else "outline")


def test_cli_writes_the_class_folder_layout_deterministically(tmp_path):
    for out in ("a", "b"):
        heldout.main(["--out", str(tmp_path / out), "--per_class", "2", "--img_size", "24",
                      "--seed", "3", "--kind", "outline"])
    for name in CLASSES:
        files = sorted((tmp_path / "a" / name).glob("*.png"))
        assert len(files) == 2
        assert [f.read_bytes() for f in files] == [
            f.read_bytes() for f in sorted((tmp_path / "b" / name).glob("*.png"))]
    with open(tmp_path / "a" / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and {r["kind"] for r in rows} == {"outline"}


def test_evaluate_command_scores_a_model_on_heldout_images(tiny_workdir, tmp_path):
    from tests.train_setup import run

    data = tmp_path / "heldout"
    heldout.main(["--out", str(data), "--per_class", "2", "--img_size", "32", "--seed", "0"])
    output = tmp_path / "report" / "heldout.json"
    result = run([sys.executable, "-m", "geojax.evaluate", f"--workdir={tiny_workdir}",
                  f"--data_dir={data}", f"--output={output}"])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["num_examples"] == 20
    per_class = report["per_class"]
    assert [per_class[c]["support"] for c in CLASSES] == [2] * 10
    correct = sum(round(per_class[c]["recall"] * per_class[c]["support"]) for c in CLASSES)
    assert report["accuracy"] == pytest.approx(correct / 20)
    assert np.trace(report["confusion_matrix"]) == correct
