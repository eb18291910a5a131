"""Training batches made on the accelerators themselves (`config.data.source = 'device'`).

Sample i of step s is a pure function of (seed, s, i): its key is the seed's key folded with
the step and the GLOBAL sample index, so the global batch is the same on any number of devices
and a resumed run needs nothing but the step. Inside `jax.shard_map` over the mesh axis
'data', each device draws its own slice (`local_batch`, from `lax.axis_index`); nothing crosses
the host. Per-pixel noise (textures, the noise effect and op) is read from windows of one
bank of standard normals per step (`noise_bank`, from (seed, step)): drawing it per pixel and
sample cost more than the rest of rendering. A sample is drawn by
`geojax.data.device.render`, quantised to uint8 as the CPU renderer's picture is, and
augmented by the ops of `config.device_ops` (`geojax.data.device.augment`) when
`config.augment` is set, then quantised again; its box is the drawn mask's, moved by the
augmentation's geometry. (uint8 between the stages is also a quarter of float32's memory
traffic on a GPU.)

Batches: {'image': uint8 [B, S, S, 3], 'label': int32 [B], 'box': int32 [B, 4] (x0, y0, x1, y1),
ends exclusive, as `geojax.data.render.mask_bbox`}.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from geojax.data.device.augment import compose
from geojax.data.device.pixels import mask_box, quantise
from geojax.data.device.render import render_sample
from geojax.data.render import MASK_THRESHOLD

DEVICE_STREAM_ID = 2001  # apart from the CPU stream's and eval splits' seeds
NOISE_BANK_ID = 2002
Batch = dict[str, jax.Array]


def sample_key(seed: int | jax.Array, step: jax.Array, index: jax.Array) -> jax.Array:
    """The key of global sample `index` of step `step`."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), DEVICE_STREAM_ID)
    return jax.random.fold_in(jax.random.fold_in(key, step), index)


def noise_bank(seed: int | jax.Array, step: jax.Array, size: int) -> jax.Array:
    """The standard normals [2 size, 2 size, 3] that every sample of step `step` reads its
    noise from (`geojax.data.device.pixels.standard_normal`): a function of (seed, step)
    alone, so every device holds the same bank and the batch stays the same on any device
    count."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), NOISE_BANK_ID)
    return jax.random.normal(jax.random.fold_in(key, step), (2 * size, 2 * size, 3))


def sample_fn(config: ml_collections.ConfigDict) -> Callable[[jax.Array, jax.Array], Batch]:
    """`fn(key, bank) -> one sample` for the data config: render, augment, box, quantise
    (`bank`: see `noise_bank`)."""
    size = int(config.img_size)
    low, high = (float(v) for v in config.size_range)
    size_range = (low, high)
    effects = bool(config.effects)
    no_shape_fraction = float(config.get("no_shape_fraction", 0.0))
    augment = compose(config.device_ops) if config.augment else None

    def make(key: jax.Array, bank: jax.Array) -> Batch:
        # The barrier keeps the keys' threefry out of the per-pixel kernels: XLA:GPU fused it
        # into each image-sized consumer and hashed again per pixel (XLA:CPU ignores it).
        render_key, augment_key = jax.lax.optimization_barrier(jax.random.split(key))
        drawn = render_sample(render_key, size, size_range, effects, bank,
                                            defer_effects=augment is not None,
                                            no_shape_fraction=no_shape_fraction)
        box = mask_box(drawn.pop("mask") >= MASK_THRESHOLD)
        sample = {**drawn, "image": quantise(drawn["image"]), "box": box}
        if augment is not None:
            sample = {**sample, "image": sample["image"].astype(jnp.float32)}
            sample = augment(augment_key, {**sample, "noise_bank": bank})
            sample.pop("noise_bank")
            sample = {**sample, "image": quantise(sample["image"])}
        return sample

    return make


def make_batch(config: ml_collections.ConfigDict, seed: int, step: jax.Array,
               indices: jax.Array) -> Batch:
    """The samples `indices` (global) of step `step`."""
    keys = jax.vmap(lambda i: sample_key(seed, step, i))(indices)
    bank = noise_bank(seed, step, int(config.img_size))
    return jax.vmap(sample_fn(config), in_axes=(0, None))(keys, bank)


def local_batch(config: ml_collections.ConfigDict, step: jax.Array, *, batch_size: int,
                seed: int, axis_name: str) -> Batch:
    """This device's slice of the global batch of `step`; call inside shard_map over
    `axis_name` (a mesh of n devices: batch_size / n samples each, in device order)."""
    shards = lax.axis_size(axis_name)
    if batch_size % shards:
        raise ValueError(f"batch size {batch_size} is not divisible by the {shards} devices")
    local = batch_size // shards
    first = lax.axis_index(axis_name) * local
    return make_batch(config, seed, step, first + jnp.arange(local))


def batch_fn(config: ml_collections.ConfigDict, mesh: Mesh, batch_size: int, seed: int,
             axis_name: str = "data") -> Callable[[jax.Array], Batch]:
    """Jitted `fn(step) -> global batch` sharded over `axis_name` of `mesh` (each device
    renders its own slice)."""
    per_device = functools.partial(local_batch, config, batch_size=batch_size, seed=seed,
                                   axis_name=axis_name)
    return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P(), out_specs=P(axis_name)))
