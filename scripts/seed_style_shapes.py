"""Held-out images in the style of the seed project's dataset generator, apart from geojax.data.

This imitates the seed project's `GeometricShapeGenerator` (and its training augmentation) from
its specification alone. It shares nothing with `geojax.data` but the class names: geometry,
colours, placement and drawing are written here, with OpenCV's filled polygons and ellipses
(`cv2.fillPoly` / `cv2.circle` / `cv2.ellipse`, thickness -1, no anti-aliasing), as the seed did.

    python -m scripts.seed_style_shapes shapes --out DIR --per_class N --seed S
                                               [--img_size 224] [--augment]
    python -m scripts.seed_style_shapes blank --out DIR --count N --seed S [--img_size 224]
    python -m scripts.seed_style_shapes scenes --out DIR --count N --seed S
                                               [--width 640] [--height 480] [--max_shapes 6]

`shapes` writes DIR/CLASS/NNNNN.png (the layout `python -m geojax.evaluate --data_dir DIR` reads)
and DIR/manifest.csv (file, class, kind, style, palette, background, blur, extent: the drawn
shape's bounding box, longest side over the frame's). Image i of class c comes from
`numpy.random.default_rng([seed, c, i])` alone, so any subset of a set is the same images.

The seed's images (224x224 RGB; sizes scale with `img_size` / 224): one flat background colour,
each channel uniform in 0-100; one filled shape, each fill channel uniform in 50-255; size s
uniform in 50-180 px; centre uniform such that the shape's bounding box lies in the frame.
  circle: radius s/2.  square: side s, axis-aligned.  rectangle: s wide, s*U(0.5, 0.8) high.
  triangle: equilateral, side s, apex up.  pentagon / hexagon / octagon: regular, circumradius
  s/2, a vertex pointing right.  star: 5 points, outer radius s/2, inner s/4, a point up.
  rhombus: s wide, s*U(1.2, 1.8) tall, vertices up/down/left/right (the seed let tall ones run
  off the frame; here s shrinks until the whole rhombus fits).  ellipse: s wide, s*U(0.5, 0.8)
  high, axis-aligned.
30% of images get a Gaussian blur (sigma 0.5-1.5). `--augment` adds the seed's training
augmentation to 70% of images: rotation U(-30, 30) degrees (corners filled with the background
colour), horizontal and vertical flips (each p=0.5), zoom U(0.9, 1.1), brightness and contrast
U(0.8, 1.2).

`blank` writes shape-free images (DIR/NNNNN.png, DIR/manifest.csv with file, kind), cycling
through kinds flat, gradient, noise, texture, stripes and border_fragment (a corner or edge of a
large filled polygon or circle mostly outside the frame, covering under 15% of it), image i from
`default_rng([seed, i])`: a model should name no shape on them.

`scenes` writes multi-shape detection scenes in the seed's style (flat dark background, 1 to
`max_shapes` shapes of size 40-160 px, boxes at least 4 px apart, all inside the frame) as
DIR/images/NNNN.png and DIR/annotations.json in COCO form (bbox [x, y, width, height] of the
drawn pixels, category_id = label + 1), scene i from `default_rng([seed, i])`; this is the form
`python -m scripts.bench_detection --scenes_dir DIR` reads.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from geojax import CLASSES

SEED_SIZE = 224  # the seed's frame; its pixel sizes scale with img_size / SEED_SIZE
SIZE_RANGE = (50.0, 180.0)  # shape size s in px at 224
SCENE_SIZE_RANGE = (40.0, 160.0)  # shape size s in px in scenes (not scaled)
BLUR_PROB = 0.3
BLUR_SIGMA = (0.5, 1.5)
AUGMENT_PROB = 0.7
SCENE_GAP = 4  # px between scene boxes
SCENE_TRIES = 100  # placement tries per scene shape before it is left out
BLANK_KINDS = ("flat", "gradient", "noise", "texture", "stripes", "border_fragment")
MANIFEST_HEADER = ("file", "class", "kind", "style", "palette", "background", "blur", "extent")
_SHIFT = 4  # OpenCV fixed-point bits: vertices at 1/16 px
_ONE = 1 << _SHIFT


# ---------------------------------------------------------------------------------------------
# geometry and drawing


def _regular(n: int, radius: float, start: float) -> np.ndarray:
    angles = start + 2 * math.pi * np.arange(n) / n
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def shape_geometry(rng: np.random.Generator, name: str, s: float) -> dict:
    """The seed's geometry of `name` at size `s`, centred on (0, 0), image axes (y down).

    Returns {"kind": "polygon", "points": float [N, 2]} or {"kind": "ellipse", "axes": (a, b)}
    (semi-axes along x and y). Draws from `rng` only for the rectangle, rhombus and ellipse
    aspect."""
    half = s / 2
    if name == "circle":
        return {"kind": "ellipse", "axes": (half, half)}
    if name == "ellipse":
        return {"kind": "ellipse", "axes": (half, half * rng.uniform(0.5, 0.8))}
    if name == "square":
        points = [(-half, -half), (half, -half), (half, half), (-half, half)]
    elif name == "rectangle":
        h = half * rng.uniform(0.5, 0.8)
        points = [(-half, -h), (half, -h), (half, h), (-half, h)]
    elif name == "triangle":
        h = s * math.sqrt(3) / 2
        points = [(0.0, -h / 2), (half, h / 2), (-half, h / 2)]
    elif name in ("pentagon", "hexagon", "octagon"):
        n = {"pentagon": 5, "hexagon": 6, "octagon": 8}[name]
        return {"kind": "polygon", "points": _regular(n, half, 0.0)}
    elif name == "star":
        outer, inner = _regular(5, half, -math.pi / 2), _regular(5, half / 2, -math.pi / 2 + math.pi / 5)
        return {"kind": "polygon", "points": np.stack([outer, inner], axis=1).reshape(10, 2)}
    elif name == "rhombus":
        h = half * rng.uniform(1.2, 1.8)
        points = [(0.0, -h), (half, 0.0), (0.0, h), (-half, 0.0)]
    else:
        raise ValueError(f"unknown class {name!r}; expected one of {CLASSES}")
    return {"kind": "polygon", "points": np.asarray(points, dtype=float)}


def _extent(geometry: dict) -> tuple[float, float, float, float]:
    """(x_min, y_min, x_max, y_max) of the geometry around its centre."""
    if geometry["kind"] == "ellipse":
        a, b = geometry["axes"]
        return -a, -b, a, b
    p = geometry["points"]
    return p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()


def _fit(geometry: dict, width: int, height: int) -> tuple[dict, float]:
    """Shrinks the geometry about its centre (only if needed) until its box fits the frame;
    returns it and the scale applied."""
    x0, y0, x1, y1 = _extent(geometry)
    scale = min(1.0, (width - 1) / (x1 - x0), (height - 1) / (y1 - y0))
    if scale >= 1.0:
        return geometry, 1.0
    if geometry["kind"] == "ellipse":
        return {"kind": "ellipse", "axes": tuple(scale * v for v in geometry["axes"])}, scale
    return {"kind": "polygon", "points": geometry["points"] * scale}, scale


def _place(rng: np.random.Generator, geometry: dict, width: int, height: int
           ) -> tuple[float, float]:
    """A centre uniform over the positions whose bounding box lies inside the frame."""
    x0, y0, x1, y1 = _extent(geometry)
    return rng.uniform(-x0, width - x1), rng.uniform(-y0, height - y1)


def draw_mask(geometry: dict, center: tuple[float, float], width: int, height: int
              ) -> np.ndarray:
    """uint8 [H, W] mask (0 / 255) of the filled shape at `center`, drawn as OpenCV fills.

    Coordinates are continuous with pixel i covering [i, i + 1); OpenCV puts pixel centres on
    integers, hence the half-pixel shift."""
    mask = np.zeros((height, width), np.uint8)
    cx, cy = center[0] - 0.5, center[1] - 0.5
    if geometry["kind"] == "ellipse":
        a, b = geometry["axes"]
        c = (round(cx * _ONE), round(cy * _ONE))
        if a == b:
            cv2.circle(mask, c, round(a * _ONE), 255, -1, cv2.LINE_8, _SHIFT)
        else:
            cv2.ellipse(mask, c, (round(a * _ONE), round(b * _ONE)), 0, 0, 360, 255, -1,
                        cv2.LINE_8, _SHIFT)
    else:
        points = np.round((geometry["points"] + (cx, cy)) * _ONE).astype(np.int32)
        cv2.fillPoly(mask, [points], 255, cv2.LINE_8, _SHIFT)
    return mask


def mask_box(mask: np.ndarray) -> np.ndarray:
    """int [4] (x0, y0, x1, y1), ends exclusive, of the pixels with coverage over a half."""
    ys, xs = np.nonzero(mask > 127)
    if not len(xs):
        return np.zeros(4, np.int64)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.int64)


def _composite(image: np.ndarray, mask: np.ndarray, color: np.ndarray) -> np.ndarray:
    alpha = (mask.astype(np.float32) / 255.0)[..., None]
    return image * (1 - alpha) + color.astype(np.float32) * alpha


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma,
                            borderType=cv2.BORDER_REFLECT)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# single-shape images


def _augment(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray,
             background: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """The seed's training augmentation, applied as one draw: rotation, flips, zoom,
    brightness, contrast. Corners uncovered by the rotation take the background colour."""
    angle = rng.uniform(-30, 30)
    flip_h, flip_v = rng.random() < 0.5, rng.random() < 0.5
    zoom = rng.uniform(0.9, 1.1)
    brightness, contrast = rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2)
    h, w = mask.shape
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, zoom)
    image = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT,
                           borderValue=tuple(float(v) for v in background))
    mask = cv2.warpAffine(mask, matrix, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if flip_h:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if flip_v:
        image, mask = image[::-1], mask[::-1]
    image = image * brightness
    mean = image.mean()
    image = (image - mean) * contrast + mean
    params = {"angle": angle, "flip_h": flip_h, "flip_v": flip_v, "zoom": zoom,
              "brightness": brightness, "contrast": contrast}
    return np.ascontiguousarray(image), np.ascontiguousarray(mask), params


def seed_shape(rng: np.random.Generator, name: str, img_size: int = SEED_SIZE,
               augment: bool = False, blur: float = BLUR_PROB) -> tuple[np.ndarray, dict]:
    """One seed-style image of class `name`: uint8 [img_size, img_size, 3] RGB and its info
    (label, size s, center, background, fill, blur sigma or 0, bbox of the drawn pixels after
    any augmentation, extent, augment parameters or None).

    `blur` is the probability of the Gaussian blur (the seed's 0.3); other values change only
    whether the blur is applied, never the other draws."""
    scale = img_size / SEED_SIZE
    background = rng.integers(0, 101, 3)
    fill = rng.integers(50, 256, 3)
    s = rng.uniform(*SIZE_RANGE) * scale
    geometry, shrink = _fit(shape_geometry(rng, name, s), img_size, img_size)
    center = _place(rng, geometry, img_size, img_size)
    blurred, sigma = rng.random() < blur, rng.uniform(*BLUR_SIGMA) * scale
    sigma = sigma if blurred else 0.0
    mask = draw_mask(geometry, center, img_size, img_size)
    image = np.broadcast_to(background.astype(np.float32), (img_size, img_size, 3))
    image = _composite(image, mask, fill)
    if sigma:
        image = _blur(image, sigma)
    augmentation = None
    if augment and rng.random() < AUGMENT_PROB:
        image, mask, augmentation = _augment(rng, image, mask, background)
    box = mask_box(mask)
    info = {"class": name, "label": CLASSES.index(name), "size": float(s * shrink),
            "center": (float(center[0]), float(center[1])),
            "background": background.tolist(), "fill": fill.tolist(), "blur": float(sigma),
            "bbox": box.tolist(),
            "extent": float(max(box[2] - box[0], box[3] - box[1]) / img_size),
            "augment": augmentation}
    return _to_uint8(image), info


def write_shapes(out: str | Path, per_class: int, seed: int, img_size: int = SEED_SIZE,
                 augment: bool = False) -> Path:
    """Writes OUT/CLASS/NNNNN.png for every class and OUT/manifest.csv; returns the manifest."""
    out = Path(out)
    rows = []
    for label, name in enumerate(CLASSES):
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image, info = seed_shape(np.random.default_rng([seed, label, i]), name, img_size,
                                     augment=augment)
            rel = f"{name}/{i:05d}.png"
            Image.fromarray(image, "RGB").save(out / rel)
            rows.append([rel, name, "filled", "seed_aug" if augment else "seed", "seed",
                         "flat_dark", int(info["blur"] > 0), f"{info['extent']:.3f}"])
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(MANIFEST_HEADER)
        writer.writerows(rows)
    return manifest


# ---------------------------------------------------------------------------------------------
# shape-free images


def _flat_color(rng: np.random.Generator) -> np.ndarray:
    choice = rng.integers(5)
    if choice == 0:
        return np.full(3, 128)  # mid grey
    if choice == 1:
        return np.zeros(3, np.int64)  # black
    if choice == 2:
        return np.full(3, 255)  # white
    if choice == 3:
        return rng.integers(0, 101, 3)  # the seed's dark backgrounds
    return rng.integers(0, 256, 3)


def _fragment(rng: np.random.Generator, size: int) -> np.ndarray:
    """Mask of a large circle or regular polygon mostly outside the frame, on a corner or an
    edge, covering 2-12% of the frame (so no whole shape is visible: each covers more)."""
    target = rng.uniform(0.02, 0.12)
    radius = rng.uniform(0.6, 1.5) * size
    sides = int(rng.choice([0, 3, 4, 5, 6, 8]))  # 0: circle
    geometry = ({"kind": "ellipse", "axes": (radius, radius)} if sides == 0 else
                {"kind": "polygon", "points": _regular(sides, radius, rng.uniform(0, 2 * math.pi))})
    if rng.random() < 0.5:  # a corner: move out along the diagonal
        corner = rng.integers(4)
        anchor = np.array([size * (corner % 2), size * (corner // 2)], float)
        direction = np.array([1.0 if corner % 2 else -1.0, 1.0 if corner // 2 else -1.0])
        direction /= math.sqrt(2)
    else:  # an edge: move out perpendicular to it
        edge, along = rng.integers(4), rng.uniform(0.15, 0.85) * size
        anchor, direction = [
            (np.array([along, 0.0]), np.array([0.0, -1.0])),
            (np.array([along, size]), np.array([0.0, 1.0])),
            (np.array([0.0, along]), np.array([-1.0, 0.0])),
            (np.array([size, along]), np.array([1.0, 0.0])),
        ][edge]
    lo, hi = -radius, radius  # coverage falls as the centre moves out; hi covers nothing
    best = np.zeros((size, size), np.uint8)
    for _ in range(24):
        mid = (lo + hi) / 2
        mask = draw_mask(geometry, tuple(anchor + mid * direction), size, size)
        if (mask > 127).mean() > target:
            lo = mid
        else:
            hi, best = mid, mask
    return best


def blank_image(rng: np.random.Generator, kind: str, img_size: int = SEED_SIZE) -> np.ndarray:
    """A shape-free uint8 [img_size, img_size, 3] RGB image of the given kind (BLANK_KINDS)."""
    size = img_size
    if kind == "flat":
        image = np.broadcast_to(_flat_color(rng).astype(np.float32), (size, size, 3))
    elif kind == "gradient":
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        t = xs * math.cos(angle) + ys * math.sin(angle)
        t = ((t - t.min()) / max(float(t.max() - t.min()), 1e-6))[..., None]
        image = a * (1 - t) + b * t
    elif kind == "noise":
        base = _flat_color(rng).astype(np.float32)
        image = base + rng.normal(0, rng.uniform(5, 30), (size, size, 3))
    elif kind == "texture":
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        cells = int(rng.integers(8, 17))
        field = rng.random((cells, cells)).astype(np.float32)
        field = cv2.resize(field, (size, size), interpolation=cv2.INTER_CUBIC)
        field = _blur(field, size / cells / 3)
        t = np.clip((field - field.min()) / max(float(field.max() - field.min()), 1e-6), 0, 1)
        image = a * (1 - t[..., None]) + b * t[..., None]
    elif kind == "stripes":
        image = np.ascontiguousarray(
            np.broadcast_to(_flat_color(rng).astype(np.float32), (size, size, 3)))
        ink = rng.integers(0, 256, 3).astype(np.float32)
        angle = rng.uniform(0, math.pi)
        normal = np.array([-math.sin(angle), math.cos(angle)])
        along = np.array([math.cos(angle), math.sin(angle)]) * 2 * size
        count = int(rng.integers(2, 7))
        spacing = size / (count + 1) * rng.uniform(0.6, 1.0)
        thickness = int(rng.integers(1, max(2, size // 40) + 1))
        middle = np.array([size / 2, size / 2]) + normal * rng.uniform(-0.15, 0.15) * size
        mask = np.zeros((size, size), np.uint8)
        for k in range(count):
            centre = middle + normal * (k - (count - 1) / 2) * spacing
            p, q = np.round(centre - along).astype(int), np.round(centre + along).astype(int)
            cv2.line(mask, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), 255, thickness,
                     cv2.LINE_AA)
        image = _composite(image, mask, ink)
    elif kind == "border_fragment":
        background, fill = rng.integers(0, 101, 3), rng.integers(50, 256, 3)
        image = np.broadcast_to(background.astype(np.float32), (size, size, 3))
        image = _composite(image, _fragment(rng, size), fill)
    else:
        raise ValueError(f"unknown blank kind {kind!r}; expected one of {BLANK_KINDS}")
    return _to_uint8(image)


def write_blank(out: str | Path, count: int, seed: int, img_size: int = SEED_SIZE) -> Path:
    """Writes OUT/NNNNN.png (kinds in turn) and OUT/manifest.csv (file, kind)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        kind = BLANK_KINDS[i % len(BLANK_KINDS)]
        image = blank_image(np.random.default_rng([seed, i]), kind, img_size)
        Image.fromarray(image, "RGB").save(out / f"{i:05d}.png")
        rows.append([f"{i:05d}.png", kind])
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "kind"])
        writer.writerows(rows)
    return manifest


