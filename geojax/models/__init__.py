"""geojax.models: the networks, chosen by name from an ml_collections model config.

    config = default_model_config("efficientnet_b0")       # every field the model reads
    config.pretrained = "/path/efficientnetb0_notop.h5"     # optional Keras ImageNet weights
    model = create_model(config)                            # a flax.linen Module
    variables = init_variables(model, config, jax.random.key(0))   # {'params', 'batch_stats'}
    tx = freeze_optimizer(optax.adamw(1e-3), model)         # honours config.freeze_backbone

Every model takes float32 RGB images in [0, 1], [N, H, W, 3], and returns float32 logits
[N, num_classes]; `apply(..., train=True, rngs={'dropout': key}, mutable=['batch_stats'])` trains.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from geojax import NUM_CLASSES
from geojax.models.classifier import POOLS, TTAS, Classifier, ModuleDef, classifier_head
from geojax.models.conv import Conv as GemmWeightGradConv
from geojax.models.efficientnet import B0, B3, KerasEfficientNet
from geojax.models.freezing import freeze_optimizer, param_labels
from geojax.models.keras_weights import load_keras_weights
from geojax.models.layout import trace_backbone
from geojax.models.light import LightCNNBackbone
from geojax.models.mobilenet import KerasMobileNetV2, KerasMobileNetV3
from geojax.models.resnet import RESNET50_DEPTHS, RESNET101_DEPTHS, KerasResNet
from geojax.models.se_resnet import SEResNetBackbone

__all__ = [
    "CONV_LAYERS",
    "MODEL_NAMES",
    "TRANSFER_MODELS",
    "Classifier",
    "create_model",
    "default_model_config",
    "freeze_optimizer",
    "init_variables",
    "load_keras_weights",
    "param_labels",
]

# Keras-architecture backbones: they accept the Keras applications' ImageNet weights.
TRANSFER_MODELS = (
    "resnet50",
    "resnet101",
    "efficientnet_b0",
    "efficientnet_b3",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
)
MODEL_NAMES = ("se_resnet", "light", *TRANSFER_MODELS)

# The convolution layers `config.conv` can name for se_resnet and light: modules with
# `flax.linen.Conv`'s call signature and parameter names.
# "gemm_wgrad" (the default) computes the weight gradient as matrix products on CPU (1.7x faster
# train steps on XLA:CPU, see BENCHMARKS.md) and is plain lax elsewhere; same parameters and
# checkpoints as "flax", which stays selectable (`--config.model.conv=flax`).
CONV_LAYERS: dict[str, ModuleDef] = {"flax": nn.Conv, "gemm_wgrad": GemmWeightGradConv}


def default_model_config(name: str) -> ml_collections.ConfigDict:
    """Every field `create_model` reads for model `name`, at its defaults."""
    _check_name(name)
    config = ml_collections.ConfigDict()
    config.name = name
    config.num_classes = NUM_CLASSES
    config.input_size = {"light": 64, "efficientnet_b3": 300}.get(name, 224)
    config.dtype = "float32"  # compute dtype; parameters are always float32
    # Set to the data-parallel mesh axis ('data') to average BatchNorm statistics over it.
    config.bn_axis_name = ml_collections.config_dict.placeholder(str)
    # A Keras weights file (.h5 / .weights.h5) for the transfer backbones; None = random init.
    config.pretrained = ml_collections.config_dict.placeholder(str)
    # freeze_backbone: freeze the backbone except its last `trainable_blocks` blocks.
    config.freeze_backbone = False
    config.trainable_blocks = 0
    config.head_widths = (512, 256)
    config.head_dropout = (0.3, 0.15)
    config.head_batch_norm = name in TRANSFER_MODELS
    # Global pooling of the last feature map: "avg", or "avgmax" (average and maximum side by
    # side: a shape covering a few cells of the map is not averaged away by the background).
    config.pool = "avg"
    # Test-time augmentation: "d4" averages the logits over the input's 8 rotations by quarter
    # turns and mirror images (every class is closed under them) at 8x the inference cost.
    config.tta = "none"
    if name == "se_resnet":
        config.conv = "gemm_wgrad"
        config.width = 1.0
        config.stem_width = 64
        config.stage_widths = (64, 128, 256, 512)
        config.stage_depths = (2, 3, 4, 3)
        config.se_reduction = 16
        # The seed's 0.3 after every block stalls training (loss stays at ln 10; DESIGN.md);
        # rendered data never repeats, so no dropout is needed against overfitting.
        config.block_dropout = 0.0
    elif name == "light":
        config.conv = "gemm_wgrad"
        config.width = 1.0
        config.stage_widths = (32, 64, 128, 256)
        config.convs_per_stage = 2
        config.patch = 1  # > 1: space-to-depth by this factor before the stages
        config.head_widths = (128,)
        config.head_dropout = (0.2,)
    elif name.startswith("efficientnet"):
        config.drop_connect_rate = 0.2
    elif name.startswith("mobilenet"):
        config.alpha = 1.0
    return config


def create_model(model_config: ml_collections.ConfigDict) -> Classifier:
    """The model `model_config.name` names, configured by the rest of `model_config`.

    Fields missing from `model_config` take their defaults; unknown fields, unknown names and
    unusable values raise ValueError saying what is valid.
    """
    config = _complete(model_config)
    if len(config.head_widths) != len(config.head_dropout):
        raise ValueError(
            f"head_widths {tuple(config.head_widths)} and head_dropout"
            f" {tuple(config.head_dropout)} need one dropout rate per hidden layer"
        )
    if config.trainable_blocks < 0:
        raise ValueError(f"trainable_blocks must be >= 0, got {config.trainable_blocks}")
    if "width" in config and not config.width > 0:
        raise ValueError(f"width must be > 0 (a multiplier of the stage widths), got "
                         f"{config.width}")
    if config.pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {config.pool!r}")
    if config.tta not in TTAS:
        raise ValueError(f"tta must be one of {', '.join(TTAS)}, got {config.tta!r}")
    if "patch" in config and config.patch < 1:
        raise ValueError(f"patch must be >= 1 (1: no space-to-depth), got {config.patch}")
    if any(w < 1 for w in config.head_widths) or any(
            not 0 <= d < 1 for d in config.head_dropout):
        raise ValueError(f"head_widths must be >= 1 and head_dropout in [0, 1), got "
                         f"{tuple(config.head_widths)} and {tuple(config.head_dropout)}")
    dtype = jnp.dtype(config.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a float type such as 'bfloat16', got {config.dtype!r}")
    model = Classifier(
        backbone=_backbone(config),
        num_classes=config.num_classes,
        head_widths=tuple(config.head_widths),
        head_dropout=tuple(config.head_dropout),
        head_batch_norm=config.head_batch_norm,
        dtype=dtype,
        bn_axis_name=config.bn_axis_name,
        freeze_backbone=config.freeze_backbone,
        trainable_blocks=config.trainable_blocks,
        pool=config.pool,
        tta=config.tta,
    )
    if config.input_size < model.min_input_size:
        raise ValueError(
            f"input_size {config.input_size} is too small for {config.name}: its downsampling"
            f" needs images of at least {model.min_input_size} px"
            f" (default {default_model_config(config.name).input_size})"
        )
    return model


def init_variables(
    model: Classifier, model_config: ml_collections.ConfigDict, rng: jax.Array
) -> dict[str, Any]:
    """`model`'s initial {'params', 'batch_stats'}, the backbone from `pretrained` if set."""
    config = _complete(model_config)
    if config.pretrained and config.name not in TRANSFER_MODELS:
        raise ValueError(
            f"pretrained Keras weights exist only for {', '.join(TRANSFER_MODELS)};"
            f" set pretrained=None for {config.name}"
        )
    params_rng, dropout_rng = jax.random.split(rng)
    rngs = {"params": params_rng, "dropout": dropout_rng}
    if not config.pretrained:
        size = config.input_size
        images = jnp.zeros((1, size, size, 3), jnp.float32)
        return jax.jit(functools.partial(model.init, train=False))(rngs, images)
    # Only the head needs random values: initialising the backbone too would cost a compile
    # of its random initialisers (tens of seconds on CPU for the deep ones) for nothing.
    layout = trace_backbone(model)
    variables = load_keras_weights(layout.variables, model, config.pretrained)
    features = jnp.zeros((1, layout.feature_channels), jnp.float32)
    head = jax.jit(functools.partial(classifier_head(model).init, train=False))(rngs, features)
    for collection, tree in head.items():
        variables[collection]["head"] = tree
    return variables


