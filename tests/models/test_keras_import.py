"""The Flax transfer backbones against Keras: the same weights file must give the same features.

Each test builds the Keras application with random weights (TensorFlow is imported only here,
inside the tests), writes its weights in the layouts users have, imports them into Flax with
h5py and compares the backbones' outputs on the same images.
"""

import re

import h5py
import jax
import numpy as np
import pytest

from geojax.models import (
    TRANSFER_MODELS,
    create_model,
    default_model_config,
    init_variables,
    load_keras_weights,
)
from geojax.models.keras_layers import IMAGENET_STDDEV_RGB
from geojax.models.layout import trace_backbone

# 72 px gives odd feature-map sides (9 at stride 8), where Keras pads stride-2 layers
# asymmetrically.
SIZE = 72

# Keras application and the preprocessing its model leaves to the caller (None: built in).
KERAS_APPLICATIONS = {
    "resnet50": ("ResNet50", "resnet"),
    "resnet101": ("ResNet101", "resnet"),
    "efficientnet_b0": ("EfficientNetB0", None),
    "efficientnet_b3": ("EfficientNetB3", None),
    "mobilenet_v2": ("MobileNetV2", "mobilenet_v2"),
    "mobilenet_v3_small": ("MobileNetV3Small", None),
    "mobilenet_v3_large": ("MobileNetV3Large", None),
}


@pytest.fixture(scope="module")
def keras():
    import keras

    return keras


def build_keras_model(keras, name: str, include_top: bool = False):
    """The Keras application with random weights, BatchNorm and Normalization ones included."""
    application = getattr(keras.applications, KERAS_APPLICATIONS[name][0])
    model = application(include_top=include_top, weights=None, input_shape=(SIZE, SIZE, 3))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        values = []
        for variable, value in zip(layer.weights, layer.get_weights(), strict=True):
            if variable.name in ("gamma", "moving_variance", "variance"):
                value = rng.uniform(0.5, 1.5, value.shape)
            elif variable.name in ("beta", "moving_mean", "mean", "bias"):
                value = rng.normal(0.0, 0.2, value.shape)
            values.append(value.astype(np.float32))
        if values:
            layer.set_weights(values)
        if isinstance(layer, keras.layers.Normalization):
            layer.finalize_state()  # recompute the constants it normalises with
    return model


def keras_features(keras, name: str, model, images: np.ndarray) -> np.ndarray:
    x = images * 255.0
    preprocessing = KERAS_APPLICATIONS[name][1]
    if preprocessing:
        x = getattr(keras.applications, preprocessing).preprocess_input(x)
    return np.asarray(model(x, training=False))


def tf_keras_mobilenet_v3_name(name: str) -> str:
    """tf.keras 2 named MobileNetV3's layers 'Conv/BatchNorm', 'expanded_conv_1/expand', ..."""
    block = re.fullmatch(
        r"(expanded_conv(?:_\d+)?)_(expand|depthwise|project|squeeze_excite_conv(?:_1)?)(_bn)?",
        name,
    )
    if block:
        prefix, part, bn = block.groups()
        part = part.replace("squeeze_excite_conv", "squeeze_excite/Conv")
        return f"{prefix}/{part}" + ("/BatchNorm" if bn else "")
    top = re.fullmatch(r"conv(_1|_2)?(_bn)?", name)
    if top:
        return "Conv" + (top[1] or "") + ("/BatchNorm" if top[2] else "")
    return {"logits": "Logits"}.get(name, name)


def write_tf_keras_h5(keras, model, path, rename=lambda name: name) -> None:
    """The layout of the files keras.applications downloads (written by tf.keras 2): weights at
    the root, groups by layer name ('/' nests them), weight names ending in ':0'."""
    names = [rename(layer.name) for layer in model.layers]
    with h5py.File(path, "w") as f:
        # np.asarray, as Keras does: fixed-length byte strings (a list would be stored as str).
        f.attrs["layer_names"] = np.asarray([n.encode() for n in names])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.4.0"
        for layer, name in zip(model.layers, names, strict=True):
            group = f.require_group(name)
            weights = layer.trainable_weights + layer.non_trainable_weights
            depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
            weight_names = [
                f"{name}/{'depthwise_kernel' if depthwise and w.name == 'kernel' else w.name}:0"
                for w in weights
            ]
            group.attrs["weight_names"] = np.asarray([n.encode() for n in weight_names])
            for weight_name, weight in zip(weight_names, weights, strict=True):
                group.create_dataset(weight_name, data=np.asarray(weight))


