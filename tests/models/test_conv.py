"""geojax.models.conv: forward pass and gradients equal lax's / flax.linen.Conv's."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import Mesh, PartitionSpec

from geojax.models.conv import Conv, _kernel_grad, conv2d

DN = ("NHWC", "HWIO", "NHWC")
EXPLICIT = ((2, 1), (0, 3))


def rand(rng: np.random.Generator, shape, dtype=jnp.float32) -> jax.Array:
    return jnp.asarray(rng.standard_normal(shape), dtype)


def assert_close(actual, expected, rtol: float = 2e-5) -> None:
    """Elementwise, relative to the largest |expected| (sums of many terms, any sign)."""
    expected = np.asarray(expected, np.float64)
    scale = float(np.max(np.abs(expected))) or 1.0
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=0, atol=rtol * scale)


def lax_conv(x, kernel, strides, padding):
    return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=DN)


def values_and_grads(conv, x, kernel, g):
    y, vjp = jax.vjp(conv, x, kernel)
    return (y, *vjp(g))


@pytest.mark.parametrize("padding", ["SAME", "VALID", EXPLICIT])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("ksize", [1, 3, 7])
def test_kernel_grad_formulations_match_lax(ksize, stride, padding):
    """Both GEMM formulations, chunked over the batch (3 images: chunks of 1), odd sizes."""
    rng = np.random.default_rng(ksize * 10 + stride)
    x, kernel = rand(rng, (3, 13, 11, 5)), rand(rng, (ksize, ksize, 5, 6))
    strides = (stride, stride)
    pads = padding
    if isinstance(padding, str):
        pads = tuple(lax.padtype_to_pads(x.shape[1:3], (ksize, ksize), strides, padding))

    @jax.jit
    def grads(x, kernel):
        y, vjp = jax.vjp(lambda k: lax_conv(x, k, strides, padding), kernel)
        g = jnp.cos(y)
        ours = [
            _kernel_grad(x, g, (ksize, ksize), strides, pads, None, formulation, chunk_pixels=1)
            for formulation in ("outer", "im2col")
        ]
        return ours, vjp(g)[0]

    ours, expected = grads(x, kernel)
    for actual in ours:
        assert_close(actual, expected)


@pytest.mark.parametrize(
    ("ksize", "stride", "padding", "side"),
    [
        (3, 1, "SAME", 13),  # 169 output pixels: the GEMM weight gradient
        (3, 2, "VALID", 27),  # 13x13
        (7, 2, EXPLICIT, 25),  # 3 input channels: im2col
        (1, 2, "SAME", 9),  # 1x1: always the GEMM
        (3, 1, EXPLICIT, 5),  # few output pixels: lax's weight gradient
        (3, 1, "SAME", 4),  # 4x2 output, narrower than the kernel: patches x weights
        (3, 2, "SAME", 4),  # 2x1 output, strided: patches x weights
    ],
)
def test_conv2d_matches_lax_under_jit(ksize, stride, padding, side):
    rng = np.random.default_rng(side)
    cin = 3 if ksize == 7 else 24
    x, kernel = rand(rng, (4, side, side - 2, cin)), rand(rng, (ksize, ksize, cin, 8))
    strides = (stride, stride)
    out = jax.eval_shape(functools.partial(lax_conv, strides=strides, padding=padding), x, kernel)
    g = rand(rng, out.shape)

    @jax.jit
    def both(x, kernel, g):
        ours = values_and_grads(lambda x, k: conv2d(x, k, stride, padding), x, kernel, g)
        theirs = values_and_grads(lambda x, k: lax_conv(x, k, strides, padding), x, kernel, g)
        return ours, theirs

    for actual, expected in zip(*both(x, kernel, g), strict=True):
        assert actual.shape == expected.shape and actual.dtype == expected.dtype
        assert_close(actual, expected)


def test_conv2d_bfloat16():
    rng = np.random.default_rng(1)
    x, kernel = rand(rng, (2, 16, 16, 8), jnp.bfloat16), rand(rng, (3, 3, 8, 8), jnp.bfloat16)
    g = rand(rng, (2, 16, 16, 8), jnp.bfloat16)

    @jax.jit
    def both(x, kernel, g):
        ours = values_and_grads(lambda x, k: conv2d(x, k), x, kernel, g)
        theirs = values_and_grads(lambda x, k: lax_conv(x, k, (1, 1), "SAME"), x, kernel, g)
        return ours, theirs

    for actual, expected in zip(*both(x, kernel, g), strict=True):
        assert actual.dtype == jnp.bfloat16
        assert_close(actual, expected, rtol=2e-2)


def test_conv2d_rejects_what_it_cannot_do():
    x, kernel = jnp.zeros((1, 8, 8, 4)), jnp.zeros((3, 3, 4, 4))
    with pytest.raises(ValueError, match="non-negative"):
        conv2d(x, kernel, padding=((-1, 0), (0, 0)))
    with pytest.raises(ValueError, match="channels"):
        conv2d(x, jnp.zeros((3, 3, 5, 4)))


class Net(nn.Module):
    """Stem, strided block and projection, the shapes of a ResNet at toy size."""

    conv: type[nn.Module]

    @nn.compact
    def __call__(self, x):
        x = nn.relu(self.conv(8, (7, 7), strides=2, name="stem")(x))
        y = nn.relu(self.conv(16, (3, 3), strides=(2, 2), use_bias=False, name="c1")(x))
        y = self.conv(16, (3, 3), padding=((1, 1), (1, 1)), name="c2")(y)
        return y + self.conv(16, (1, 1), strides=2, padding="VALID", name="proj")(x)


def random_params(theirs: nn.Module, ours: nn.Module, x: jax.Array):
    """nn.Conv's parameters (drawn with numpy: XLA:CPU takes seconds to compile jax.random),
    after checking that `ours` declares the same tree: names, shapes and dtypes."""
    shapes = jax.eval_shape(theirs.init, jax.random.key(0), x)
    assert jax.eval_shape(ours.init, jax.random.key(0), x) == shapes
    rng = np.random.default_rng(5)
    return jax.tree.map(lambda s: rand(rng, s.shape, s.dtype), shapes)


def grads_of(model: nn.Module, params, x: jax.Array):
    out, vjp = jax.vjp(model.apply, params, x)
    return out, vjp(jnp.cos(out))


def test_default_init_is_nn_convs():
    x = jnp.zeros((1, 8, 8, 3))
    ours, theirs = Conv(4, (3, 3)), nn.Conv(4, (3, 3))
    key = jax.random.key(0, impl="rbg")  # threefry takes XLA:CPU seconds to compile
    jax.tree.map(np.testing.assert_array_equal, ours.init(key, x), theirs.init(key, x))


def test_module_is_a_drop_in_for_nn_conv():
    """Same parameter tree; with nn.Conv's parameters, the same outputs and gradients."""
    x = rand(np.random.default_rng(2), (2, 49, 47, 3))  # c1, c2: 13x12 outputs, the GEMM path
    theirs, ours = Net(nn.Conv), Net(Conv)
    params = random_params(theirs, ours, x)
    both = jax.jit(lambda params, x: (grads_of(ours, params, x), grads_of(theirs, params, x)))
    jax.tree.map(assert_close, *both(params, x))


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        ({"feature_group_count": 2}, (2, 9, 9, 4)),
        ({"kernel_dilation": 2}, (2, 9, 9, 4)),
        ({"input_dilation": (2, 1), "padding": ((1, 1), (0, 2))}, (2, 9, 9, 4)),
        ({"padding": "CIRCULAR", "strides": 2}, (2, 9, 9, 4)),
        ({"padding": 2, "mask": jnp.tril(jnp.ones((3, 3, 4, 6)), k=-1)}, (2, 9, 9, 4)),
        ({"kernel_size": 3}, (2, 9, 4)),  # an int kernel size is 1-D, as in nn.Conv
        ({}, (9, 9, 4)),  # no batch axis
        ({}, (2, 3, 9, 9, 4)),  # two batch axes
        ({"dtype": jnp.bfloat16}, (2, 9, 9, 4)),
    ],
)
def test_module_other_cases_match_nn_conv(kwargs, shape):
    kwargs = {"features": 6, "kernel_size": (3, 3), **kwargs}
    x = rand(np.random.default_rng(3), shape)
    theirs, ours = nn.Conv(**kwargs), Conv(**kwargs)
    params = random_params(theirs, ours, x)
    both = jax.jit(lambda params, x: (grads_of(ours, params, x), grads_of(theirs, params, x)))
    rtol = 2e-2 if "dtype" in kwargs else 2e-5
    jax.tree.map(functools.partial(assert_close, rtol=rtol), *both(params, x))


@pytest.mark.parametrize("per_device, side", [(2, 16), (8, 32)])  # one GEMM; chunks in a scan
def test_shard_map_data_parallel_gradient(per_device, side):
    """Replicated kernel, batch split over devices, under jit and shard_map."""
    devices = np.array(jax.devices())
    mesh = Mesh(devices, ("data",))
    rng = np.random.default_rng(4)
    x = rand(rng, (per_device * len(devices), side, side, 8))
    kernel = rand(rng, (3, 3, 8, 8))

    def per_device_grad(conv):
        def grad(kernel, x):  # the replicated kernel's gradient comes out summed over devices
            return jax.grad(lambda k: jnp.sum(conv(x, k) ** 2))(kernel)

        spec = PartitionSpec("data")
        return jax.jit(
            jax.shard_map(
                grad, mesh=mesh, in_specs=(PartitionSpec(), spec), out_specs=PartitionSpec()
            )
        )

    ours = per_device_grad(lambda x, k: conv2d(x, k))(kernel, x)
    theirs = per_device_grad(lambda x, k: lax_conv(x, k, (1, 1), "SAME"))(kernel, x)
    assert_close(ours, theirs)
