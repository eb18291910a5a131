"""ResNet50/101 as `keras.applications.ResNet50/101` build them, so their ImageNet weights load.

The Keras v1 ("caffe") ResNets: convolutions with bias, BatchNorm epsilon 1.001e-5, the stride
on the first 1x1 convolution of a bottleneck, explicit zero padding before the 7x7 stem and the
max-pool, and inputs preprocessed caffe-style (BGR, [0, 255], ImageNet mean subtracted).
Layers carry the Keras layer names: block 'conv3_block2' holds '1_conv', ... which Keras calls
'conv3_block2_1_conv'.
"""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax

from geojax.models.classifier import Backbone, ModuleDef
from geojax.models.keras_layers import caffe_preprocess, conv_kernel_init, zero_pad

_BN_EPSILON = 1.001e-5
RESNET50_DEPTHS = (3, 4, 6, 3)
RESNET101_DEPTHS = (3, 4, 23, 3)


class KerasBottleneck(nn.Module):
    """Keras' `residual_block_v1`: 1x1 (strided), 3x3, 1x1 x4, projection or identity skip."""

    filters: int
    strides: int
    projection: bool
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        strides = (self.strides, self.strides)
        y = self.conv(self.filters, (1, 1), strides=strides, name="1_conv")(x)
        y = nn.relu(self.norm(name="1_bn")(y))
        y = self.conv(self.filters, (3, 3), padding="SAME", name="2_conv")(y)
        y = nn.relu(self.norm(name="2_bn")(y))
        # The projection is computed here, between the 2nd and 3rd convolution, because Keras
        # lists the layers of its model in this order and Keras 3 weight files identify a layer
        # only by its position among the layers of its class.
        skip = x
        if self.projection:
            skip = self.conv(4 * self.filters, (1, 1), strides=strides, name="0_conv")(x)
            skip = self.norm(name="0_bn")(skip)
        y = self.conv(4 * self.filters, (1, 1), name="3_conv")(y)
        y = self.norm(name="3_bn")(y)
        return nn.relu(y + skip)


class KerasResNet(Backbone):
    """The Keras v1 ResNet trunk; `stage_depths` (3, 4, 6, 3) is ResNet50, (3, 4, 23, 3) 101."""

    stage_depths: Sequence[int] = RESNET50_DEPTHS

    @property
    def block_names(self) -> tuple[str, ...]:
        return tuple(
            f"conv{s + 2}_block{b + 1}"
            for s, depth in enumerate(self.stage_depths)
            for b in range(depth)
        )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv = functools.partial(
            nn.Conv,
            padding="VALID",
            kernel_init=conv_kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        x = caffe_preprocess(x)
        x = zero_pad(x, ((3, 3), (3, 3)))
        x = conv(64, (7, 7), strides=(2, 2), name="conv1_conv")(x)
        x = nn.relu(self.norm(0, train, epsilon=_BN_EPSILON)(name="conv1_bn")(x))
        # Zero padding is exact for a max-pool after ReLU: every value is >= 0.
        x = zero_pad(x, ((1, 1), (1, 1)))
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
        unit = 0
        for s, depth in enumerate(self.stage_depths):
            for b in range(depth):
                unit += 1
                x = KerasBottleneck(
                    filters=64 * 2**s,
                    strides=2 if s > 0 and b == 0 else 1,
                    projection=b == 0,
                    conv=conv,
                    norm=self.norm(unit, train, epsilon=_BN_EPSILON),
                    name=self.block_names[unit - 1],
                )(x)
        return x
