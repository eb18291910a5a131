"""A 2-D convolution whose weight gradient is a matrix product, for training speed on XLA:CPU.

One job: make `jax.grad` through NHWC convolutions fast on CPU. jaxlib 0.10's XLA:CPU hands
convolutions to YNNPACK, which runs the weight gradient (a convolution with batch and features
swapped, whose "kernel" is the whole output image) 4-9x slower than the forward pass: on the
2-core Xeon here, 3x3 64->64 on 64x64, batch 32: forward ~70-100 GFLOP/s, weight gradient ~20;
1x1 projections' weight gradients 3-6. The input gradient runs at forward speed. The compiler
option xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT (XLA_FLAGS or
`jax.jit(..., compiler_options=...)`) sends convolutions back to XLA's Eigen code, whose 3x3
weight gradient is 3-5x faster, but it also turns off YNNPACK's fused convolution + elementwise
kernels, and a whole train step gets slower (BENCHMARKS.md). So the forward pass and the input gradient
stay `lax.conv_general_dilated`, and only the weight gradient is replaced (`jax.custom_vjp`), by
one GEMM per chunk of the batch:

* "outer" (most layers): the kh row taps on the input side and the kw column taps on the
  output-gradient side, X = [pixels, kh*Cin], G = [pixels, kw*Cout]; X^T G holds every
  (row tap, column tap) pair, i.e. the whole [kh, kw, Cin, Cout] gradient. Each operand is
  only kh (kw) times its source, not kh*kw times as in im2col, and the GEMM is squarish. A
  column stride s splits the column taps into s phases, one GEMM each.
* "im2col" (kh*Cin < 64, e.g. an RGB stem, and 1x1 kernels): patches [pixels, kh*kw*Cin]
  against the output gradient [pixels, Cout].

Chunks of ~4096 output pixels (at least 2 images) keep the expanded operands in cache. Output
images under 100 pixels (e.g. 8x8) keep lax's weight gradient, which is fast there.

Measured by scripts/bench_conv.py (table in BENCHMARKS.md, "Convolution weight gradient on
XLA:CPU"): weight gradients 3-4x faster for 3x3 layers, 6-8x for 1x1 projections, 1.3x for an
RGB 7x7 stem; a small ResNet's Adam train step 1.7x faster at 64x64 and at 128x128. Other
backends (GPU, TPU) get plain `lax.conv_general_dilated`.

`Conv` is a drop-in for `flax.linen.Conv` (same fields, parameter names 'kernel' HWIO and 'bias',
and initial values, so checkpoints are interchangeable); what the fast path does not cover
(not 2-D, dilations, feature groups, negative padding) runs `lax.conv_general_dilated`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from flax.linen.linear import canonicalize_padding, default_kernel_init
from flax.typing import Dtype, Initializer, PaddingLike, PrecisionLike
from jax import lax

__all__ = ["Conv", "conv2d"]

Pads2D = tuple[tuple[int, int], tuple[int, int]]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
# Output pixels per weight-gradient chunk (but >= 2 images): big enough for an efficient GEMM,
# small enough that the expanded operands (a few MB) stay in cache.
_CHUNK_PIXELS = 4096
# Below this many input channels per row tap the "outer" GEMM is too thin: use im2col.
_MIN_OUTER_WIDTH = 64
# XLA's own weight gradient is fast when its swapped-role "kernel" (the output image) is small:
# below this many output pixels per image (8x8: lax 1.3x faster; 10x10: GEMM 1.2x, 16x16: 2x)
# keep it. 1x1 kernels always take the GEMM.
_MIN_GEMM_PIXELS = 100


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    strides: int | Sequence[int] = 1,
    padding: str | int | Sequence[int | tuple[int, int]] = "SAME",
    precision: PrecisionLike = None,
) -> jax.Array:
    """NHWC x HWIO -> NHWC convolution, `lax.conv_general_dilated`'s result and gradients.

    `padding`: 'SAME', 'VALID' (or another `lax` padding name), an int, or one int or
    (low, high) pair per spatial dimension, each >= 0. On CPU the weight gradient is computed
    as GEMMs (see the module docstring); the forward pass and input gradient are `lax`'s.
    """
    if x.ndim != 4 or kernel.ndim != 4:
        raise ValueError(f"conv2d takes NHWC x HWIO, got shapes {x.shape} and {kernel.shape}")
    if x.shape[-1] != kernel.shape[2]:
        raise ValueError(f"input has {x.shape[-1]} channels, kernel expects {kernel.shape[2]}")
    stride_h, stride_w = (strides, strides) if isinstance(strides, int) else strides
    strides = (stride_h, stride_w)
    if isinstance(padding, str):
        pairs = lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2], strides, padding)
    else:  # typed as maybe a str, which it returns for a str padding only
        pairs = cast(list[tuple[int, int]], canonicalize_padding(padding, 2))
    pad_h, pad_w = ((int(lo), int(hi)) for lo, hi in pairs)
    pads = (pad_h, pad_w)
    if any(p < 0 for pair in pads for p in pair):
        raise ValueError(f"conv2d needs non-negative padding, got {pads}")
    if jax.default_backend() != "cpu":  # cuDNN & co. have fast weight gradients of their own
        return _lax_conv(x, kernel, strides, pads, precision)
    # Inside shard_map a replicated kernel meets a per-device batch. lax.conv marks the kernel
    # device-varying itself, and JAX transposes that mark into a sum of the kernel gradient over
    # devices; a custom_vjp must be handed operands that already agree.
    axes = _varying_axes(x) | _varying_axes(kernel)
    x, kernel = (_make_varying(v, axes) for v in (x, kernel))
    kh, kw = kernel.shape[:2]
    ho, wo = (_out_size(x.shape[1 + a], kernel.shape[a], strides[a], pads[a]) for a in (0, 1))
    if ho < kh or wo < kw:
        return _patches_conv(x, kernel, strides, pads, precision)
    return _conv2d(x, kernel, strides, pads, precision)


def _out_size(size: int, ksize: int, stride: int, pad: tuple[int, int]) -> int:
    return (size + pad[0] + pad[1] - ksize) // stride + 1


def _patches_conv(
    x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads2D, precision: Any
) -> jax.Array:
    """The convolution as one matrix product of the kh*kw shifted inputs with the kernel.

    For output maps smaller than the kernel (an SE-ResNet's last stage at 64 px: 3x3 on 2x2),
    where XLA:CPU's convolution is pathologically slow: 3x3 512->512 on a 2x2 map, batch 32,
    293 ms forward vs 9.7 ms on a 3x3 map; as patches x weights 6.7 ms (BENCHMARKS.md). The
    patches are small exactly there; autodiff gives both gradients (slices and a dot).
    """
    kh, kw, cin, cout = kernel.shape
    n = x.shape[0]
    ho, wo = (_out_size(x.shape[1 + a], kernel.shape[a], strides[a], pads[a]) for a in (0, 1))
    x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    sh, sw = strides
    taps = [
        lax.slice(x, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, cin),
                  (1, sh, sw, 1))
        for i in range(kh) for j in range(kw)
    ]
    patches = jnp.concatenate(taps, axis=-1)  # [n, ho, wo, kh*kw*cin], tap-major like HWIO
    return jnp.dot(patches, kernel.reshape(kh * kw * cin, cout), precision=precision)


def _varying_axes(v: jax.Array) -> frozenset[str]:
    """The shard_map mesh axes along which `v` differs between devices (empty outside)."""
    manual = getattr(jax.typeof(v), "manual_axis_type", None)
    return frozenset(manual.varying) if manual is not None else frozenset()


def _make_varying(v: jax.Array, axes: frozenset[str]) -> jax.Array:
    missing = axes - _varying_axes(v)
    return lax.pcast(v, tuple(sorted(missing)), to="varying") if missing else v


def _lax_conv(
    x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads2D, precision: Any
) -> jax.Array:
    return lax.conv_general_dilated(
        x, kernel, strides, pads, dimension_numbers=_DIMENSION_NUMBERS, precision=precision
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv2d(
    x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads2D, precision: Any
) -> jax.Array:
    return _lax_conv(x, kernel, strides, pads, precision)


def _conv2d_fwd(
    x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads2D, precision: Any
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return _lax_conv(x, kernel, strides, pads, precision), (x, kernel)


def _conv2d_bwd(
    strides: tuple[int, int],
    pads: Pads2D,
    precision: Any,
    residuals: tuple[jax.Array, jax.Array],
    g: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    x, kernel = residuals

    def conv_of_x(x_: jax.Array) -> jax.Array:
        return _lax_conv(x_, kernel, strides, pads, precision)

    def conv_of_kernel(k_: jax.Array) -> jax.Array:
        return _lax_conv(x, k_, strides, pads, precision)

    # The input gradient is lax's own transpose rule (as fast as the forward pass on CPU).
    (dx,) = jax.linear_transpose(conv_of_x, x)(g)
    kh, kw = kernel.shape[:2]
    if kh * kw > 1 and g.shape[1] * g.shape[2] < _MIN_GEMM_PIXELS:
        (dk,) = jax.linear_transpose(conv_of_kernel, kernel)(g)
        return dx, dk
    dk = _kernel_grad(x, g, (kh, kw), strides, pads, precision)
    return dx, dk.astype(kernel.dtype)


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def _kernel_grad(
    x: jax.Array,
    g: jax.Array,
    ksize: tuple[int, int],
    strides: tuple[int, int],
    pads: Pads2D,
    precision: Any,
    formulation: str | None = None,
    chunk_pixels: int = _CHUNK_PIXELS,
) -> jax.Array:
    """d(conv)/d(kernel) [kh, kw, Cin, Cout] in float32 (or wider): sum over pixels of patch^T g.

    `formulation`: 'outer' or 'im2col' (see the module docstring); None picks by shape.
    """
    n, h, w, cin = x.shape
    _, ho, wo, cout = g.shape
    kh, kw = ksize
    sh, sw = strides
    # Pad (or crop: VALID may leave rows unread) x to exactly the rows/columns the kernel reads.
    extent = ((pads[0][0], (ho - 1) * sh + kh - h - pads[0][0]),
              (pads[1][0], (wo - 1) * sw + kw - w - pads[1][0]))  # fmt: skip
    if formulation is None:
        formulation = "outer" if kh * kw > 1 and kh * cin >= _MIN_OUTER_WIDTH else "im2col"
    chunk_body = {"outer": _outer_chunk, "im2col": _im2col_chunk}[formulation]

    # XLA:CPU multiplies bfloat16/float16 far slower than float32: compute in float32 (or wider).
    dtype = jnp.promote_types(x.dtype, jnp.float32)

    def body(xc: jax.Array, gc: jax.Array) -> jax.Array:
        xc, gc = xc.astype(dtype), gc.astype(dtype)
        xp = lax.pad(
            xc, jnp.zeros((), dtype), ((0, 0, 0), (*extent[0], 0), (*extent[1], 0), (0, 0, 0))
        )
        return chunk_body(xp, gc, ksize, strides, precision)

    # At least two images per chunk: XLA:CPU splits the operand-building loops over the leading
    # (image) axis, one part per core.
    per_chunk = _largest_divisor_at_most(n, max(2, chunk_pixels // (ho * wo)))
    if kh * kw == 1 or per_chunk == n:  # 1x1: nothing is expanded, one GEMM is best
        return body(x, g)
    chunks = n // per_chunk

    def step(acc: jax.Array, xg: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, None]:
        return acc + body(*xg), None

    dk, _ = lax.scan(
        step,
        _make_varying(jnp.zeros((kh, kw, cin, cout), dtype), _varying_axes(x) | _varying_axes(g)),
        (x.reshape(chunks, per_chunk, h, w, cin), g.reshape(chunks, per_chunk, ho, wo, cout)),
    )
    return dk


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def _tn_matmul(a: jax.Array, b: jax.Array, precision: Any) -> jax.Array:
    """a^T b for a [K, M], b [K, N]."""
    return lax.dot_general(a, b, (((0,), (0,)), ((), ())), precision=precision)


def _taps(a: jax.Array, axis: int, count: int, starts: range, stride: int) -> jax.Array:
    """Stacks `count` entries, `stride` apart, from each start along `axis` (1: rows, 2: columns)
    as a new axis 3: [n, h, w, ...] -> [n, h', w', len(starts), ...]."""
    taps = [lax.slice_in_dim(a, s, s + (count - 1) * stride + 1, stride, axis) for s in starts]
    return jnp.stack(taps, axis=3)


def _im2col_chunk(
    xp: jax.Array,
    g: jax.Array,
    ksize: tuple[int, int],
    strides: tuple[int, int],
    precision: Any,
) -> jax.Array:
    """patches [pixels, kh*kw*Cin]^T @ g [pixels, Cout].

    The patches are built in two passes, the kw column taps of every row and then the kh row
    taps of that: kh + kw slices instead of kh*kw, which for a 7x7 stem runs 2.5x faster and
    compiles 3x faster.
    """
    kh, kw = ksize
    sh, sw = strides
    _, ho, wo, cout = g.shape
    cin = xp.shape[-1]
    cols = _taps(xp, 2, wo, range(kw), sw)  # [n, rows, wo, kw, cin]
    patches = _taps(cols, 1, ho, range(kh), sh)  # [n, ho, wo, kh, kw, cin]
    dk = _tn_matmul(patches.reshape(-1, kh * kw * cin), g.reshape(-1, cout), precision)
    return dk.reshape(kh, kw, cin, cout)


def _outer_chunk(
    xp: jax.Array,
    g: jax.Array,
    ksize: tuple[int, int],
    strides: tuple[int, int],
    precision: Any,
) -> jax.Array:
    """Row taps on the input side, column taps on the gradient side, one GEMM per column phase.

    Kernel column j = p + sw*q (phase p < sw). Over the phase-p input columns xp[..., p::sw], the
    tap (i, j) pairs input column c with gradient column c - q, so shifting g right by q and
    stacking the shifts gives G_p [pixels, nq*Cout]; X_p stacks the kh row taps. Then
    dk[i, p + sw*q] = (X_p^T G_p)[i, :, q, :].
    """
    kh, kw = ksize
    sh, sw = strides
    _, ho, wo, cout = g.shape
    cin = xp.shape[-1]
    columns: dict[int, jax.Array] = {}
    for p in range(min(sw, kw)):
        nq = len(range(p, kw, sw))
        phase = lax.slice_in_dim(xp, p, p + (wo + nq - 2) * sw + 1, sw, axis=2)
        x_p = _taps(phase, 1, ho, range(kh), sh)  # [n, ho, wo + nq - 1, kh, cin]
        shifted = [jnp.pad(g, ((0, 0), (0, 0), (q, nq - 1 - q), (0, 0))) for q in range(nq)]
        g_p = jnp.stack(shifted, axis=3)  # [n, ho, wo + nq - 1, nq, cout]
        dk = _tn_matmul(x_p.reshape(-1, kh * cin), g_p.reshape(-1, nq * cout), precision)
        dk = dk.reshape(kh, cin, nq, cout)
        for q in range(nq):
            columns[p + sw * q] = dk[:, :, q]
    return jnp.stack([columns[j] for j in range(kw)], axis=1)


class Conv(nn.Module):
    """`flax.linen.Conv` with the fast CPU weight gradient of `conv2d` for 2-D convolutions.

    Same fields, defaults, parameters ('kernel' [kh, kw, Cin, Cout], 'bias' [Cout]) and
    initial values as `flax.linen.Conv`. Takes [*batch, H, W, C]. 2-D convolutions without
    dilation or feature groups use `conv2d`; everything else `lax.conv_general_dilated`.
    Padding: 'SAME', 'VALID', 'CIRCULAR', 'REFLECT', ints or (low, high) pairs ('CAUSAL', for
    1-D convolutions in nn.Conv, is not supported).
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] | None = 1
    padding: PaddingLike = "SAME"
    input_dilation: int | Sequence[int] | None = 1
    kernel_dilation: int | Sequence[int] | None = 1
    feature_group_count: int = 1
    use_bias: bool = True
    mask: jax.Array | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = default_kernel_init
    bias_init: Initializer = nn.initializers.zeros_init()
    # linen's promote_dtype takes the arrays as *args (flax.typing.PromoteDtypeFn is nnx's)
    promote_dtype: Callable[..., list[Any]] = promote_dtype

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Convolves `inputs` [*batch, *spatial, C] (like nn.Conv, an int kernel_size is 1-D)."""
        if isinstance(self.kernel_size, int):
            kernel_size: tuple[int, ...] = (self.kernel_size,)
        else:
            kernel_size = tuple(self.kernel_size)
        rank = len(kernel_size)

        def per_dim(v: int | Sequence[int] | None) -> tuple[int, ...]:
            v = 1 if v is None else v
            return (v,) * rank if isinstance(v, int) else tuple(v)

        strides = per_dim(self.strides)
        input_dilation = per_dim(self.input_dilation)
        kernel_dilation = per_dim(self.kernel_dilation)

        batch_shape = inputs.shape[: inputs.ndim - rank - 1]
        inputs = inputs.reshape((-1, *inputs.shape[len(batch_shape) :]))

        padding = canonicalize_padding(self.padding, rank)
        if padding in ("CIRCULAR", "REFLECT"):
            dilated = [(k - 1) * d + 1 for k, d in zip(kernel_size, kernel_dilation, strict=True)]
            pads = [(0, 0), *[((k - 1) // 2, k // 2) for k in dilated], (0, 0)]
            inputs = jnp.pad(inputs, pads, mode={"CIRCULAR": "wrap", "REFLECT": "reflect"}[padding])
            padding = "VALID"

        in_features = inputs.shape[-1]
        if in_features % self.feature_group_count:
            raise ValueError(
                f"{in_features} input features not divisible by {self.feature_group_count} groups"
            )
        kernel_shape = (*kernel_size, in_features // self.feature_group_count, self.features)
        if self.mask is not None and self.mask.shape != kernel_shape:
            raise ValueError(f"mask shape {self.mask.shape} != kernel shape {kernel_shape}")
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        if self.mask is not None:
            kernel *= self.mask
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)

        fast = (
            rank == 2
            and self.feature_group_count == 1
            and input_dilation == kernel_dilation == (1, 1)
            and (isinstance(padding, str) or all(p >= 0 for pair in padding for p in pair))
        )
        if fast:
            y = conv2d(inputs, kernel, strides, padding, self.precision)
        else:
            spatial = "HWDXYZ"[:rank]
            y = lax.conv_general_dilated(
                inputs,
                kernel,
                strides,
                padding,
                lhs_dilation=input_dilation,
                rhs_dilation=kernel_dilation,
                dimension_numbers=(f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"),
                feature_group_count=self.feature_group_count,
                precision=self.precision,
            )
        if bias is not None:
            y += bias
        return y.reshape((*batch_shape, *y.shape[1:]))
