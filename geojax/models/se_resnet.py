"""The seed's custom CNN: a ResNet of basic blocks with squeeze-and-excitation channel attention.

Seed README, "Custom CNN Architecture": 7x7/2 stem (64 filters, BatchNorm, ReLU, 3x3/2 max-pool),
four stages of 2, 3, 4, 3 blocks at 64, 128, 256, 512 filters, stride 2 at the first block of
stages 2-4. Block: conv3x3+BN+ReLU, conv3x3+BN, SE, add the skip (1x1 conv + BN where the shape
changes), ReLU, Dropout; the dropout moved onto the residual branch here (see the block). The
seed's L2 regularisation is weight decay in the optimiser here.
"""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from geojax.models.classifier import CONV_KERNEL_INIT, Backbone, Dtype, ModuleDef

# He-normal over fan-out suits convolutions followed by ReLU.
# The seed was written for Keras, whose BatchNorm defaults these are.
_BN_EPSILON = 1e-3


class SqueezeExcite(nn.Module):
    """Channel attention: GAP -> Dense(C // reduction)+ReLU -> Dense(C)+sigmoid -> scale x."""

    reduction: int = 16
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = nn.relu(dense(max(1, channels // self.reduction), name="reduce")(s))
        s = nn.sigmoid(dense(channels, name="expand")(s))
        return x * s


class SEResidualBlock(nn.Module):
    """conv3x3+BN+ReLU, conv3x3+BN, SE, Dropout, + skip, ReLU."""

    filters: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef
    se_reduction: int = 16
    dropout: float = 0.3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        strides = (self.strides, self.strides)
        y = self.conv(self.filters, (3, 3), strides=strides, name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.filters, (3, 3), name="conv2")(y)
        y = self.norm(name="bn2")(y)
        y = SqueezeExcite(self.se_reduction, self.dtype, self.param_dtype, name="se")(y)
        # Dropout on the residual branch, not after the add: dropping the sum (the seed's
        # order) drops the identity path too, 12 times over, and the network does not train
        # (loss stays at ln 10 for thousands of steps; see DESIGN.md).
        y = nn.Dropout(self.dropout, deterministic=not train)(y)
        skip = x
        if skip.shape != y.shape:
            skip = self.conv(self.filters, (1, 1), strides=strides, name="proj_conv")(x)
            skip = self.norm(name="proj_bn")(skip)
        return nn.relu(y + skip)


class SEResNetBackbone(Backbone):
    """Stem + stages of `SEResidualBlock`s; blocks are named 'stage{s}_block{b}' (1-based).

    `width` multiplies the stem and stage widths, so small variants keep the architecture.
    `conv` builds every convolution: any module with `flax.linen.Conv`'s call signature and
    parameter names ('kernel' HWIO, 'bias').
    """

    conv: ModuleDef = nn.Conv
    width: float = 1.0
    stem_width: int = 64
    stage_widths: Sequence[int] = (64, 128, 256, 512)
    stage_depths: Sequence[int] = (2, 3, 4, 3)
    se_reduction: int = 16
    block_dropout: float = 0.0

    @property
    def block_names(self) -> tuple[str, ...]:
        return tuple(
            f"stage{s + 1}_block{b + 1}"
            for s, depth in enumerate(self.stage_depths)
            for b in range(depth)
        )

    @property
    def min_input_size(self) -> int:
        # The stem halves twice, every later stage once more.
        return 4 * 2 ** (len(self.stage_depths) - 1)

    def _channels(self, base: int) -> int:
        return max(1, round(base * self.width))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv = functools.partial(
            self.conv,
            padding="SAME",
            use_bias=False,
            kernel_init=CONV_KERNEL_INIT,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        x = conv(self._channels(self.stem_width), (7, 7), strides=(2, 2), name="stem_conv")(x)
        x = nn.relu(self.norm(0, train, epsilon=_BN_EPSILON)(name="stem_bn")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        unit = 0
        for s, (base, depth) in enumerate(zip(self.stage_widths, self.stage_depths, strict=True)):
            for b in range(depth):
                unit += 1
                x = SEResidualBlock(
                    filters=self._channels(base),
                    strides=2 if s > 0 and b == 0 else 1,
                    conv=conv,
                    norm=self.norm(unit, train, epsilon=_BN_EPSILON),
                    se_reduction=self.se_reduction,
                    dropout=self.block_dropout,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    name=self.block_names[unit - 1],
                )(x, train)
        return x
