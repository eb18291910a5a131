"""MobileNetV2 and MobileNetV3 Small/Large as `keras.applications` builds them.

Inverted residual blocks with Keras' channel rounding, explicit stride-2 padding, BatchNorm
epsilon 1e-3 / momentum 0.999, ReLU6 (V2) and ReLU / hard-swish with hard-sigmoid SE (V3).
Both take [-1, 1] inputs: `keras.applications.mobilenet_v2.preprocess_input` for V2, the
Rescaling(1/127.5, offset=-1) layer MobileNetV3 embeds for V3. Layer names are Keras':
block 'block_3' holds 'expand', ... = Keras 'block_3_expand'.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from geojax.models.classifier import Backbone, ModuleDef
from geojax.models.keras_layers import (
    conv_kernel_init,
    correct_pad,
    make_divisible,
    symmetric_preprocess,
    zero_pad,
)

Activation = Callable[[jax.Array], jax.Array]


class InvertedResidual(nn.Module):
    """Expand 1x1 (not in the first block), depthwise, optional SE, linear project 1x1, skip.

    `bn_suffix` is how the Keras model names the BatchNorm after a convolution ('_BN' in V2,
    '_bn' in V3); `se_filters` > 0 adds MobileNetV3's squeeze-and-excite.
    """

    expanded: int
    filters: int
    kernel_size: int
    strides: int
    activation: Activation
    conv: ModuleDef
    norm: ModuleDef
    bn_suffix: str
    expand: bool = True
    se_filters: int = 0

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        x = inputs
        if self.expand:
            x = self.conv(self.expanded, (1, 1), use_bias=False, name="expand")(x)
            x = self.activation(self.norm(name=f"expand{self.bn_suffix}")(x))
        padding = "SAME"
        if self.strides == 2:
            x = zero_pad(x, correct_pad(x, self.kernel_size))
            padding = "VALID"
        x = self.conv(
            self.expanded,
            (self.kernel_size, self.kernel_size),
            strides=(self.strides, self.strides),
            padding=padding,
            feature_group_count=self.expanded,
            use_bias=False,
            name="depthwise",
        )(x)
        x = self.activation(self.norm(name=f"depthwise{self.bn_suffix}")(x))
        if self.se_filters:
            se = jnp.mean(x, axis=(1, 2), keepdims=True)
            se = nn.relu(self.conv(self.se_filters, (1, 1), name="squeeze_excite_conv")(se))
            se = self.conv(self.expanded, (1, 1), name="squeeze_excite_conv_1")(se)
            x = x * nn.hard_sigmoid(se)
        x = self.conv(self.filters, (1, 1), use_bias=False, name="project")(x)
        x = self.norm(name=f"project{self.bn_suffix}")(x)
        if self.strides == 1 and inputs.shape[-1] == self.filters:
            x = x + inputs
        return x


def _conv_def(backbone: Backbone) -> ModuleDef:
    return functools.partial(
        nn.Conv,
        padding="SAME",
        kernel_init=conv_kernel_init,
        dtype=backbone.dtype,
        param_dtype=backbone.param_dtype,
    )


class V2Block(NamedTuple):
    filters: int
    strides: int
    expansion: int


V2_BLOCKS = (
    V2Block(16, 1, 1),
    *[V2Block(24, s, 6) for s in (2, 1)],
    *[V2Block(32, s, 6) for s in (2, 1, 1)],
    *[V2Block(64, s, 6) for s in (2, 1, 1, 1)],
    *[V2Block(96, 1, 6) for _ in range(3)],
    *[V2Block(160, s, 6) for s in (2, 1, 1)],
    V2Block(320, 1, 6),
)


class KerasMobileNetV2(Backbone):
    """The Keras MobileNetV2 trunk up to 'out_relu'; `alpha` is its width multiplier."""

    alpha: float = 1.0

    @property
    def block_names(self) -> tuple[str, ...]:
        return ("expanded_conv", *(f"block_{i}" for i in range(1, len(V2_BLOCKS))))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv = _conv_def(self)
        norm = functools.partial(self.norm, train=train, epsilon=1e-3, momentum=0.999)
        x = symmetric_preprocess(x)
        x = conv(
            make_divisible(32 * self.alpha), (3, 3), strides=(2, 2), use_bias=False, name="Conv1"
        )(x)
        x = nn.relu6(norm(0)(name="bn_Conv1")(x))
        for unit, (name, block) in enumerate(
            zip(self.block_names, V2_BLOCKS, strict=True), start=1
        ):
            x = InvertedResidual(
                expanded=block.expansion * x.shape[-1],
                filters=make_divisible(int(block.filters * self.alpha)),
                kernel_size=3,
                strides=block.strides,
                activation=nn.relu6,
                conv=conv,
                norm=norm(unit),
                bn_suffix="_BN",
                expand=unit > 1,
                name=name,
            )(x)
        top = make_divisible(1280 * self.alpha) if self.alpha > 1.0 else 1280
        x = conv(top, (1, 1), use_bias=False, name="Conv_1")(x)
        return nn.relu6(norm(len(V2_BLOCKS))(name="Conv_1_bn")(x))


class V3Block(NamedTuple):
    expansion: float
    filters: int
    kernel_size: int
    strides: int
    squeeze_excite: bool
    activation: Activation


V3_SMALL_BLOCKS = (
    V3Block(1, 16, 3, 2, True, nn.relu),
    V3Block(72 / 16, 24, 3, 2, False, nn.relu),
    V3Block(88 / 24, 24, 3, 1, False, nn.relu),
    V3Block(4, 40, 5, 2, True, nn.hard_swish),
    V3Block(6, 40, 5, 1, True, nn.hard_swish),
    V3Block(6, 40, 5, 1, True, nn.hard_swish),
    V3Block(3, 48, 5, 1, True, nn.hard_swish),
    V3Block(3, 48, 5, 1, True, nn.hard_swish),
    V3Block(6, 96, 5, 2, True, nn.hard_swish),
    V3Block(6, 96, 5, 1, True, nn.hard_swish),
    V3Block(6, 96, 5, 1, True, nn.hard_swish),
)
V3_LARGE_BLOCKS = (
    V3Block(1, 16, 3, 1, False, nn.relu),
    V3Block(4, 24, 3, 2, False, nn.relu),
    V3Block(3, 24, 3, 1, False, nn.relu),
    V3Block(3, 40, 5, 2, True, nn.relu),
    V3Block(3, 40, 5, 1, True, nn.relu),
    V3Block(3, 40, 5, 1, True, nn.relu),
    V3Block(6, 80, 3, 2, False, nn.hard_swish),
    V3Block(2.5, 80, 3, 1, False, nn.hard_swish),
    V3Block(2.3, 80, 3, 1, False, nn.hard_swish),
    V3Block(2.3, 80, 3, 1, False, nn.hard_swish),
    V3Block(6, 112, 3, 1, True, nn.hard_swish),
    V3Block(6, 112, 3, 1, True, nn.hard_swish),
    V3Block(6, 160, 5, 2, True, nn.hard_swish),
    V3Block(6, 160, 5, 1, True, nn.hard_swish),
    V3Block(6, 160, 5, 1, True, nn.hard_swish),
)


class KerasMobileNetV3(Backbone):
    """The Keras MobileNetV3 trunk (not minimalistic) up to the activation after 'conv_1'.

    `large` picks MobileNetV3Large over MobileNetV3Small; `alpha` is the width multiplier.
    """

    large: bool = False
    alpha: float = 1.0

    @property
    def _blocks(self) -> tuple[V3Block, ...]:
        return V3_LARGE_BLOCKS if self.large else V3_SMALL_BLOCKS

    @property
    def block_names(self) -> tuple[str, ...]:
        return ("expanded_conv", *(f"expanded_conv_{i}" for i in range(1, len(self._blocks))))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv = _conv_def(self)
        norm = functools.partial(self.norm, train=train, epsilon=1e-3, momentum=0.999)
        x = symmetric_preprocess(x)
        x = conv(16, (3, 3), strides=(2, 2), use_bias=False, name="conv")(x)
        x = nn.hard_swish(norm(0)(name="conv_bn")(x))
        for unit, (name, block) in enumerate(
            zip(self.block_names, self._blocks, strict=True), start=1
        ):
            expanded = make_divisible(x.shape[-1] * block.expansion)
            x = InvertedResidual(
                expanded=expanded,
                filters=make_divisible(block.filters * self.alpha),
                kernel_size=block.kernel_size,
                strides=block.strides,
                activation=block.activation,
                conv=conv,
                norm=norm(unit),
                bn_suffix="_bn",
                expand=unit > 1,
                se_filters=make_divisible(expanded * 0.25) if block.squeeze_excite else 0,
                name=name,
            )(x)
        x = conv(make_divisible(x.shape[-1] * 6), (1, 1), use_bias=False, name="conv_1")(x)
        return nn.hard_swish(norm(len(self._blocks))(name="conv_1_bn")(x))
