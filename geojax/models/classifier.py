"""The shape every geojax model has: a backbone, global average pooling, the seed's MLP head.

`Backbone` holds what all backbones share (compute dtype, synchronised BatchNorm, which blocks
are frozen); `Classifier` puts a backbone and the head together and is the module the rest of
geojax trains, checkpoints and exports.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from geojax import NUM_CLASSES

ModuleDef = Callable[..., nn.Module]
# He initialisation (fan-out), as Keras and the flax ResNet examples use for ReLU convnets.
CONV_KERNEL_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
Dtype = Any


class Backbone(nn.Module):
    """Fields and helpers every backbone shares.

    A backbone takes float32 RGB images in [0, 1], [N, H, W, 3], applies its own input
    preprocessing and returns its last feature map [N, h, w, C] in the compute dtype.

    Freezing works on units: unit 0 is the stem (every layer before the first block), unit i the
    i-th block, and layers after the last block belong to the last block's unit. With `freeze`,
    all units but the last `trainable_blocks` blocks are frozen; their BatchNorm layers then run
    on their running averages in training too, so their statistics never change (the Keras rule
    for non-trainable BatchNorm). The optimiser side is `geojax.models.freezing`.

    Subclasses define `block_names` (the block submodules' names, in call order) and
    `__call__(x, train)`.
    """

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None
    freeze: bool = False
    trainable_blocks: int = 0

    @property
    def min_input_size(self) -> int:
        """Smallest image side the backbone accepts (Keras' own limit for its applications)."""
        return 32

    def frozen(self, unit: int) -> bool:
        """Whether `unit` (0 = stem, i = i-th block) is frozen."""
        return self.freeze and unit <= len(self.block_names) - self.trainable_blocks

    def norm(self, unit: int, train: bool, **kwargs: Any) -> ModuleDef:
        """The BatchNorm of `unit`: synchronised over `bn_axis_name`, frozen units on averages."""
        return functools.partial(
            nn.BatchNorm,
            use_running_average=not train or self.frozen(unit),
            axis_name=self.bn_axis_name,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            **kwargs,
        )


class MLPHead(nn.Module):
    """Dense(+BatchNorm)+ReLU+Dropout per hidden width, then Dense(num_classes) logits."""

    num_classes: int
    widths: Sequence[int] = (512, 256)
    dropout: Sequence[float] = (0.3, 0.15)
    batch_norm: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        for i, (width, rate) in enumerate(zip(self.widths, self.dropout, strict=True)):
            # A bias before BatchNorm would be cancelled by its mean subtraction.
            x = dense(width, use_bias=not self.batch_norm, name=f"dense{i}")(x)
            if self.batch_norm:
                x = nn.BatchNorm(
                    use_running_average=not train,
                    axis_name=self.bn_axis_name,
                    epsilon=1e-3,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    name=f"bn{i}",
                )(x)
            x = nn.relu(x)
            x = nn.Dropout(rate, deterministic=not train)(x)
        return dense(self.num_classes, name="logits")(x)


POOLS: tuple[str, ...] = ("avg", "avgmax")

TTAS: tuple[str, ...] = ("none", "d4")
"""Test-time augmentation: "d4" averages the logits over the input's 8 rotations by quarter
turns and their mirror images (the dihedral group D4). Every class is closed under them (a
rotated or mirrored square is a square), so these are the same question asked 8 ways."""


def d4_views(x: jax.Array) -> jax.Array:
    """[N, H, W, C] -> [8 * N, H, W, C]: the four quarter turns, then their mirror images."""
    turns = [jnp.rot90(x, k, axes=(1, 2)) for k in range(4)]
    return jnp.concatenate(turns + [t[:, :, ::-1] for t in turns], axis=0)


class Classifier(nn.Module):
    """Backbone -> global pooling (`pool`: average, or average and maximum) -> MLP head ->
    float32 logits [N, num_classes]; with `tta="d4"`, at inference, the mean of those logits
    over the input's 8 rotations and mirror images.

    `backbone` is a `Backbone` subclass or a `functools.partial` of one carrying its
    architecture fields; the shared fields (dtype, bn_axis_name, freezing) are passed from here.
    Variables: {'params', 'batch_stats'}, each with a 'backbone' and a 'head' subtree.
    """

    backbone: ModuleDef
    num_classes: int = NUM_CLASSES
    head_widths: Sequence[int] = (512, 256)
    head_dropout: Sequence[float] = (0.3, 0.15)
    head_batch_norm: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None
    freeze_backbone: bool = False
    trainable_blocks: int = 0
    pool: str = "avg"  # POOLS
    tta: str = "none"  # TTAS; applied at inference only (train=False)

    @property
    def min_input_size(self) -> int:
        """Smallest image side the model accepts."""
        return self.backbone().min_input_size

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        backbone = self.backbone(
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            bn_axis_name=self.bn_axis_name,
            freeze=self.freeze_backbone,
            trainable_blocks=self.trainable_blocks,
            name="backbone",
        )
        check_images(x, backbone.min_input_size)
        views = 8 if self.tta == "d4" and not train else 1
        if views > 1:  # one batch of all views: one pass through the network
            x = d4_views(x)
        features = backbone(x, train)
        pooled = jnp.mean(features, axis=(1, 2), dtype=jnp.float32)
        if self.pool == "avgmax":
            peak = jnp.max(features, axis=(1, 2)).astype(jnp.float32)
            pooled = jnp.concatenate([pooled, peak], axis=-1)
        logits = classifier_head(self)(pooled, train).astype(jnp.float32)
        if views > 1:
            logits = logits.reshape(views, -1, logits.shape[-1]).mean(axis=0)
        return logits


def classifier_head(model: Classifier) -> MLPHead:
    """`model`'s head: its 'head' submodule when called in `model`, else a standalone module."""
    return MLPHead(
        num_classes=model.num_classes,
        widths=model.head_widths,
        dropout=model.head_dropout,
        batch_norm=model.head_batch_norm,
        dtype=model.dtype,
        param_dtype=model.param_dtype,
        bn_axis_name=model.bn_axis_name,
        name="head",
    )


def check_images(x: jax.Array, min_size: int) -> None:
    """Raises ValueError unless `x` is a [N, H, W, 3] batch with H, W >= `min_size`."""
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(
            f"expected a batch of RGB images [N, H, W, 3] with values in [0, 1], got shape {x.shape}"
        )
    if min(x.shape[1:3]) < min_size:
        raise ValueError(
            f"images of {x.shape[1]}x{x.shape[2]} px are too small for this model's downsampling:"
            f" height and width must be at least {min_size} px"
        )
