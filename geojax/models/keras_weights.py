"""Loads Keras weights files into a transfer model's backbone, reading HDF5 with h5py alone.

The training process must not import TensorFlow (on a GPU it takes the memory JAX needs), so
the file is read directly. Two layouts are understood:

- legacy HDF5, what `keras.applications.X(weights='imagenet')` downloads (e.g.
  `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`) and what `model.save('m.h5')` writes:
  layers are found by their Keras names (the old '/'-separated MobileNetV3 names included);
- Keras 3 `.weights.h5` from `model.save_weights`: layers carry no names there, only their class
  and position among the model's layers of that class, so they are matched in that order.

Layers a classification top adds after the backbone ('predictions', MobileNetV3's 'conv_2' and
'logits') are ignored; any other difference between file and model raises ValueError naming
the layer.
"""

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import h5py
import jax.numpy as jnp
import numpy as np

from geojax.models.classifier import Classifier
from geojax.models.keras_layers import IMAGENET_STDDEV_RGB
from geojax.models.layout import BackboneLayer, trace_backbone

log = logging.getLogger(__name__)

# Order of a layer's variables in a Keras 3 weights file, by layer class.
_KERAS3_VARIABLES = {
    "conv2d": ("kernel", "bias"),
    "depthwise_conv2d": ("kernel", "bias"),
    "dense": ("kernel", "bias"),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "normalization": ("mean", "variance", "count"),
}


@dataclasses.dataclass(eq=False)
class _FileLayer:
    """A layer with weights in the file: its name (legacy) or class (Keras 3) and position."""

    label: str
    position: int
    weights: dict[str, np.ndarray]


def _canonical(name: str) -> str:
    # tf.keras named MobileNetV3's layers 'Conv/BatchNorm', 'expanded_conv_1/expand', ...;
    # Keras 3 calls them 'conv_bn', 'expanded_conv_1_expand'.
    return name.lower().replace("/batchnorm", "_bn").replace("/", "_")


def _short_weight_name(name: str) -> str:
    # 'block1a_dwconv/depthwise_kernel:0' (Keras 2) or 'block1a_dwconv/kernel' (Keras 3).
    short = name.rsplit("/", 1)[-1].split(":")[0]
    return "kernel" if short == "depthwise_kernel" else short


def _text_attribute(group: h5py.Group, name: str) -> list[str]:
    # Keras splits attributes over 64 KiB into name0, name1, ...
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks = []
        while f"{name}{len(chunks)}" in group.attrs:
            chunks.append(group.attrs[f"{name}{len(chunks)}"])
    return [v.decode() if isinstance(v, bytes) else str(v) for chunk in chunks for v in chunk]


def _read_legacy(group: h5py.Group) -> list[_FileLayer]:
    layers = []
    for position, name in enumerate(_text_attribute(group, "layer_names")):
        weight_names = _text_attribute(group[name], "weight_names")
        if weight_names:
            weights = {_short_weight_name(w): np.asarray(group[name][w]) for w in weight_names}
            layers.append(_FileLayer(_canonical(name), position, weights))
    return layers


def _read_keras3(group: h5py.Group, path: str) -> list[_FileLayer]:
    layers = []
    for key, entry in group.items():
        if "layers" in entry:
            raise ValueError(
                f"{path} holds a model nested inside another ('layers/{key}'): save the weights"
                " of the Keras application itself (e.g. `base_model.save_weights(...)`)"
            )
        variables = entry["vars"]
        if len(variables) == 0:
            continue
        match = re.fullmatch(r"(.+?)(?:_(\d+))?", key)
        assert match is not None  # any non-empty name matches; HDF5 names are non-empty
        keras_class, index = match.groups()
        names = _KERAS3_VARIABLES.get(keras_class, ())
        weights = {
            names[i] if i < len(names) else str(i): np.asarray(variables[str(i)])
            for i in range(len(variables))
        }
        layers.append(_FileLayer(keras_class, int(index or 0), weights))
    return layers


def _match_by_name(
    layers: tuple[BackboneLayer, ...], file_layers: list[_FileLayer], path: str
) -> dict[BackboneLayer, _FileLayer]:
    by_name = {f.label: f for f in file_layers}
    matches = {}
    for layer in layers:
        if layer.keras_class == "normalization":
            # Keras numbers unnamed layers per session ('normalization_3'): find it by its weights.
            candidates = [f for f in file_layers if {"mean", "variance"} <= f.weights.keys()]
            found = candidates[0] if len(candidates) == 1 else None
        else:
            found = by_name.get(_canonical(layer.keras_name))
        if found is None:
            raise ValueError(
                f"{path} has no weights for layer '{layer.keras_name}' of this model: it is the"
                " weights file of another architecture, or of a model without that layer"
            )
        matches[layer] = found
    last_matched = max(f.position for f in matches.values())
    matched = set(matches.values())
    for f in file_layers:
        if f not in matched and f.position < last_matched:
            raise ValueError(
                f"{path} has a layer '{f.label}' inside the backbone that this model lacks:"
                " it is the weights file of another architecture"
            )
    return matches


