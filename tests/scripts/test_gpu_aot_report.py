"""The HLO reading of scripts/gpu_aot_report.py (kernels, bytes, element-ops), on programs
compiled here for the CPU: the GPU compile itself needs the CUDA plugin, a benchmark tool."""


import jax
import jax.numpy as jnp
import pytest

from scripts import gpu_aot_report as report


def _hlo(fn, *args) -> str:
    return jax.jit(fn).lower(*args).compile().as_text()


def test_shape_sizes():
    assert report.shape_bytes("(f32[2,3]{1,0}, u8[4]{0})") == 28
    assert report.shape_bytes("bf16[]") == 2
    assert report.shape_elements("(f32[2,3]{1,0}, pred[10]{0})") == 10


def test_one_elementwise_kernel_reads_and_writes_its_arrays():
    x = jnp.zeros((256, 64), jnp.float32)
    found = report.kernels(_hlo(lambda x: jnp.sin(x) * 2.0 + jnp.cos(x), x))
    assert len(found) == 1
    (kernel,) = found
    assert kernel.bytes == 2 * 256 * 64 * 4  # one read, one write
    assert kernel.element_ops >= 256 * 64 * 3  # sin, cos, multiply, add
    assert report.estimate_s(found) > report.H100["launch"]


def test_loop_bodies_count_once_per_trip():
    def loop(x):
        return jax.lax.fori_loop(0, 7, lambda i, v: jnp.tanh(v) * 1.5, x)

    found = report.kernels(_hlo(loop, jnp.ones((1024,), jnp.float32)))
    assert {k.times for k in found if k.element_ops >= 1024} == {7}  # tanh, multiply


def test_rejects_text_without_a_module():
    with pytest.raises(ValueError, match="ENTRY"):
        report.kernels("not hlo")


def test_kernels_name_the_geojax_lines_they_come_from():
    from geojax.data.device import pixels

    image = jnp.zeros((16, 16, 3), jnp.float32)
    found = report.kernels(_hlo(lambda x: pixels.gaussian_blur(x, 1.0), image))
    assert any("data/device/pixels.py:" in k.source for k in found)
