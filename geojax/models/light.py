"""A lightweight CNN that trains fast on CPU: a few conv-BN-ReLU stages, each ending in a 2x2 pool.

Meant for 32-64 px images: the default (four stages of 32-256 channels, two 3x3 convolutions
each) has about 1.2 M parameters and 0.4 GFLOPs per 64 px image. `patch` > 1 regroups each
patch x patch block of pixels into channels before the stages (space-to-depth: lossless, no
parameters): the stages work at 1/patch of the resolution, so quick's 64 px input costs about
what 32 px costs, while small shapes keep their full-resolution edges in the channels.
"""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax

from geojax.models.classifier import CONV_KERNEL_INIT, Backbone, ModuleDef


class ConvStage(nn.Module):
    """`num_convs` x (conv3x3 + BN + ReLU), then 2x2 max-pool."""

    features: int
    num_convs: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_convs):
            x = self.conv(self.features, (3, 3), name=f"conv{i + 1}")(x)
            x = nn.relu(self.norm(name=f"bn{i + 1}")(x))
        return nn.max_pool(x, (2, 2), strides=(2, 2))


class LightCNNBackbone(Backbone):
    """Stages named 'stage1', 'stage2', ...; each halves the resolution.

    `conv` builds every convolution (any module with `flax.linen.Conv`'s call signature and
    parameter names); `width` multiplies the stage widths.
    """

    conv: ModuleDef = nn.Conv
    stage_widths: Sequence[int] = (32, 64, 128, 256)
    convs_per_stage: int = 2
    width: float = 1.0
    patch: int = 1

    @property
    def block_names(self) -> tuple[str, ...]:
        return tuple(f"stage{s + 1}" for s in range(len(self.stage_widths)))

    @property
    def min_input_size(self) -> int:
        return 2 ** len(self.stage_widths) * self.patch

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
        if self.patch > 1:
            p = self.patch
            batch, height, width, channels = x.shape
            x = x.reshape(batch, height // p, p, width // p, p, channels)
            x = x.transpose(0, 1, 3, 2, 4, 5).reshape(batch, height // p, width // p, -1)
        for unit, (name, base) in enumerate(
            zip(self.block_names, self.stage_widths, strict=True), start=1
        ):
            x = ConvStage(
                features=max(1, round(base * self.width)),
                num_convs=self.convs_per_stage,
                conv=conv,
                norm=self.norm(unit, train, epsilon=1e-3),
                name=name,
            )(x)
        return x