def _check_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")


def _complete(model_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`model_config` over its model's defaults; unknown fields raise ValueError."""
    config = default_model_config(model_config.name)
    unknown = sorted(set(model_config.keys()) - set(config.keys()))
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(unknown)} for model {model_config.name!r};"
            f" valid fields: {', '.join(sorted(config.keys()))}"
        )
    for key in model_config:
        config[key] = model_config[key]
    return config


def _conv_layer(name: str) -> ModuleDef:
    if name not in CONV_LAYERS:
        raise ValueError(f"unknown conv {name!r}; valid: {', '.join(CONV_LAYERS)}")
    return CONV_LAYERS[name]


def _backbone(config: ml_collections.ConfigDict) -> ModuleDef:
    name = config.name
    if name == "se_resnet":
        return functools.partial(
            SEResNetBackbone,
            conv=_conv_layer(config.conv),
            width=config.width,
            stem_width=config.stem_width,
            stage_widths=tuple(config.stage_widths),
            stage_depths=tuple(config.stage_depths),
            se_reduction=config.se_reduction,
            block_dropout=config.block_dropout,
        )
    if name == "light":
        return functools.partial(
            LightCNNBackbone,
            conv=_conv_layer(config.conv),
            width=config.width,
            stage_widths=tuple(config.stage_widths),
            convs_per_stage=config.convs_per_stage,
            patch=config.get("patch", 1),
        )
    if name in ("resnet50", "resnet101"):
        depths = RESNET50_DEPTHS if name == "resnet50" else RESNET101_DEPTHS
        return functools.partial(KerasResNet, stage_depths=depths)
    if name in ("efficientnet_b0", "efficientnet_b3"):
        return functools.partial(
            KerasEfficientNet,
            coefficients=B0 if name == "efficientnet_b0" else B3,
            drop_connect_rate=config.drop_connect_rate,
        )
    if name == "mobilenet_v2":
        return functools.partial(KerasMobileNetV2, alpha=config.alpha)
    return functools.partial(
        KerasMobileNetV3, large=name == "mobilenet_v3_large", alpha=config.alpha
    )
