"""Flax counterparts of the Keras pieces the Keras applications use and Flax lacks.

The transfer backbones must compute exactly what their Keras originals compute, so that Keras
ImageNet weights carry over: Keras pads stride-2 convolutions explicitly (`ZeroPadding2D` +
'valid'), rounds channel counts to multiples of 8, and embeds input normalisation layers.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)
# `keras.applications.imagenet_utils.preprocess_input(mode='caffe')` subtracts these from BGR
# pixels in [0, 255].
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

# He-normal over fan-out: the convolution initialiser of Keras' EfficientNet, used for every
# randomly initialised backbone convolution.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "truncated_normal")

Padding = tuple[tuple[int, int], tuple[int, int]]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Rounds a channel count to a multiple of `divisor`, never more than 10% down.

    Keras' `_make_divisible` (MobileNetV2), `_depth` (MobileNetV3) and `round_filters`
    (EfficientNet) are all this rule.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def correct_pad(x: jax.Array, kernel_size: int) -> Padding:
    """Padding Keras puts before a stride-2 'valid' convolution (`imagenet_utils.correct_pad`).

    One pixel less at the top/left when the side is even, so that the output matches
    TensorFlow's 'same' while the padding stays explicit.
    """
    height, width = x.shape[1:3]
    half = kernel_size // 2
    return ((half - 1 + height % 2, half), (half - 1 + width % 2, half))


def zero_pad(x: jax.Array, padding: Padding) -> jax.Array:
    """`keras.layers.ZeroPadding2D` for NHWC arrays."""
    return jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))


def caffe_preprocess(x: jax.Array) -> jax.Array:
    """[0, 1] RGB -> what Keras' caffe-style ResNets expect: BGR in [0, 255] minus the mean."""
    return x[..., ::-1] * 255.0 - jnp.asarray(CAFFE_MEAN_BGR, x.dtype)


def symmetric_preprocess(x: jax.Array) -> jax.Array:
    """[0, 1] -> [-1, 1], the input range of the MobileNets."""
    return x * 2.0 - 1.0


class KerasNormalization(nn.Module):
    """`keras.layers.Normalization` over the channel axis: (x - mean) / max(sqrt(var), 1e-7).

    Its mean and variance are weights of the Keras model that training never changes; they live
    in the 'batch_stats' collection beside the BatchNorm statistics so that every model keeps the
    same two variable collections. Defaults are the ImageNet RGB statistics.
    """

    mean_init: Sequence[float] = IMAGENET_MEAN_RGB
    variance_init: Sequence[float] = tuple(s * s for s in IMAGENET_STDDEV_RGB)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        mean = self.variable(
            "batch_stats", "mean", lambda: jnp.asarray(self.mean_init, jnp.float32)
        )
        variance = self.variable(
            "batch_stats", "variance", lambda: jnp.asarray(self.variance_init, jnp.float32)
        )
        # Keras' backend.epsilon(): guards a zero variance.
        return (x - mean.value) / jnp.maximum(jnp.sqrt(variance.value), 1e-7)
