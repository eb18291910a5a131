"""Training augmentation in JAX, on the accelerator: small pure ops composed from a spec string.

A spec is a '|'-separated list of ops in the style of big_vision's preprocessing strings:

    "flip_lr|rot90|affine(scale=(0.8, 1.0), p=0.5)|brightness_contrast(0.25, 0.3, p=0.5)|noise"

Each op works on ONE sample, a dict {'image': float32 [S, S, 3] in 0..255, 'box': int32
(x0, y0, x1, y1) of the shape, ends exclusive, 'label': int32}, and takes its own key. A
sample may also carry 'noise_bank', standard normals shared by the batch that `noise` reads
windows of (see `standard_normal`), and the renderer's effects left pending, 'blur_sigma' and
'noise_sigma' (`device_render.render_sample(defer_effects=True)`): the first `blur` and `noise`
ops take them up (Gaussian blurs compose, sigma^2 add; independent noises, variances add), or
`compose` applies them after the last op. One blur per sample instead of two: on a GPU each is
two passes over the batch. `compose` turns the spec into `fn(key, sample) -> sample`, to be
vmapped over a batch; on accelerators, as albumentations on uint8 images, every pixel op's
result is rounded to whole levels (see `compose`). Labels never change: only transforms
that keep every class true are offered as defaults, as in the CPU path (`geojax.data.augment`):
flips and 90-degree turns, and uniform scaling about the centre that never enlarges, keep a
square a square and a circle a circle, and keep the shape whole inside the frame. `affine` can
also rotate, translate and shear, but shear turns squares into rhombi and rectangles into
parallelograms, and anisotropic scaling (not offered) turns squares into rectangles and circles
into ellipses; rotation and translation can push corners out of the frame. The renderer already
draws every rotation and position, so the defaults use none of them. The default spec
(`geojax.data.pipeline.DEFAULT_DEVICE_OPS`) is the device counterpart of the CPU's
`train_augmentation`, less JPEG, motion blur and downscaling (no cheap device form).

Geometric ops only compose a 3x3 output-to-input coordinate map; the image is resampled
(bilinear, border replicated) once, before the first pixel op or at the end, so a chain of
flips, turns and affines costs one warp, and the box moves with the same map
(`transform_box`: exact for flips, turns, uniform scaling and translation). Boxes are not
re-measured from a resampled mask: a 1 px outline shrunk by 0.8 loses pixels below half
coverage, and its measured box would shrink with them.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable
from typing import cast

import jax
import jax.numpy as jnp

Sample = dict[str, jax.Array]
Op = Callable[[jax.Array, Sample], Sample]
LUMA = (0.299, 0.587, 0.114)
BLUR_RADIUS = 3  # taps each side: a 7-tap separable Gaussian (sigma up to ~1.5)



# ---------------------------------------------------------------------------------------------
# Image primitives (also used by the renderer's effects)
# ---------------------------------------------------------------------------------------------


def luma(rgb: jax.Array) -> jax.Array:
    """Luma of RGB values (any scale) over the last axis: a dot on the CPU, where it is the
    faster form; three products elsewhere (XLA:GPU made the dot a GEMM kernel of its own,
    reading the image as float32: scripts/gpu_aot_report.py, 63 us of 1.0 ms)."""
    return jax.lax.platform_dependent(
        rgb, cpu=lambda rgb: rgb @ jnp.asarray(LUMA, rgb.dtype),
        default=lambda rgb: rgb[..., 0] * LUMA[0] + rgb[..., 1] * LUMA[1] + rgb[..., 2] * LUMA[2])


def rgb_to_hsv(rgb: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Hue in [0, 1), saturation in [0, 1], value in the scale of `rgb` ([..., 3] input)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = jnp.max(rgb, axis=-1)
    c = v - jnp.min(rgb, axis=-1)
    safe_c = jnp.where(c > 0, c, 1.0)
    h = jnp.where(v == r, (g - b) / safe_c, jnp.where(v == g, 2.0 + (b - r) / safe_c,
                                                       4.0 + (r - g) / safe_c))
    h = jnp.where(c > 0, (h / 6.0) % 1.0, 0.0)
    s = jnp.where(v > 0, c / jnp.where(v > 0, v, 1.0), 0.0)
    return h, s, v


def hsv_to_rgb(h: jax.Array, s: jax.Array, v: jax.Array) -> jax.Array:
    """[..., 3] RGB in the scale of `v` from hue in [0, 1) (wraps), saturation in [0, 1]."""
    k = (jnp.stack([5.0, 3.0, 1.0], -1) + (h % 1.0)[..., None] * 6.0) % 6.0
    weight = jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)
    return v[..., None] * (1.0 - s[..., None] * weight)


def bilinear_sample(image: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """`image` [H, W, C] at float pixel coordinates x, y, one pair per output element ([h, w,
    C]: element (i, j, c) reads channel c at (y, x)), borders replicated; integer coordinates
    give the pixels exactly.

    Coordinates per element, not per pixel: a GPU then computes them inside the one kernel that
    gathers, where coordinates shared by a pixel's channels were written out and read back
    (scripts/gpu_aot_report.py)."""
    height, width = image.shape[:2]
    x = jnp.clip(x, 0.0, width - 1.0)
    y = jnp.clip(y, 0.0, height - 1.0)
    x0 = jnp.floor(x)
    y0 = jnp.floor(y)
    fx = x - x0
    fy = y - y0
    # Unsigned and promised in bounds (they are, clipped): no negative-index wrapping or
    # bounds masks around the gathers.
    x0 = x0.astype(jnp.uint32)
    y0 = y0.astype(jnp.uint32)
    x1 = jnp.minimum(x0 + 1, width - 1)
    y1 = jnp.minimum(y0 + 1, height - 1)
    c = jax.lax.broadcasted_iota(jnp.uint32, x.shape, x.ndim - 1)

    def at(row: jax.Array, col: jax.Array) -> jax.Array:
        return image.at[row, col, c].get(mode="promise_in_bounds")

    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return top * (1 - fy) + bottom * fy


def quantise(image: jax.Array) -> jax.Array:
    """uint8 pixels of a float image in 0..255, rounded half up as
    `geojax.data.render.finish_image`."""
    return jnp.clip(image + 0.5, 0, 255).astype(jnp.uint8)


def materialise(x: jax.Array) -> jax.Array:
    """`x`, computed once into memory before its consumers read it.

    A long elementwise chain with several consumers (fill and stroke, each colour channel,
    each blur tap) is otherwise fused into each of them and recomputed there: rendering at
    224 px ran 10x slower for it on XLA:CPU, whose compiler drops
    `lax.optimization_barrier` before fusion. A reduction cannot fuse into its consumers, so
    on the CPU adding zero times the sum makes XLA write `x` out once (finite `x` only).
    Elsewhere `x` as it is: XLA:GPU writes such values out by itself, and the sum was one
    more full read (scripts/gpu_aot_report.py: 11 fewer kernels, 0.15 GB less per batch)."""
    return jax.lax.platform_dependent(x, cpu=lambda x: x + 0.0 * x.sum(), default=lambda x: x)


def shifted(x: jax.Array, axis: int, offset: int) -> jax.Array:
    """`x` read `offset` pixels further along `axis`, edges replicated: out[i] = x[clip(i +
    offset)], as one small concatenation."""
    n = x.shape[axis]
    if offset == 0:
        return x
    if offset > 0:
        edge = lax_slice(x, axis, n - 1, 1)
        parts = [lax_slice(x, axis, offset, n - offset)] + [edge] * offset
    else:
        edge = lax_slice(x, axis, 0, 1)
        parts = [edge] * -offset + [lax_slice(x, axis, 0, n + offset)]
    return jnp.concatenate(parts, axis)


def _tap_sum(weights: jax.Array, tap: Callable[[int], jax.Array]) -> jax.Array:
    """sum_i weights[i] * tap(i) over the 2r + 1 weights."""
    return cast(jax.Array, sum(weights[i] * tap(i) for i in range(weights.shape[0])))


def taps_from_shifts(image: jax.Array, weights: jax.Array, axis: int) -> jax.Array:
    """sum_i weights[i] * image shifted by i - r along `axis` (2r + 1 weights, edges
    replicated), a small concatenation per tap: a GPU fuses them into the sum, one kernel."""
    r = (weights.shape[0] - 1) // 2
    return _tap_sum(weights, lambda i: shifted(image, axis, i - r))


def taps_from_padded(image: jax.Array, weights: jax.Array, axis: int) -> jax.Array:
    """The same sum read from one padded copy of `image`: twice as fast on XLA:CPU as the
    concatenations, but a GPU writes the copy out whole first (with the renderer's and the
    augmentation's blurs, 1.9 GB more traffic per 256-image batch at 224 px, by
    scripts/gpu_aot_report.py)."""
    r = (weights.shape[0] - 1) // 2
    pad = [(0, 0)] * image.ndim
    pad[axis] = (r, r)
    padded = jnp.pad(image, pad, mode="edge")
    return _tap_sum(weights, lambda i: lax_slice(padded, axis, i, image.shape[axis]))


def gaussian_blur(image: jax.Array, sigma: jax.Array) -> jax.Array:
    """Separable Gaussian blur of [H, W, C] with a traced `sigma` (px), edges replicated; at
    sigma 0 exactly the identity (the weights are one 1 and zeros), so a blur chosen per sample
    needs no select between blurred and unblurred images (one image read fewer)."""
    offsets = jnp.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=jnp.float32)
    weights = jnp.exp(-0.5 * (offsets / jnp.maximum(sigma, 1e-3)) ** 2)
    weights = weights / weights.sum()
    image = materialise(image)  # read by every tap
    for axis in (0, 1):
        image = jax.lax.platform_dependent(
            image, weights, cpu=functools.partial(taps_from_padded, axis=axis),
            default=functools.partial(taps_from_shifts, axis=axis))
    return image


def standard_normal(key: jax.Array, shape: tuple[int, ...], bank: jax.Array | None = None
                    ) -> jax.Array:
    """Standard normal values of `shape` ([H, W] or [H, W, C]) from `key`.

    Given a `bank` [N, M, C'] of standard normals shared by a batch (N >= H, M >= W, C' >= C),
    the values are a window of it at a random offset: one gather per value instead of a
    threefry hash and an inverse error function, which made per-pixel noise the costliest
    part of a rendered sample. Each value is still N(0, 1); samples of one batch see shifted
    windows of the same field (see `geojax.data.device`)."""
    if bank is None:
        return jax.random.normal(key, shape)
    h, w = shape[:2]
    if bank.shape[0] < h or bank.shape[1] < w:
        raise ValueError(f"noise bank {bank.shape} is smaller than {shape}")
    last = jnp.array([bank.shape[0] - h, bank.shape[1] - w])
    # Offsets computed once per sample, not inside the per-pixel gather (see device.sample_fn).
    row, col = jax.lax.optimization_barrier(jax.random.randint(key, (2,), 0, last + 1))
    window = jax.lax.dynamic_slice(bank, (row, col, 0), (h, w, bank.shape[2]))
    return window[..., :shape[2]] if len(shape) == 3 else window[..., 0]


def lax_slice(x: jax.Array, axis: int, start: int, size: int) -> jax.Array:
    return jax.lax.slice_in_dim(x, start, start + size, axis=axis)


def mask_box(mask: jax.Array) -> jax.Array:
    """(x0, y0, x1, y1) int32 of the True pixels of [H, W] `mask`, ends exclusive (as
    `geojax.data.render.mask_bbox`); all zeros when empty."""
    height, width = mask.shape
    cols = mask.any(axis=0)
    rows = mask.any(axis=1)
    box = jnp.stack([jnp.argmax(cols), jnp.argmax(rows),
                     width - jnp.argmax(cols[::-1]), height - jnp.argmax(rows[::-1])])
    return jnp.where(cols.any(), box, 0).astype(jnp.int32)


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
