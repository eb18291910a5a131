"""Paint shapes in JAX, on the accelerator: the styles and the shape-free samples of the OpenCV
renderer, per sample and with static shapes, so `jax.vmap` and `jax.jit` take it as is.

- `sample_style` draws fill/outline/bordered styles, colours that contrast with the background,
  flat, the seed's flat dark, gradient and textured backgrounds and the blur/noise effects, as
  `geojax.data.render.sample_image_style` / `sample_shape_style` do (JPEG has no device form).
- `render` paints a shape (`geojax.data.device.geometry`: its signed distance and coverage) in a
  style over its background.
- `render_sample` draws a shape-free sample (label `geojax.NO_SHAPE`: a bare background, a
  fragment of a large shape cut by the border, `fragment_geometry`, or stripes) with probability
  `no_shape_fraction`, as `geojax.data.render.render_no_shape`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from geojax import CLASSES, NO_SHAPE
from geojax.data import render as cpu_render
from geojax.data.device.geometry import (
    JITTER_HARMONICS,
    Geometry,
    coverage,
    fragment_geometry,
    sample_geometry,
    signed_distance,
    uniform_between,
    uniform_integer,
)
from geojax.data.device.pixels import (
    gaussian_blur,
    hsv_to_rgb,
    luma,
    materialise,
    standard_normal,
)

TEXTURE_MIN_SCALE = 3.0
Style = dict[str, jax.Array]
_SQUARE = CLASSES.index("square")


COLOR_DRAWS = 5  # uniforms per `random_color`
CONTRAST_TRIES = 8


def random_color(u: jax.Array) -> jax.Array:
    """As `render._random_color` (5 uniforms `u`): a quarter greys, the rest vivid HSV (RGB
    float 0..255)."""
    grey = uniform_integer(u[0], 0, 256)
    h = uniform_integer(u[1], 0, 180) / 180.0
    s = uniform_integer(u[2], 40, 256) / 255.0
    v = uniform_integer(u[3], 40, 256)
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
    dark_color = uniform_integer(dark_draws[0], 0, cpu_render.DARK_MAX + 1)
    first = jnp.where(paper, uniform_integer(u[1], 225, 256),
                      jnp.where(dark, dark_color, random_color(colors[0])))
    near = jnp.clip(first + uniform_integer(u[3:6], -60, 61), 0, 255)
    second = jnp.where((kind == 0) | (kind == 3), first, near)
    # The shape: ink contrasting with the background's mean (black line art on plain paper;
    # the seed's bright inks on its dark backgrounds).
    base = (first + second) / 2
    black_ink = (kind == 0) & (luma(base) / 255.0 > 0.85) & (u[6] < 0.5)
    dark_inks = uniform_integer(dark_draws[1:], cpu_render.DARK_INK_MIN, 256)
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
    jitter = jnp.where(u[8] < 0.25, uniform_between(u[9], 0.005, 0.03), 0.0)
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
        "texture_scale": uniform_between(u[16], TEXTURE_MIN_SCALE, 16.0),
        "texture_strength": jnp.where(kind == 2, uniform_between(u[17], 10.0, 40.0), 0.0),
        "fill": ink,
        "stroke": jnp.where(mode == 2, contrasting_color(colors[1 + CONTRAST_TRIES:], ink, 0.2),
                            ink),
        "has_fill": mode != 1,
        "has_stroke": (mode != 0) | hatched,
        "stroke_width": uniform_between(u[18], 1.0, max_width),
        "hatch_spacing": jnp.where(hatched, jnp.maximum(
            cpu_render.MIN_HATCH_SPACING,
            uniform_between(sketch[1], *cpu_render.HATCH_SPACING) * radius), 0.0),
        "hatch_angle": math.pi * sketch[2],
        "hatch_duty": uniform_between(sketch[3], *cpu_render.HATCH_DUTY),
        "dashes": jnp.where(dashed, jnp.floor(uniform_between(sketch[4], *cpu_render.DASHES)), 0.0),
        "dash_duty": uniform_between(sketch[5], *cpu_render.DASH_DUTY),
        "dash_phase": sketch[6],
        "jitter": jnp.stack([amplitude, phase], 1),
        "blur_sigma": jnp.float32(0.0),
        "noise_sigma": jnp.float32(0.0),
    }
    if effects:
        style["blur_sigma"] = jnp.where(u[19] < 0.25, uniform_between(u[20], 0.3, 1.2), 0.0)
        style["noise_sigma"] = jnp.where(u[21] < 0.25, uniform_between(u[22], 2.0, 12.0), 0.0)
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
    read from `bank`, see `geojax.data.device.pixels.standard_normal`)."""
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
    'noise_sigma' for the augmentation to apply (`geojax.data.device.augment.compose`)."""
    k = jax.random.split(key, 4)
    label = uniform_integer(jax.random.uniform(k[0]), 0, len(CLASSES)).astype(jnp.int32)
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
                 "hatch_spacing": jnp.where(stripes, uniform_between(
                     u[2], *cpu_render.STRIPES_SPACING) * size, style["hatch_spacing"]),
                 "hatch_angle": jnp.where(stripes, math.pi * u[3], style["hatch_angle"]),
                 "hatch_duty": jnp.where(stripes, uniform_between(u[4], *cpu_render.STRIPES_DUTY),
                                         style["hatch_duty"])}
        label = jnp.where(empty, NO_SHAPE, label).astype(jnp.int32)
    image, mask = render(k[3], geometry, style, size, bank, effects and not defer_effects)
    drawn = {"image": image, "mask": mask * ~empty, "label": label}
    if effects and defer_effects:
        drawn.update(blur_sigma=style["blur_sigma"], noise_sigma=style["noise_sigma"])
    return drawn
