"""The layout of a model's backbone: its layers in call order and how they group into units.

Found by tracing the model abstractly (`jax.eval_shape`, no computation), so it always agrees
with the module code. Freezing uses the units; the Keras weight import uses the layer order,
because Keras 3 weight files identify a layer only by its position among layers of its class.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from geojax.models.classifier import Backbone, Classifier
from geojax.models.keras_layers import KerasNormalization


@dataclasses.dataclass(frozen=True)
class BackboneLayer:
    """A layer with weights: its path under 'backbone' and its Keras layer class."""

    path: tuple[str, ...]
    keras_class: str

    @property
    def keras_name(self) -> str:
        """The Keras layer name: Keras prefixes a block's layers with the block name + '_'."""
        return "_".join(self.path)


@dataclasses.dataclass(frozen=True)
class BackboneLayout:
    """`units[0]` names the stem's top-level children, `units[i]` those of block i."""

    units: tuple[tuple[str, ...], ...]
    layers: tuple[BackboneLayer, ...]
    frozen_units: tuple[bool, ...]
    feature_channels: int  # channels of the backbone's output, the head's input
    variables: Any  # the model's variables as jax.ShapeDtypeStruct leaves


def _keras_class(module: nn.Module) -> str | None:
    if isinstance(module, nn.Conv):
        return "depthwise_conv2d" if module.feature_group_count > 1 else "conv2d"
    if isinstance(module, nn.BatchNorm):
        return "batch_normalization"
    if isinstance(module, KerasNormalization):
        return "normalization"
    return None


# Models hash by their fields (a backbone partial by identity): each is traced once.
@functools.lru_cache(maxsize=16)
def trace_backbone(model: Classifier) -> BackboneLayout:
    """The layout of `model`'s backbone, traced at the smallest input the model accepts."""
    children: list[str] = []
    layers: list[BackboneLayer] = []
    backbones: list[tuple[Backbone, int]] = []

    def record(next_fun, args, kwargs, context):
        path = context.module.path
        if context.method_name != "__call__" or path[:1] != ("backbone",):
            return next_fun(*args, **kwargs)
        if len(path) == 1:
            output = next_fun(*args, **kwargs)
            backbones.append((context.module, output.shape[-1]))
            return output
        if path[1] not in children:
            children.append(path[1])
        keras_class = _keras_class(context.module)
        if keras_class is not None:
            layers.append(BackboneLayer(path[1:], keras_class))
        return next_fun(*args, **kwargs)

    size = model.min_input_size
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    with nn.intercept_methods(record):
        variables = jax.eval_shape(lambda x: model.init(rngs, x, train=False), images)
    backbone, feature_channels = backbones[0]
    units: list[list[str]] = [[]]
    for name in children:
        if name in backbone.block_names:
            units.append([])
        units[-1].append(name)
    return BackboneLayout(
        units=tuple(tuple(u) for u in units),
        layers=tuple(layers),
        frozen_units=tuple(backbone.frozen(i) for i in range(len(units))),
        feature_channels=feature_channels,
        variables=variables,
    )
