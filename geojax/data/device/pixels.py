"""Image primitives in JAX, per sample and with static shapes, shared by the device renderer's
effects (`geojax.data.device.render`) and the augmentation (`geojax.data.device.augment`):
colour spaces, bilinear sampling, quantising to uint8, separable Gaussian blur, noise read from
a bank of standard normals, and a mask's box."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import cast

import jax
import jax.numpy as jnp

LUMA = (0.299, 0.587, 0.114)
BLUR_RADIUS = 3  # taps each side: a 7-tap separable Gaussian (sigma up to ~1.5)


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
    windows of the same field (see `geojax.data.device.batches`)."""
    if bank is None:
        return jax.random.normal(key, shape)
    h, w = shape[:2]
    if bank.shape[0] < h or bank.shape[1] < w:
        raise ValueError(f"noise bank {bank.shape} is smaller than {shape}")
    last = jnp.array([bank.shape[0] - h, bank.shape[1] - w])
    # Offsets computed once per sample, not inside the per-pixel gather (see batches.sample_fn).
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
