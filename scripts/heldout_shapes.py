"""Held-out shape images from a second renderer, written apart from geojax.data, with PIL only.

Models are judged on images from renderers that are not ours. This one shares nothing with
`geojax.data` but the class names: its geometry is built from the class definitions alone and
it paints with PIL.ImageDraw in styles and colours of its own:

    python -m scripts.heldout_shapes --out DIR --per_class 50 --img_size 64 --seed 0 [--kind all]

writes DIR/CLASS/NNNNN.png (the layout `python -m geojax.evaluate --data_dir DIR` reads) and
DIR/manifest.csv (file, class, kind, style, palette, background, blur, extent: the shape's
width or height, whichever is larger, over the frame's). `--kind filled` or `outline` writes only
that kind, so the evaluate command scores each kind on its own folder.

The classes, as defined (every shape at a random rotation, position and scale):
  circle; ellipse (axis ratio 1.5-2.8); square; rectangle (side ratio 1.5-2.8);
  rhombus (equal sides, acute angle 42-68 degrees); triangle (smallest angle >= 25 degrees:
  equilateral, isosceles, right-angled, obtuse or scalene); regular pentagon, hexagon, octagon;
  five-pointed star (inner radius 0.35-0.55 of the outer).
Styles: filled kinds 'solid', 'shadow' (drop shadow), 'hatched' (parallel-line fill inside an
outline), 'two_tone' (fill with a contrasting border); outline kinds 'stroke' (thin),
'thick' (heavy pen, round joints), 'dashed', 'dotted'. Palettes: 'pastel', 'dark' (light ink on
near-black), 'ink' (black or blue pen on white or paper), 'vivid' (random hues), 'gray'.
Backgrounds: flat, linear gradient, speckled paper, graph-paper grid. Anti-aliasing by drawing
at 4x and downsampling (Lanczos), sometimes a slight Gaussian blur.
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from geojax import CLASSES

FILLED_STYLES = ("solid", "shadow", "hatched", "two_tone")
OUTLINE_STYLES = ("stroke", "thick", "dashed", "dotted")
KINDS = {"filled": FILLED_STYLES, "outline": OUTLINE_STYLES}
PALETTES = ("pastel", "dark", "ink", "vivid", "gray")
BACKGROUNDS = ("flat", "gradient", "paper", "grid")
SUPERSAMPLE = 4
SIDES = {"triangle": 3, "square": 4, "rectangle": 4, "rhombus": 4, "pentagon": 5,
         "hexagon": 6, "octagon": 8, "star": 10}

RGB = tuple[int, int, int]


# ---------------------------------------------------------------------------------------------
# Geometry: polygons around the origin, the farthest vertex at distance 1, unrotated
# ---------------------------------------------------------------------------------------------


def regular_polygon(n: int, phase: float = 0.0) -> np.ndarray:
    k = np.arange(n)
    theta = phase + 2 * math.pi * k / n
    return np.column_stack([np.cos(theta), np.sin(theta)])


def ellipse_points(ratio: float, count: int = 256) -> np.ndarray:
    theta = np.linspace(0.0, 2 * math.pi, count, endpoint=False)
    return np.column_stack([np.cos(theta), np.sin(theta) / ratio])


def triangle_from_angles(a: float, b: float) -> np.ndarray:
    """Base from (0, 0) to (1, 0) with angle `a` at the first end and `b` at the second; the
    apex where the two sides meet. Centred on its centroid."""
    height = 1.0 / (1.0 / math.tan(a) + 1.0 / math.tan(b))
    apex = (height / math.tan(a), height)
    pts = np.array([[0.0, 0.0], [1.0, 0.0], apex])
    return pts - pts.mean(axis=0)


def sample_triangle_angles(rng: np.random.Generator) -> tuple[float, float, float]:
    """Angles (degrees) of a triangle, each >= 25: a named form or any such triangle."""
    form = rng.choice(["equilateral", "isosceles", "right", "obtuse", "scalene"])
    if form == "equilateral":
        return 60.0, 60.0, 60.0
    if form == "isosceles":
        base = rng.uniform(30, 75)
        return base, base, 180 - 2 * base
    if form == "right":
        a = rng.uniform(25, 65)
        return a, 90 - a, 90.0
    if form == "obtuse":
        big = rng.uniform(100, 125)
        a = rng.uniform(25, 180 - big - 25)
        return a, 180 - big - a, big
    while True:
        a, b = rng.uniform(25, 110, size=2)
        if 180 - a - b >= 25:
            return float(a), float(b), float(180 - a - b)


def class_polygon(name: str, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """[K, 2] vertices of a random `name` shape (x right, y down), scaled so the farthest
    vertex is 1 from the origin, and the drawn parameters."""
    info: dict = {}
    if name == "circle":
        pts = regular_polygon(256)
    elif name == "ellipse":
        info["ratio"] = rng.uniform(1.5, 2.8)
        pts = ellipse_points(info["ratio"])
    elif name == "square":
        pts = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], float)
    elif name == "rectangle":
        info["ratio"] = rng.uniform(1.5, 2.8)
        pts = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], float) * (info["ratio"], 1.0)
    elif name == "rhombus":
        # Sides of length 1 from the origin at 0 and `acute`; vertices 0, u, u + v, v.
        info["acute"] = rng.uniform(42, 68)
        t = math.radians(info["acute"])
        u, v = np.array([1.0, 0.0]), np.array([math.cos(t), math.sin(t)])
        pts = np.array([[0.0, 0.0], u, u + v, v])
        pts -= pts.mean(axis=0)
    elif name == "triangle":
        a, b, c = sample_triangle_angles(rng)
        info["angles"] = (a, b, c)
        pts = triangle_from_angles(math.radians(a), math.radians(b))
    elif name in ("pentagon", "hexagon", "octagon"):
        pts = regular_polygon(SIDES[name], rng.uniform(0, 2 * math.pi))
    elif name == "star":
        info["inner"] = rng.uniform(0.35, 0.55)
        radii = np.where(np.arange(10) % 2 == 0, 1.0, info["inner"])
        pts = regular_polygon(10) * radii[:, None]
    else:
        raise ValueError(f"unknown class {name!r}")
    return pts / np.hypot(pts[:, 0], pts[:, 1]).max(), info


def place(pts: np.ndarray, rng: np.random.Generator, size: float,
          scale: tuple[float, float], margin: float) -> np.ndarray:
    """Rotates `pts` at random, scales its width-or-height extent to a `scale` fraction of the
    frame and puts it anywhere it fits with `margin` px to spare."""
    angle = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(angle), math.sin(angle)
    pts = pts @ np.array([[c, -s], [s, c]])
    extent = (pts.max(axis=0) - pts.min(axis=0)).max()
    pts = pts * (rng.uniform(*scale) * (size - 2 * margin) / extent)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    low = margin - lo
    high = np.maximum(size - margin - hi, low)
    return pts + rng.uniform(low, high)


# ---------------------------------------------------------------------------------------------
# Colours and backgrounds
# ---------------------------------------------------------------------------------------------


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def luminance(color: RGB) -> float:
    r, g, b = color
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def palette_colors(palette: str, rng: np.random.Generator) -> tuple[RGB, RGB, RGB]:
    """(background, ink, accent) for a palette; ink stands out from the background."""
    hue = rng.random()
    if palette == "pastel":
        background = _hsv(hue, rng.uniform(0.05, 0.2), rng.uniform(0.92, 1.0))
        ink = _hsv(hue + rng.uniform(0.3, 0.7), rng.uniform(0.45, 0.7), rng.uniform(0.55, 0.75))
    elif palette == "dark":
        background = _hsv(hue, rng.uniform(0.0, 0.5), rng.uniform(0.05, 0.2))
        ink = _hsv(rng.random(), rng.uniform(0.0, 0.8), rng.uniform(0.8, 1.0))
    elif palette == "ink":
        background = _hsv(0.12, rng.uniform(0.0, 0.12), rng.uniform(0.9, 1.0))
        ink = (0, 0, 0) if rng.random() < 0.5 else _hsv(rng.uniform(0.58, 0.7), 0.9, 0.55)
    elif palette == "gray":
        level = rng.uniform(0, 1)
        background = (round(level * 255),) * 3
        other = level - 0.55 if level > 0.5 else level + 0.55
        ink = (round(float(np.clip(other, 0, 1)) * 255),) * 3
    elif palette == "vivid":
        background = _hsv(hue, rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
        for _ in range(50):
            ink = _hsv(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.3, 1.0))
            if abs(luminance(ink) - luminance(background)) > 0.3:
                break
        else:
            ink = (0, 0, 0) if luminance(background) > 0.5 else (255, 255, 255)
    else:
        raise ValueError(f"unknown palette {palette!r}")
    accent = (0, 0, 0) if luminance(ink) > 0.5 else (255, 255, 255)
    if palette in ("pastel", "vivid"):
        accent = _hsv(rng.random(), 0.8, 0.3 if luminance(ink) > 0.5 else 0.95)
    return background, ink, accent


def background_image(kind: str, color: RGB, size: int, rng: np.random.Generator) -> Image.Image:
    base = np.broadcast_to(np.array(color, np.float32), (size, size, 3)).copy()
    if kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:size, 0:size] / size
        ramp = (xx * math.cos(angle) + yy * math.sin(angle))
        ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6) - 0.5
        base += ramp[..., None] * rng.uniform(20, 50) * (1 if luminance(color) < 0.5 else -1)
    elif kind == "paper":
        speckle = rng.normal(0, rng.uniform(3, 8), (size // 8 + 1, size // 8 + 1))
        speckle = np.kron(speckle, np.ones((8, 8)))[:size, :size]
        base += speckle[..., None]
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    if kind == "grid":
        draw = ImageDraw.Draw(image)
        step = size / rng.integers(6, 12)
        shade = luminance(color)
        line = tuple(round(c * 0.85) if shade > 0.5 else min(255, c + 40) for c in color)
        offset = rng.uniform(0, step)
        for k in range(int(size / step) + 2):
            p = offset + k * step
            draw.line([(p, 0), (p, size)], fill=line, width=max(1, SUPERSAMPLE // 2))
            draw.line([(0, p), (size, p)], fill=line, width=max(1, SUPERSAMPLE // 2))
    return image


# ---------------------------------------------------------------------------------------------
# Painting
# ---------------------------------------------------------------------------------------------


def _closed(pts: np.ndarray) -> list[tuple[float, float]]:
    return [tuple(p) for p in np.vstack([pts, pts[:1]])]


def _along(pts: np.ndarray, spacing: float) -> tuple[np.ndarray, float]:
    """Points every `spacing` along the closed outline and its perimeter."""
    closed = np.vstack([pts, pts[:1]])
    seg = np.hypot(*np.diff(closed, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.arange(0.0, arc[-1], spacing)
    return np.column_stack([np.interp(s, arc, closed[:, 0]), np.interp(s, arc, closed[:, 1])]), arc[-1]


def draw_dashed(draw: ImageDraw.ImageDraw, pts: np.ndarray, color: RGB, width: int,
                dash: float) -> None:
    dense, _ = _along(pts, dash / 6)
    period = 10  # 6 samples on, 4 off: dashes 1.5x their gaps
    for start in range(0, len(dense), period):
        chunk = dense[start:start + 7]
        if len(chunk) > 1:
            draw.line([tuple(p) for p in chunk], fill=color, width=width, joint="curve")


def draw_dotted(draw: ImageDraw.ImageDraw, pts: np.ndarray, color: RGB, radius: float) -> None:
    dots, _ = _along(pts, radius * 3.2)
    for x, y in dots:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color)


def hatch_fill(image: Image.Image, pts: np.ndarray, color: RGB, spacing: float,
               width: int, rng: np.random.Generator) -> None:
    """Parallel lines at a random angle, clipped to the polygon."""
    size = image.size[0]
    lines = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(lines)
    angle = rng.uniform(0, math.pi)
    d = np.array([math.cos(angle), math.sin(angle)])
    n = np.array([-d[1], d[0]])
    centre = np.array([size / 2, size / 2])
    for k in np.arange(-size, size, spacing):
        a, b = centre + n * k - d * size * 1.5, centre + n * k + d * size * 1.5
        draw.line([tuple(a), tuple(b)], fill=255, width=width)
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in pts], fill=255)
    clip = Image.fromarray(np.minimum(np.asarray(lines), np.asarray(mask)))
    image.paste(Image.new("RGB", image.size, color), (0, 0), clip)


def paint(image: Image.Image, pts: np.ndarray, style: str, ink: RGB, accent: RGB,
          background: RGB, rng: np.random.Generator) -> None:
    """Paints the polygon `pts` (supersampled pixel coordinates) onto `image` in `style`."""
    draw = ImageDraw.Draw(image)
    span = float((pts.max(axis=0) - pts.min(axis=0)).max())
    ss = SUPERSAMPLE
    if style == "solid":
        draw.polygon([tuple(p) for p in pts], fill=ink)
    elif style == "shadow":
        offset = rng.uniform(0.03, 0.07) * span * np.array([1.0, 1.0])
        shadow = tuple(round(0.5 * c + 0.5 * (0 if luminance(background) > 0.4 else 255 * 0.3))
                       for c in background)
        draw.polygon([tuple(p) for p in pts + offset], fill=shadow)
        draw.polygon([tuple(p) for p in pts], fill=ink)
    elif style == "hatched":
        hatch_fill(image, pts, ink, spacing=max(3 * ss, span / rng.uniform(6, 12)),
                   width=max(ss, round(span / 40)), rng=rng)
        draw.line(_closed(pts), fill=ink, width=max(ss, round(span * 0.03)), joint="curve")
    elif style == "two_tone":
        draw.polygon([tuple(p) for p in pts], fill=ink)
        draw.line(_closed(pts), fill=accent, width=max(ss, round(span * rng.uniform(0.03, 0.06))),
                  joint="curve")
    elif style == "stroke":
        draw.line(_closed(pts), fill=ink, width=round(ss * rng.uniform(1.0, 2.0)), joint="curve")
    elif style == "thick":
        draw.line(_closed(pts), fill=ink, width=max(2 * ss, round(span * rng.uniform(0.06, 0.1))),
                  joint="curve")
    elif style == "dashed":
        draw_dashed(draw, pts, ink, width=round(ss * rng.uniform(1.2, 2.5)),
                    dash=max(3 * ss, span * rng.uniform(0.06, 0.1)))
    elif style == "dotted":
        draw_dotted(draw, pts, ink, radius=max(ss * 0.8, span * rng.uniform(0.015, 0.025)))
    else:
        raise ValueError(f"unknown style {style!r}")


def render(rng: np.random.Generator, name: str, img_size: int, *, style: str | None = None,
           palette: str | None = None, background: str | None = None,
           scale: tuple[float, float] = (0.4, 0.9), blur: bool | None = None,
           ) -> tuple[np.ndarray, dict]:
    """One `name` shape as uint8 RGB [img_size, img_size, 3] and what was drawn
    (class, kind, style, palette, background, the vertices in output pixels, parameters).
    Unset style / palette / background / blur are drawn at random."""
    style = style or str(rng.choice(FILLED_STYLES + OUTLINE_STYLES))
    palette = palette or str(rng.choice(PALETTES))
    background = background or str(rng.choice(BACKGROUNDS, p=[0.4, 0.25, 0.2, 0.15]))
    blur = bool(rng.random() < 0.3) if blur is None else blur
    big = img_size * SUPERSAMPLE
    bg_color, ink, accent = palette_colors(palette, rng)
    image = background_image(background, bg_color, big, rng)
    unit, params = class_polygon(name, rng)
    pts = place(unit, rng, big, scale, margin=0.08 * big)
    paint(image, pts, style, ink, accent, bg_color, rng)
    small = image.resize((img_size, img_size), Image.Resampling.LANCZOS)
    if blur:
        small = small.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 0.9)))
    kind = "filled" if style in FILLED_STYLES else "outline"
    # Pixel i spans [i, i + 1) in PIL; output coordinates of the vertices:
    vertices = pts / SUPERSAMPLE
    extent = float((vertices.max(axis=0) - vertices.min(axis=0)).max() / img_size)
    info = {"class": name, "kind": kind, "style": style, "palette": palette,
            "background": background, "blur": blur, "extent": extent, "vertices": vertices,
            **params}
    return np.asarray(small.convert("RGB")), info


def heldout_samples(per_class: int, img_size: int, seed: int, kind: str = "all",
                    scale: tuple[float, float] = (0.4, 0.9)) -> Iterator[dict]:
    """The images of a held-out set, class by class: {'label', 'name', 'index', 'image',
    'style', 'palette', and `render`'s info}. Image i of class `label` comes from the seed
    (seed, label, i) alone."""
    styles = FILLED_STYLES + OUTLINE_STYLES if kind == "all" else KINDS[kind]
    for label, name in enumerate(CLASSES):
        for i in range(per_class):
            rng = np.random.default_rng([seed, label, i])
            # Styles and palettes cycle so every class gets each of them about equally often.
            style = styles[(i + label) % len(styles)]
            palette = PALETTES[(i // len(styles) + label) % len(PALETTES)]
            image, info = render(rng, name, img_size, style=style, palette=palette, scale=scale)
            yield {**info, "label": label, "name": name, "index": i, "image": image,
                   "style": style, "palette": palette}


def write_heldout(out: Path, per_class: int, img_size: int, seed: int, kind: str = "all",
                  scale: tuple[float, float] = (0.4, 0.9)) -> int:
    """Writes OUT/CLASS/NNNNN.png and OUT/manifest.csv; returns the number of images."""
    rows = []
    for sample in heldout_samples(per_class, img_size, seed, kind, scale):
        name = sample["name"]
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{sample['index']:05d}.png"
        Image.fromarray(sample["image"]).save(path)
        rows.append([f"{name}/{path.name}", name, sample["kind"], sample["style"],
                     sample["palette"], sample["background"], int(sample["blur"]),
                     f"{sample['extent']:.3f}"])
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "class", "kind", "style", "palette", "background", "blur",
                         "extent"])
        writer.writerows(rows)
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--per_class", type=int, default=50)
    parser.add_argument("--img_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kind", choices=("all", "filled", "outline"), default="all")
    parser.add_argument("--scale", type=float, nargs=2, default=(0.4, 0.9),
                        help="shape extent as a fraction of the frame (low high)")
    args = parser.parse_args(argv)
    if args.img_size < 16 or args.per_class < 1:
        parser.error("--img_size must be >= 16 and --per_class >= 1")
    count = write_heldout(args.out, args.per_class, args.img_size, args.seed, args.kind,
                          tuple(args.scale))
    print(f"wrote {count} images ({args.kind}) to {args.out}")


if __name__ == "__main__":
    main()
