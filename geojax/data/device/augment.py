"""Training augmentation in JAX, on the accelerator: small pure ops composed from a spec string.

A spec is a '|'-separated list of ops in the style of big_vision's preprocessing strings:

    "flip_lr|rot90|affine(scale=(0.8, 1.0), p=0.5)|brightness_contrast(0.25, 0.3, p=0.5)|noise"

Each op works on ONE sample, a dict {'image': float32 [S, S, 3] in 0..255, 'box': int32 (x0, y0,
x1, y1) of the shape, ends exclusive, 'label': int32}, and takes its own key. A sample may also
carry 'noise_bank', standard normals shared by the batch that `noise` reads windows of (see
`pixels.standard_normal`), and the renderer's effects left pending, 'blur_sigma' and
'noise_sigma' (`render.render_sample(defer_effects=True)`; both modules of
`geojax.data.device`): the first `blur` and `noise` ops take them up (Gaussian blurs compose,
sigma^2 add; independent noises, variances add), or `compose` applies them after the last op.
One blur per sample instead of two: on a GPU each is two passes over the batch. `compose` turns
the spec into `fn(key, sample) -> sample`, to be vmapped over a batch; on accelerators, as
albumentations on uint8 images, every pixel op's result is rounded to whole levels (see
`compose`). Labels never change: only transforms that keep every class true are offered as
defaults, as in the CPU path (`geojax.data.augment`): flips and 90-degree turns, and uniform
scaling about the centre that never enlarges, keep a square a square and a circle a circle, and
keep the shape whole inside the frame. `affine` can also rotate, translate and shear, but shear
turns squares into rhombi and rectangles into parallelograms, and anisotropic scaling (not
offered) turns squares into rectangles and circles into ellipses; rotation and translation can
push corners out of the frame. The renderer already draws every rotation and position, so the
defaults use none of them. The default spec (`geojax.data.pipeline.DEFAULT_DEVICE_OPS`) is the
device counterpart of the CPU's `train_augmentation`, less JPEG, motion blur and downscaling (no
cheap device form).

Geometric ops only compose a 3x3 output-to-input coordinate map; the image is resampled
(bilinear, border replicated) once, before the first pixel op or at the end, so a chain of
flips, turns and affines costs one warp, and the box moves with the same map
(`transform_box`: exact for flips, turns, uniform scaling and translation). Boxes are not
re-measured from a resampled mask: a 1 px outline shrunk by 0.8 loses pixels below half
coverage, and its measured box would shrink with them.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

import jax
import jax.numpy as jnp

from geojax.data.device.pixels import (
    bilinear_sample,
    gaussian_blur,
    hsv_to_rgb,
    luma,
    quantise,
    rgb_to_hsv,
    standard_normal,
)

Sample = dict[str, jax.Array]
Op = Callable[[jax.Array, Sample], Sample]


def _chance(key: jax.Array, p: float) -> jax.Array:
    return jax.random.uniform(key) < p


def _uniform(key: jax.Array, low: float, high: float) -> jax.Array:
    return jax.random.uniform(key, minval=low, maxval=high)


def _range(value: float | tuple[float, float], name: str) -> tuple[float, float]:
    """A (low, high) range from a pair or a symmetric limit."""
    if isinstance(value, int | float):
        return (-float(value), float(value))
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"{name} must be a limit or a (low, high) pair, got {value!r}")
    return (float(value[0]), float(value[1]))


# ---------------------------------------------------------------------------------------------
# Geometric ops: compose the output-to-input coordinate map
# ---------------------------------------------------------------------------------------------


def invert_affine(m: jax.Array) -> jax.Array:
    """Inverse of a 3x3 affine map (last row 0, 0, 1), in closed form (no batched LU)."""
    a, b, c, d = m[0, 0], m[0, 1], m[1, 0], m[1, 1]
    linear = jnp.stack([jnp.stack([d, -b]), jnp.stack([-c, a])]) / (a * d - b * c)
    offset = -linear @ m[:2, 2]
    return jnp.concatenate([jnp.concatenate([linear, offset[:, None]], 1),
                            jnp.array([[0.0, 0.0, 1.0]])])


def _then(sample: Sample, out_to_in: jax.Array) -> Sample:
    return {**sample, "matrix": sample["matrix"] @ out_to_in}


def _square_symmetry(size: int, flip: jax.Array, turns: jax.Array) -> jax.Array:
    """Output-to-input map of a flip and `turns` quarter turns (exact integer entries)."""
    n = size - 1.0
    flip_m = jnp.where(flip, jnp.array([[-1.0, 0, n], [0, 1, 0], [0, 0, 1]]), jnp.eye(3))
    turn = jnp.array([[0.0, 1, 0], [-1, 0, n], [0, 0, 1]])  # (x, y) -> (y, n - x)
    turn_m = jnp.eye(3)
    for k in range(1, 4):
        turn_m = jnp.where(turns == k, jnp.linalg.matrix_power(turn, k), turn_m)
    return flip_m @ turn_m


def flip_lr(p: float = 0.5) -> Op:
    """Mirror left-right with probability p."""
    def op(key, sample):
        size = sample["image"].shape[0]
        return _then(sample, _square_symmetry(size, _chance(key, p), jnp.int32(0)))
    return op


def flip_ud(p: float = 0.5) -> Op:
    """Mirror top-bottom with probability p."""
    def op(key, sample):
        size = sample["image"].shape[0]
        flip = _chance(key, p)  # a left-right mirror and a half turn
        return _then(sample, _square_symmetry(size, flip, jnp.where(flip, 2, 0)))
    return op


def rot90() -> Op:
    """Turn by 0, 90, 180 or 270 degrees, each equally likely."""
    def op(key, sample):
        size = sample["image"].shape[0]
        turns = jax.random.randint(key, (), 0, 4)
        return _then(sample, _square_symmetry(size, jnp.bool_(False), turns))
    return op


def affine(scale: float | tuple[float, float] = (1.0, 1.0), rotate: float = 0.0,
           translate: float = 0.0, shear: float = 0.0, p: float = 1.0) -> Op:
    """Uniform scale (factor range), rotation and shear (degrees, symmetric limits) about the
    centre, translation (fraction of the size, symmetric), with probability p."""
    lo, hi = (scale, scale) if isinstance(scale, int | float) else _range(scale, "scale")
    if lo <= 0:
        raise ValueError(f"affine scale must be > 0, got {scale!r}")

    def op(key, sample):
        size = sample["image"].shape[0]
        k = jax.random.split(key, 6)
        s = _uniform(k[0], lo, hi)
        theta = jnp.deg2rad(_uniform(k[1], -rotate, rotate))
        sh = jnp.tan(jnp.deg2rad(_uniform(k[2], -shear, shear)))
        t = jax.random.uniform(k[3], (2,), minval=-translate, maxval=translate) * size
        c, si = jnp.cos(theta), jnp.sin(theta)
        linear = s * jnp.array([[c, -si], [si, c]]) @ jnp.array([[1.0, sh], [0.0, 1.0]])
        centre = jnp.full((2,), (size - 1) / 2.0)
        # out = centre + linear (in - centre) + t
        forward = jnp.eye(3).at[:2, :2].set(linear).at[:2, 2].set(centre + t - linear @ centre)
        return _then(sample, jnp.where(_chance(k[4], p), invert_affine(forward), jnp.eye(3)))
    return op


def transform_box(box: jax.Array, out_to_in: jax.Array) -> jax.Array:
    """The box (x0, y0, x1, y1), ends exclusive, of what `box` covers after the geometry whose
    output-to-input map is `out_to_in`: its corners mapped forward, rounded to whole pixels,
    clipped to the frame by the caller. Exact for flips, turns, scaling and translation (the
    default ops); for rotation and shear it encloses the turned box."""
    forward = invert_affine(out_to_in)
    # Pixel i spans [i - 0.5, i + 0.5]: map the covered extent, not the indices.
    x0, y0, x1, y1 = box.astype(jnp.float32) - 0.5
    corners = jnp.stack([jnp.stack([x0, y0, 1.0]), jnp.stack([x1, y0, 1.0]),
                         jnp.stack([x0, y1, 1.0]), jnp.stack([x1, y1, 1.0])])
    mapped = corners @ forward.T
    low, high = mapped[:, :2].min(0), mapped[:, :2].max(0)
    new = jnp.round(jnp.concatenate([low, high]) + 0.5).astype(jnp.int32)
    return jnp.where((box[2] > box[0]) & (box[3] > box[1]), new, box)


def warp(sample: Sample) -> Sample:
    """Resample the image through the composed map (bilinear, borders replicated) and move
    the box with it."""
    m = sample.pop("matrix")
    size = sample["image"].shape[0]
    shape = sample["image"].shape
    xs = jax.lax.broadcasted_iota(jnp.float32, shape, 1)
    ys = jax.lax.broadcasted_iota(jnp.float32, shape, 0)
    x_in = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    y_in = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    box = jnp.clip(transform_box(sample["box"], m), 0, size)
    return {**sample, "image": bilinear_sample(sample["image"], x_in, y_in), "box": box}


# ---------------------------------------------------------------------------------------------
# Pixel ops
# ---------------------------------------------------------------------------------------------


def _maybe(key: jax.Array, p: float, new: jax.Array, old: jax.Array) -> jax.Array:
    return jnp.where(_chance(key, p), new, old)


def brightness_contrast(brightness: float = 0.2, contrast: float = 0.2, p: float = 0.5) -> Op:
    """image * (1 + c) + b * 255, c and b uniform within the limits (albumentations' rule)."""
    b_lo, b_hi = _range(brightness, "brightness")
    c_lo, c_hi = _range(contrast, "contrast")

    def op(key, sample):
        k = jax.random.split(key, 3)
        image = sample["image"]
        new = image * (1 + _uniform(k[0], c_lo, c_hi)) + _uniform(k[1], b_lo, b_hi) * 255.0
        return {**sample, "image": _maybe(k[2], p, jnp.clip(new, 0, 255), image)}
    return op


def hsv(hue: float = 20, saturation: float = 30, value: float = 20, p: float = 0.5) -> Op:
    """Shift hue (OpenCV units, 180 = a full turn), saturation and value (0..255 units)."""
    h_lo, h_hi = _range(hue, "hue")
    s_lo, s_hi = _range(saturation, "saturation")
    v_lo, v_hi = _range(value, "value")

    def op(key, sample):
        k = jax.random.split(key, 4)
        image = sample["image"]
        h, s, v = rgb_to_hsv(image)
        new = hsv_to_rgb(h + _uniform(k[0], h_lo, h_hi) / 180.0,
                         jnp.clip(s + _uniform(k[1], s_lo, s_hi) / 255.0, 0, 1),
                         jnp.clip(v + _uniform(k[2], v_lo, v_hi), 0, 255))
        return {**sample, "image": _maybe(k[3], p, new, image)}
    return op


def gray(p: float = 0.1) -> Op:
    """Replace colour by its luma."""
    def op(key, sample):
        image = sample["image"]
        new = jnp.broadcast_to(luma(image)[..., None], image.shape)
        return {**sample, "image": _maybe(key, p, new, image)}
    return op


def invert(p: float = 0.1) -> Op:
    """255 - image."""
    def op(key, sample):
        image = sample["image"]
        return {**sample, "image": _maybe(key, p, 255.0 - image, image)}
    return op


def _blurred(sample: Sample, sigma: jax.Array) -> Sample:
    """The image blurred by `sigma` (px, 0: unchanged), composed with the blur the renderer
    left pending (Gaussians compose: sigma^2 add)."""
    sample = dict(sample)
    sigma = jnp.sqrt(sigma**2 + sample.pop("blur_sigma", 0.0) ** 2)
    return {**sample, "image": gaussian_blur(sample["image"], sigma)}


def _noisy(key: jax.Array, sample: Sample, sigma: jax.Array) -> Sample:
    """The image plus Gaussian noise of std `sigma` (0..255 units), composed with the noise the
    renderer left pending (independent noises: variances add)."""
    sample = dict(sample)
    sigma = jnp.sqrt(sigma**2 + sample.pop("noise_sigma", 0.0) ** 2)
    noise = standard_normal(key, sample["image"].shape, sample.get("noise_bank"))
    return {**sample, "image": jnp.clip(sample["image"] + sigma * noise, 0, 255)}


def blur(sigma: float | tuple[float, float] = (0.3, 1.5), p: float = 0.2) -> Op:
    """Gaussian blur, sigma (px) uniform in the range."""
    lo, hi = (sigma, sigma) if isinstance(sigma, int | float) else _range(sigma, "sigma")
    if lo <= 0:
        raise ValueError(f"blur sigma must be > 0, got {sigma!r}")

    def op(key, sample):
        k = jax.random.split(key)
        return _blurred(sample, jnp.where(_chance(k[1], p), _uniform(k[0], lo, hi), 0.0))
    return op


def noise(std: float | tuple[float, float] = (0.02, 0.08), p: float = 0.2) -> Op:
    """Additive Gaussian noise, std a fraction of 255 uniform in the range."""
    lo, hi = (std, std) if isinstance(std, int | float) else _range(std, "std")

    def op(key, sample):
        k = jax.random.split(key, 3)
        return _noisy(k[2], sample, _uniform(k[0], lo, hi) * 255.0 * _chance(k[1], p))
    return op


GEOMETRIC_OPS: dict[str, Callable[..., Op]] = {
    "flip_lr": flip_lr, "flip_ud": flip_ud, "rot90": rot90, "affine": affine,
}
PIXEL_OPS: dict[str, Callable[..., Op]] = {
    "brightness_contrast": brightness_contrast, "hsv": hsv, "gray": gray, "invert": invert,
    "blur": blur, "noise": noise,
}
OPS = {**GEOMETRIC_OPS, **PIXEL_OPS}


# ---------------------------------------------------------------------------------------------
# Spec strings -> one function
# ---------------------------------------------------------------------------------------------


def parse_ops(spec: str) -> list[tuple[str, tuple, dict]]:
    """'name(args)|name|...' -> [(name, args, kwargs)]; arguments are Python literals."""
    parsed = []
    for part in (p.strip() for p in spec.split("|")):
        if not part:
            continue
        try:
            node = ast.parse(part, mode="eval").body
            if isinstance(node, ast.Name):
                name, args, kwargs = node.id, (), {}
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                name = node.func.id
                args = tuple(ast.literal_eval(a) for a in node.args)
                kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
            else:
                raise ValueError("not an op call")
        except (SyntaxError, ValueError) as e:
            raise ValueError(f"data.device_ops: cannot read op {part!r} ({e}); expected "
                             "name or name(literal args), e.g. 'affine(scale=(0.8, 1.0))'") from e
        if name not in OPS:
            raise ValueError(f"data.device_ops: unknown op {name!r}; valid: {', '.join(OPS)}")
        parsed.append((name, args, kwargs))
    return parsed


def _whole_levels(image: jax.Array) -> jax.Array:
    return quantise(image).astype(jnp.float32)


def compose(spec: str, whole_levels: bool | None = None) -> Callable[[jax.Array, Sample], Sample]:
    """One `fn(key, sample) -> sample` applying the spec's ops in order (see module doc).

    `whole_levels`: round the image to whole levels after every pixel op, as albumentations
    does on uint8 images. None (the default): on accelerators, not on the CPU. On a GPU the
    image then crosses kernels as uint8, a quarter of float32's memory traffic
    (scripts/gpu_aot_report.py: predicted (b)/(a) 0.928 -> 0.942); XLA:CPU runs the whole
    augmentation 6x slower for the rounding, so there it keeps floats (the batches of the two
    differ by the rounding, under a level per op).

    Fails now, naming the op, on an unknown op or bad arguments."""
    def between_ops(image: jax.Array) -> jax.Array:
        if whole_levels is None:
            return jax.lax.platform_dependent(image, cpu=lambda x: x, default=_whole_levels)
        return _whole_levels(image) if whole_levels else image

    steps: list[tuple[bool, Op]] = []
    for name, args, kwargs in parse_ops(spec):
        try:
            steps.append((name in GEOMETRIC_OPS, OPS[name](*args, **kwargs)))
        except (TypeError, ValueError) as e:
            raise ValueError(f"data.device_ops: bad arguments for {name}: {e}") from e

    def apply(key: jax.Array, sample: Sample) -> Sample:
        pending = False
        for i, (geometric, op) in enumerate(steps):
            if geometric and not pending:
                sample = {**sample, "matrix": jnp.eye(3)}
                pending = True
            elif not geometric and pending:
                sample, pending = warp(sample), False
            sample = op(jax.random.fold_in(key, i), sample)
            if not geometric:
                sample = {**sample, "image": between_ops(sample["image"])}
        if pending:
            sample = warp(sample)
        # Effects the renderer left pending that no blur or noise op took up.
        if "blur_sigma" in sample:
            sample = _blurred(sample, jnp.float32(0.0))
        if "noise_sigma" in sample:
            sample = _noisy(jax.random.fold_in(key, len(steps)), sample, jnp.float32(0.0))
        return sample

    return apply
