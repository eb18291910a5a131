"""EfficientNet B0/B3 as `keras.applications.EfficientNetB0/B3` build them.

Same blocks, channel rounding, explicit stride-2 padding, swish activations, stochastic depth
("drop connect") and the input layers Keras embeds: its Rescaling(1/255) turns [0, 255] into
the [0, 1] images geojax feeds, so only its Normalization layer remains (`KerasNormalization`).
Layer names are Keras': block 'block2a' holds 'expand_conv', ... = Keras 'block2a_expand_conv'.
"""

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from geojax.models.classifier import Backbone, ModuleDef
from geojax.models.keras_layers import (
    KerasNormalization,
    conv_kernel_init,
    correct_pad,
    make_divisible,
    zero_pad,
)


class StageSpec(NamedTuple):
    """One row of Keras' DEFAULT_BLOCKS_ARGS (all use SE ratio 0.25 and identity skips)."""

    kernel_size: int
    repeats: int
    filters_in: int
    filters_out: int
    expand_ratio: int
    strides: int


STAGES = (
    StageSpec(3, 1, 32, 16, 1, 1),
    StageSpec(3, 2, 16, 24, 6, 2),
    StageSpec(5, 2, 24, 40, 6, 2),
    StageSpec(3, 3, 40, 80, 6, 2),
    StageSpec(5, 3, 80, 112, 6, 1),
    StageSpec(5, 4, 112, 192, 6, 2),
    StageSpec(3, 1, 192, 320, 6, 1),
)
# (width, depth) coefficients of `keras.applications.EfficientNetB*`.
B0 = (1.0, 1.0)
B3 = (1.2, 1.4)


class MBConv(nn.Module):
    """Keras' EfficientNet `block`: expand 1x1, depthwise, SE, project 1x1, drop-connect skip."""

    filters_in: int
    filters_out: int
    kernel_size: int
    strides: int
    expand_ratio: int
    drop_rate: float
    conv: ModuleDef
    norm: ModuleDef
    se_ratio: float = 0.25

    @nn.compact
    def __call__(self, inputs: jax.Array, train: bool) -> jax.Array:
        filters = self.filters_in * self.expand_ratio
        x = inputs
        if self.expand_ratio != 1:
            x = self.conv(filters, (1, 1), use_bias=False, name="expand_conv")(x)
            x = nn.swish(self.norm(name="expand_bn")(x))
        padding = "SAME"
        if self.strides == 2:
            x = zero_pad(x, correct_pad(x, self.kernel_size))
            padding = "VALID"
        x = self.conv(
            filters,
            (self.kernel_size, self.kernel_size),
            strides=(self.strides, self.strides),
            padding=padding,
            feature_group_count=filters,
            use_bias=False,
            name="dwconv",
        )(x)
        x = nn.swish(self.norm(name="bn")(x))
        se = jnp.mean(x, axis=(1, 2), keepdims=True)
        se_filters = max(1, int(self.filters_in * self.se_ratio))
        se = nn.swish(self.conv(se_filters, (1, 1), name="se_reduce")(se))
        se = nn.sigmoid(self.conv(filters, (1, 1), name="se_expand")(se))
        x = x * se
        x = self.conv(self.filters_out, (1, 1), use_bias=False, name="project_conv")(x)
        x = self.norm(name="project_bn")(x)
        if self.strides == 1 and self.filters_in == self.filters_out:
            # Stochastic depth: drop the whole residual branch per example.
            x = nn.Dropout(self.drop_rate, broadcast_dims=(1, 2, 3), deterministic=not train)(x)
            x = x + inputs
        return x


class KerasEfficientNet(Backbone):
    """The Keras EfficientNet trunk up to 'top_activation'; `coefficients` = (width, depth)."""

    coefficients: tuple[float, float] = B0
    drop_connect_rate: float = 0.2

    def _filters(self, base: int) -> int:
        return make_divisible(base * self.coefficients[0])

    def _stages(self) -> Sequence[tuple[StageSpec, int]]:
        return [(spec, math.ceil(self.coefficients[1] * spec.repeats)) for spec in STAGES]

    @property
    def block_names(self) -> tuple[str, ...]:
        return tuple(
            f"block{i + 1}{chr(ord('a') + j)}"
            for i, (_, repeats) in enumerate(self._stages())
            for j in range(repeats)
        )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv = functools.partial(
            nn.Conv,
            padding="SAME",
            kernel_init=conv_kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        # Keras' default BatchNorm epsilon.
        norm = functools.partial(self.norm, train=train, epsilon=1e-3)
        x = KerasNormalization(name="normalization")(x)
        x = zero_pad(x, correct_pad(x, 3))
        x = conv(
            self._filters(32),
            (3, 3),
            strides=(2, 2),
            padding="VALID",
            use_bias=False,
            name="stem_conv",
        )(x)
        x = nn.swish(norm(0)(name="stem_bn")(x))
        num_blocks = len(self.block_names)
        unit = 0
        for spec, repeats in self._stages():
            for j in range(repeats):
                x = MBConv(
                    filters_in=self._filters(spec.filters_in if j == 0 else spec.filters_out),
                    filters_out=self._filters(spec.filters_out),
                    kernel_size=spec.kernel_size,
                    strides=spec.strides if j == 0 else 1,
                    expand_ratio=spec.expand_ratio,
                    drop_rate=self.drop_connect_rate * unit / num_blocks,
                    conv=conv,
                    norm=norm(unit + 1),
                    name=self.block_names[unit],
                )(x, train)
                unit += 1
        x = conv(self._filters(1280), (1, 1), use_bias=False, name="top_conv")(x)
        return nn.swish(norm(unit)(name="top_bn")(x))
