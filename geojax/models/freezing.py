"""Frozen backbone layers on the optimiser side: 'trainable'/'frozen' labels and an optax mask.

A model built with `freeze_backbone=True` freezes its backbone except the last
`trainable_blocks` blocks (see `geojax.models.classifier.Backbone`). Frozen parameters get zero
updates through `optax.multi_transform` + `optax.set_to_zero()` (gradients still flow through
them to earlier trainable layers); the module itself keeps the BatchNorm statistics of frozen
layers fixed by running them on their averages.
"""

from typing import Any

import jax
import optax

from geojax.models.classifier import Classifier
from geojax.models.layout import trace_backbone

TRAINABLE = "trainable"
FROZEN = "frozen"


def param_labels(model: Classifier) -> Any:
    """A pytree shaped like `model`'s params: TRAINABLE or FROZEN at every leaf."""
    layout = trace_backbone(model)
    frozen_children = {
        name
        for unit, frozen in zip(layout.units, layout.frozen_units, strict=True)
        if frozen
        for name in unit
    }

    def label(path: tuple[Any, ...], _: Any) -> str:
        keys = [entry.key for entry in path]
        return FROZEN if keys[0] == "backbone" and keys[1] in frozen_children else TRAINABLE

    return jax.tree_util.tree_map_with_path(label, layout.variables["params"])


def freeze_optimizer(
    tx: optax.GradientTransformation, model: Classifier
) -> optax.GradientTransformation:
    """`tx` for the trainable parameters, zero updates (and no optimiser state) for frozen ones."""
    return optax.multi_transform({TRAINABLE: tx, FROZEN: optax.set_to_zero()}, param_labels(model))