# ---------------------------------------------------------------------------------------------
# detection scenes


def _apart(box: np.ndarray, placed: list[np.ndarray], gap: int) -> bool:
    return all(box[0] >= other[2] + gap or other[0] >= box[2] + gap
               or box[1] >= other[3] + gap or other[1] >= box[3] + gap for other in placed)


def seed_scene(rng: np.random.Generator, width: int = 640, height: int = 480,
               max_shapes: int = 6, blur: float = BLUR_PROB
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seed-style scene: uint8 [height, width, 3] RGB, boxes int [K, 4] (x0, y0, x1, y1, ends
    exclusive: the drawn pixels' tight box) and labels int [K].

    Asks for 1..max_shapes shapes; one that finds no place SCENE_GAP px clear of the others in
    SCENE_TRIES tries is left out. With probability `blur` the scene is blurred (sigma 0.5-1.5);
    the boxes stay those of the drawn pixels."""
    background = rng.integers(0, 101, 3)
    image = np.ascontiguousarray(
        np.broadcast_to(background.astype(np.float32), (height, width, 3)))
    boxes, labels = [], []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        label = int(rng.integers(len(CLASSES)))
        fill = rng.integers(50, 256, 3)
        s = rng.uniform(*SCENE_SIZE_RANGE)
        geometry, _ = _fit(shape_geometry(rng, CLASSES[label], s), width, height)
        for _ in range(SCENE_TRIES):
            mask = draw_mask(geometry, _place(rng, geometry, width, height), width, height)
            box = mask_box(mask)
            if box[2] > box[0] and _apart(box, boxes, SCENE_GAP):
                image = _composite(image, mask, fill)
                boxes.append(box)
                labels.append(label)
                break
    blurred, sigma = rng.random() < blur, rng.uniform(*BLUR_SIGMA)
    if blurred:
        image = _blur(image, sigma)
    boxes_array = np.array(boxes, np.int64).reshape(-1, 4)
    return _to_uint8(image), boxes_array, np.array(labels, np.int64)


def write_scenes(out: str | Path, count: int, seed: int, width: int = 640, height: int = 480,
                 max_shapes: int = 6) -> Path:
    """Writes OUT/images/NNNN.png and OUT/annotations.json (COCO); returns the annotations."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    coco: dict = {
        "info": {"description": "seed-style detection scenes (scripts/seed_style_shapes.py): "
                                f"{width}x{height}, 1-{max_shapes} shapes each", "seed": seed},
        "images": [], "annotations": [],
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"}
                       for i, name in enumerate(CLASSES)],
    }
    for i in range(count):
        image, boxes, labels = seed_scene(np.random.default_rng([seed, i]), width, height,
                                          max_shapes)
        rel = f"images/{i:04d}.png"
        Image.fromarray(image, "RGB").save(out / rel)
        coco["images"].append({"id": i + 1, "file_name": rel, "width": width, "height": height})
        for (x0, y0, x1, y1), label in zip(boxes.tolist(), labels.tolist(), strict=True):
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": i + 1,
                "category_id": label + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    path = out / "annotations.json"
    path.write_text(json.dumps(coco) + "\n")
    return path


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    shapes = commands.add_parser("shapes", help="one shape per image, CLASS/NNNNN.png")
    shapes.add_argument("--out", required=True)
    shapes.add_argument("--per_class", type=int, required=True)
    shapes.add_argument("--seed", type=int, required=True)
    shapes.add_argument("--img_size", type=int, default=SEED_SIZE)
    shapes.add_argument("--augment", action="store_true",
                        help="the seed's training augmentation on 70%% of images")
    blank = commands.add_parser("blank", help="shape-free images, NNNNN.png")
    blank.add_argument("--out", required=True)
    blank.add_argument("--count", type=int, required=True)
    blank.add_argument("--seed", type=int, required=True)
    blank.add_argument("--img_size", type=int, default=SEED_SIZE)
    scenes = commands.add_parser("scenes", help="detection scenes, COCO annotations.json")
    scenes.add_argument("--out", required=True)
    scenes.add_argument("--count", type=int, required=True)
    scenes.add_argument("--seed", type=int, required=True)
    scenes.add_argument("--width", type=int, default=640)
    scenes.add_argument("--height", type=int, default=480)
    scenes.add_argument("--max_shapes", type=int, default=6)
    args = parser.parse_args(argv)
    if args.command == "shapes":
        path = write_shapes(args.out, args.per_class, args.seed, args.img_size, args.augment)
        print(f"wrote {args.per_class * len(CLASSES)} images and {path}")
    elif args.command == "blank":
        path = write_blank(args.out, args.count, args.seed, args.img_size)
        print(f"wrote {args.count} images and {path}")
    else:
        path = write_scenes(args.out, args.count, args.seed, args.width, args.height,
                            args.max_shapes)
        print(f"wrote {args.count} scenes and {path}")


if __name__ == "__main__":
    main()