def _match_by_position(
    layers: tuple[BackboneLayer, ...], file_layers: list[_FileLayer], path: str
) -> dict[BackboneLayer, _FileLayer]:
    by_class: dict[str, list[_FileLayer]] = {}
    for f in sorted(file_layers, key=lambda f: f.position):
        by_class.setdefault(f.label, []).append(f)
    matches = {}
    seen: dict[str, int] = {}
    for layer in layers:
        index = seen.get(layer.keras_class, 0)
        seen[layer.keras_class] = index + 1
        candidates = by_class.get(layer.keras_class, [])
        if index >= len(candidates):
            raise ValueError(
                f"{path} has {len(candidates)} '{layer.keras_class}' layers; layer"
                f" '{layer.keras_name}' of this model is number {index + 1}: the file belongs to"
                " another architecture"
            )
        matches[layer] = candidates[index]
    return matches


def _flax_values(layer: BackboneLayer, weights: dict[str, np.ndarray]) -> dict[tuple, np.ndarray]:
    """The file's weights of `layer` as {(collection, variable name): value}."""
    if layer.keras_class == "batch_normalization":
        names = {
            "gamma": ("params", "scale"),
            "beta": ("params", "bias"),
            "moving_mean": ("batch_stats", "mean"),
            "moving_variance": ("batch_stats", "var"),
        }
        return {target: weights[name] for name, target in names.items() if name in weights}
    if layer.keras_class == "normalization":
        variance = weights["variance"]
        if np.allclose(variance, IMAGENET_STDDEV_RGB, rtol=0, atol=1e-6):
            # Keras' ImageNet EfficientNet files store the standard deviations as variances
            # (tensorflow/tensorflow#49930); Keras compensates with an extra Rescaling layer
            # when built with weights='imagenet'. Use the true variances instead.
            log.info(
                "%s: squaring the ImageNet standard deviations stored as variances",
                layer.keras_name,
            )
            variance = np.square(variance)
        return {("batch_stats", "mean"): weights["mean"], ("batch_stats", "variance"): variance}
    values = {("params", name): weights[name] for name in ("kernel", "bias") if name in weights}
    if layer.keras_class == "depthwise_conv2d":
        # Keras: (h, w, channels, multiplier); Flax grouped conv: (h, w, 1, channels).
        values["params", "kernel"] = np.swapaxes(values["params", "kernel"], 2, 3)
    return values


def _copy_containers(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {key: _copy_containers(value) for key, value in tree.items()}
    return tree


def load_keras_weights(
    variables: Mapping[str, Any], model: Classifier, path: str | os.PathLike
) -> dict[str, Any]:
    """`variables` with the backbone's params and batch_stats read from a Keras weights file.

    `variables` are `model`'s ({'params', 'batch_stats'} from `model.init`, or their shapes
    from `jax.eval_shape`); the head keeps its values. Raises FileNotFoundError if `path` is missing, ValueError if the file does not
    fit the backbone (the message names the layer).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"pretrained weights file {path} does not exist: set model.pretrained to a Keras"
            " weights file (.h5 / .weights.h5) of this architecture, or to None for random init"
        )
    layout = trace_backbone(model)
    with h5py.File(path, "r") as f:
        if "layer_names" in f.attrs or "layer_names0" in f.attrs:
            matches = _match_by_name(layout.layers, _read_legacy(f), path)
        elif "model_weights" in f:
            matches = _match_by_name(layout.layers, _read_legacy(f["model_weights"]), path)
        elif "layers" in f:
            matches = _match_by_position(layout.layers, _read_keras3(f["layers"], path), path)
        else:
            raise ValueError(
                f"{path} is not a Keras weights file: expected the legacy HDF5 layout (a"
                " 'layer_names' attribute) or a Keras 3 .weights.h5 file (a 'layers' group)"
            )
    loaded = _copy_containers(variables)
    for layer, file_layer in matches.items():
        values = _flax_values(layer, file_layer.weights)
        for collection in ("params", "batch_stats"):
            targets = loaded.get(collection, {}).get("backbone", {})
            for name in layer.path:
                targets = targets.get(name, {})
            expected = {(collection, n) for n in targets}
            provided = {key for key in values if key[0] == collection}
            if expected != provided:
                raise ValueError(
                    f"layer '{layer.keras_name}' in {path} has weights"
                    f" {sorted(n for _, n in provided)} in '{collection}', this model expects"
                    f" {sorted(n for _, n in expected)}: the file belongs to another architecture"
                )
            for _, name in provided:
                value = values[collection, name]
                if value.shape != targets[name].shape:
                    raise ValueError(
                        f"layer '{layer.keras_name}' weight '{name}' in {path} has shape"
                        f" {value.shape}, this model expects {targets[name].shape}: the file"
                        " belongs to another architecture or width"
                    )
                targets[name] = jnp.asarray(value, targets[name].dtype)
    return loaded