def flax_model(name: str):
    """The Flax model at SIZE and its variables' shapes."""
    config = default_model_config(name)
    config.input_size = SIZE
    model = create_model(config)
    return model, trace_backbone(model).variables


def backbone_variables(variables):
    return {collection: tree["backbone"] for collection, tree in variables.items()}


def assert_same_backbone(a, b) -> None:
    equal = jax.tree.map(np.array_equal, backbone_variables(a), backbone_variables(b))
    assert all(jax.tree.leaves(equal))


@pytest.mark.parametrize("name", TRANSFER_MODELS)
def test_keras_weights_give_the_keras_features(keras, name, tmp_path):
    keras_model = build_keras_model(keras, name)
    images = np.random.default_rng(1).uniform(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    expected = keras_features(keras, name, keras_model, images)
    keras_model.save_weights(tmp_path / "keras3.weights.h5")
    rename = tf_keras_mobilenet_v3_name if name.startswith("mobilenet_v3") else lambda n: n
    write_tf_keras_h5(keras, keras_model, tmp_path / "tf_keras.h5", rename)

    model, shapes = flax_model(name)
    variables = load_keras_weights(shapes, model, tmp_path / "keras3.weights.h5")
    backbone = model.backbone()
    with jax.default_matmul_precision("highest"):
        features = jax.jit(lambda v, x: backbone.apply(v, x, train=False))(
            backbone_variables(variables), images
        )
    assert features.shape == expected.shape
    error = np.abs(np.asarray(features) - expected).max() / np.abs(expected).max()
    print(f"{name}: max relative error {error:.2e}")
    assert error <= 1e-4

    assert_same_backbone(load_keras_weights(shapes, model, tmp_path / "tf_keras.h5"), variables)

    if name == "efficientnet_b0":
        # Keras' ImageNet files store the RGB standard deviations where variances belong.
        with h5py.File(tmp_path / "tf_keras.h5", "r+") as f:
            names = [n.decode() for n in f.attrs["layer_names"]]
            group = f[next(n for n in names if n.startswith("normalization"))]
            group[group.attrs["weight_names"][1].decode()][...] = IMAGENET_STDDEV_RGB
        fixed = load_keras_weights(shapes, model, tmp_path / "tf_keras.h5")
        np.testing.assert_allclose(
            fixed["batch_stats"]["backbone"]["normalization"]["variance"],
            np.square(IMAGENET_STDDEV_RGB),
            rtol=1e-6,
        )


def test_every_layout_loads_and_mismatches_name_the_layer(keras, tmp_path):
    # With its classification top, as `weights='imagenet', include_top=True` files have it.
    keras_model = build_keras_model(keras, "mobilenet_v3_small", include_top=True)
    keras_model.save_weights(tmp_path / "keras3.weights.h5")
    keras_model.save(tmp_path / "full_model.h5")
    write_tf_keras_h5(keras, keras_model, tmp_path / "tf_keras.h5", tf_keras_mobilenet_v3_name)

    config = default_model_config("mobilenet_v3_small")
    config.input_size = SIZE
    config.pretrained = str(tmp_path / "tf_keras.h5")
    model = create_model(config)
    variables = init_variables(model, config, jax.random.key(0))
    shapes = trace_backbone(model).variables
    assert jax.tree.structure(variables) == jax.tree.structure(shapes)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(variables))
    for layout in ("keras3.weights.h5", "full_model.h5"):
        assert_same_backbone(load_keras_weights(variables, model, tmp_path / layout), variables)
    kernel = keras_model.get_layer("expanded_conv_depthwise").get_weights()[0]
    np.testing.assert_array_equal(
        variables["params"]["backbone"]["expanded_conv"]["depthwise"]["kernel"],
        np.swapaxes(kernel, 2, 3),
    )

    large, large_shapes = flax_model("mobilenet_v3_large")
    with pytest.raises(ValueError, match=r"layer 'expanded_conv_\w+'.* another architecture"):
        load_keras_weights(large_shapes, large, tmp_path / "keras3.weights.h5")
    with h5py.File(tmp_path / "tf_keras.h5", "r+") as f:
        f.attrs["layer_names"] = np.asarray(
            [n for n in f.attrs["layer_names"] if n != b"expanded_conv_3/project"]
        )
    with pytest.raises(ValueError, match="no weights for layer 'expanded_conv_3_project'"):
        load_keras_weights(variables, model, tmp_path / "tf_keras.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a Keras weights file"):
        load_keras_weights(variables, model, tmp_path / "other.h5")
    with pytest.raises(FileNotFoundError, match="or to None for random init"):
        load_keras_weights(variables, model, tmp_path / "missing.h5")
