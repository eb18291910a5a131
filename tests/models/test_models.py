"""Tests for geojax.models: shapes, train/eval behaviour, dtypes, freezing, errors, synced BN."""

import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from geojax.models import (
    CONV_LAYERS,
    MODEL_NAMES,
    create_model,
    default_model_config,
    freeze_optimizer,
    init_variables,
    param_labels,
)
from geojax.models.freezing import FROZEN, TRAINABLE


def key(seed: int) -> jax.Array:
    # XLA compiles the RBG generator several times faster than threefry on CPU, and random
    # initialisers dominate these tests' compile time.
    return jax.random.key(seed, impl="rbg")


def tiny_config(name: str, **overrides):
    """A small, fast variant of `name` (the CPU tests' stand-in for the full model)."""
    config = default_model_config(name)
    config.input_size = 32
    if name == "se_resnet":
        config.width = 0.125
        config.stage_depths = (1, 1, 1, 1)
        config.head_widths = (16, 8)
    elif name == "light":
        config.width = 0.25
        config.head_widths = (16,)
    for field, value in overrides.items():
        config[field] = value
    return config


def images(n: int, size: int, seed: int = 0) -> jax.Array:
    return jax.random.uniform(key(seed), (n, size, size, 3))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_maps_images_to_logits_at_its_default_size(name):
    config = default_model_config(name)
    model = create_model(config)
    size = config.input_size
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    rngs = {"params": key(0), "dropout": key(1)}
    variables = jax.eval_shape(lambda x: model.init(rngs, x, train=False), x)
    assert set(variables) == {"params", "batch_stats"}
    assert set(variables["params"]) == {"backbone", "head"}
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    logits, updates = jax.eval_shape(
        lambda v, x: model.apply(
            v, x, train=True, rngs={"dropout": key(2)}, mutable=["batch_stats"]
        ),
        variables,
        x,
    )
    assert (logits.shape, logits.dtype) == ((2, 10), jnp.float32)
    assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(
        variables["batch_stats"]
    )


def numpy_variables(model, size: int, seed: int = 0):
    """Random variables for `model` drawn by NumPy: XLA compiles random initialisers slowly."""
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init(key(0), x), x)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if path[-1].key in ("var", "scale"):
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return rng.normal(0.0, 0.2, leaf.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def se_resnet_variables():
    """Variables of the tiny SE-ResNet (freezing does not change their structure)."""
    return numpy_variables(create_model(tiny_config("se_resnet")), 32)


def test_batchnorm_and_dropout_act_only_in_training(se_resnet_variables):
    model, variables = create_model(tiny_config("se_resnet")), se_resnet_variables
    x = images(2, 32)
    apply = jax.jit(model.apply, static_argnames=("train", "mutable"))

    first, second = apply(variables, x), apply(variables, x)
    np.testing.assert_array_equal(first, second)
    _, eval_updates = apply(variables, x, train=False, mutable=("batch_stats",))
    assert jax.tree.all(
        jax.tree.map(np.array_equal, eval_updates["batch_stats"], variables["batch_stats"])
    )

    def train(seed):
        return apply(
            variables, x, train=True, rngs={"dropout": key(seed)}, mutable=("batch_stats",)
        )

    (a, updates), (b, _), (a_again, _) = train(1), train(2), train(1)
    assert not np.allclose(a, b), "dropout keys must change training outputs"
    np.testing.assert_array_equal(a, a_again)
    changed = jax.tree.map(
        lambda new, old: not np.allclose(new, old),
        updates["batch_stats"],
        variables["batch_stats"],
    )
    assert all(jax.tree.leaves(changed)), "training must update every BatchNorm statistic"


def test_bfloat16_compute_keeps_float32_params_and_logits():
    config = tiny_config("light", dtype="bfloat16")
    model = create_model(config)
    variables = init_variables(model, config, key(0))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    logits = jax.jit(model.apply)(variables, images(2, 32))
    assert logits.dtype == jnp.float32 and np.isfinite(logits).all()
    backbone = model.backbone(dtype=jnp.bfloat16)
    features = jax.eval_shape(
        lambda v, x: backbone.apply(v, x, train=False),
        {k: v["backbone"] for k, v in variables.items()},
        images(2, 32),
    )
    assert features.dtype == jnp.bfloat16


def test_frozen_layers_keep_params_and_batchnorm_statistics(se_resnet_variables):
    model = create_model(tiny_config("se_resnet", freeze_backbone=True, trainable_blocks=1))
    variables = se_resnet_variables
    params = variables["params"]
    tx = freeze_optimizer(optax.sgd(0.1), model)
    x, labels = images(4, 32), jnp.arange(4)

    @jax.jit
    def step(params, opt_state):
        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": variables["batch_stats"]},
                x,
                train=True,
                rngs={"dropout": key(1)},
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, updates

        grads, updates = jax.grad(loss_fn, has_aux=True)(params)
        steps, _ = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, steps), updates

    new_params, updates = step(params, tx.init(params))

    backbone = params["backbone"]
    assert {k for k in backbone if "stage4" not in k} == {
        "stem_conv",
        "stem_bn",
        "stage1_block1",
        "stage2_block1",
        "stage3_block1",
    }
    for part, old in backbone.items():
        same = jax.tree.leaves(jax.tree.map(np.array_equal, new_params["backbone"][part], old))
        assert all(same) if part != "stage4_block1" else not any(same), part
    assert not any(
        jax.tree.leaves(jax.tree.map(np.array_equal, new_params["head"], params["head"]))
    )

    stats, old_stats = updates["batch_stats"]["backbone"], variables["batch_stats"]["backbone"]
    for part in old_stats:
        same = jax.tree.leaves(jax.tree.map(np.array_equal, stats[part], old_stats[part]))
        assert all(same) if part != "stage4_block1" else not any(same), part


def test_param_labels_freeze_all_but_the_last_blocks():
    def frozen_parts(name, trainable_blocks):
        config = default_model_config(name)
        config.freeze_backbone, config.trainable_blocks = True, trainable_blocks
        labels = param_labels(create_model(config))
        assert set(jax.tree.leaves(labels["head"])) == {TRAINABLE}
        parts = {k: set(jax.tree.leaves(v)) for k, v in labels["backbone"].items()}
        assert all(len(part_labels) == 1 for part_labels in parts.values())
        return {k for k, v in parts.items() if v == {FROZEN}}, set(parts)

    frozen, parts = frozen_parts("resnet50", 3)
    assert parts - frozen == {"conv5_block1", "conv5_block2", "conv5_block3"}
    frozen, parts = frozen_parts("efficientnet_b0", 1)
    assert parts - frozen == {"block7a", "top_conv", "top_bn"}
    frozen, parts = frozen_parts("mobilenet_v2", 0)
    assert frozen == parts
    unfrozen = param_labels(create_model(default_model_config("mobilenet_v3_small")))
    assert set(jax.tree.leaves(unfrozen)) == {TRAINABLE}


def test_conv_layer_is_swappable_in_se_resnet_and_light():
    calls = []

    class RecordingConv(nn.Conv):
        def __call__(self, inputs):
            calls.append(self.name)
            return super().__call__(inputs)

    CONV_LAYERS["recording"] = RecordingConv
    try:
        for name in ("se_resnet", "light"):
            calls.clear()
            model = create_model(tiny_config(name, conv="recording"))
            x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
            variables = jax.eval_shape(lambda x, model=model: model.init(key(0), x), x)
            kernels = [
                path
                for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"])
                if path[-1].key == "kernel" and leaf.ndim == 4
            ]
            assert len(calls) == len(kernels) > 0
    finally:
        del CONV_LAYERS["recording"]


def test_bad_names_fields_and_sizes_fail_with_what_is_valid():
    with pytest.raises(ValueError, match="unknown model 'vgg16'; valid names: se_resnet, light"):
        default_model_config("vgg16")
    with pytest.raises(ValueError, match=r"input_size 16 is too small for resnet50.*at least 32"):
        create_model(tiny_config("resnet50", input_size=16))
    with pytest.raises(ValueError, match="at least 32 px"):
        create_model(tiny_config("se_resnet", input_size=31))
    config = tiny_config("light")
    config.widht = 2.0
    with pytest.raises(ValueError, match="unknown field.*widht.*valid fields"):
        create_model(config)
    with pytest.raises(ValueError, match="unknown conv 'cudnn'; valid: flax"):
        create_model(tiny_config("light", conv="cudnn"))
    with pytest.raises(ValueError, match="one dropout rate per hidden layer"):
        create_model(tiny_config("light", head_dropout=(0.1, 0.2)))
    with pytest.raises(ValueError, match="pretrained Keras weights exist only for resnet50"):
        init_variables(
            create_model(tiny_config("light")),
            tiny_config("light", pretrained="x.h5"),
            key(0),
        )
    model = create_model(tiny_config("mobilenet_v3_small"))
    with pytest.raises(ValueError, match="20x20 px are too small.*at least 32 px"):
        jax.eval_shape(model.init, key(0), jnp.zeros((1, 20, 20, 3)))
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        jax.eval_shape(model.init, key(0), jnp.zeros((1, 32, 32)))


_SYNC_BN_CHECK = """
    import jax, numpy as np
    from jax.sharding import PartitionSpec as P
    from geojax.models import create_model, default_model_config

    assert jax.device_count() == 2, jax.devices()
    config = default_model_config("light")
    config.update(dict(input_size=32, width=0.25, head_widths=(16,), head_dropout=(0.0,),
                       head_batch_norm=True))
    single = create_model(config)
    config.bn_axis_name = "data"
    synced = create_model(config)
    x = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype(np.float32)
    # Positive values everywhere keep BatchNorm variances valid; no random-init compile needed.
    shapes = jax.eval_shape(single.init, jax.random.key(0), x)
    variables = jax.tree.map(
        lambda s: np.random.default_rng(s.size).uniform(0.5, 1.5, s.shape).astype(s.dtype),
        shapes,
    )

    def train(model):
        return lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])

    expected = jax.jit(train(single))(variables, x)
    mesh = jax.make_mesh((2,), ("data",))
    x = jax.device_put(x, jax.NamedSharding(mesh, P("data")))
    got = jax.jit(jax.shard_map(train(synced), mesh=mesh, in_specs=(P(), P("data")),
                                out_specs=(P("data"), P())))(variables, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    print("synced")
"""


def test_batchnorm_statistics_are_global_under_shard_map():
    # A fresh process: the number of CPU devices is fixed when JAX starts.
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SYNC_BN_CHECK)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "synced" in result.stdout, result.stderr[-3000:]


def test_light_patches_are_space_to_depth_and_halve_the_stages_resolution():
    from geojax.models.light import LightCNNBackbone

    x = images(2, 32)
    backbone = LightCNNBackbone(width=0.25, patch=2)
    variables = backbone.init(key(0), x, train=False)
    # The first convolution reads 2x2 patches of RGB: 12 channels.
    assert variables["params"]["stage1"]["conv1"]["kernel"].shape[2] == 12
    out = backbone.apply(variables, x, train=False)
    assert out.shape[1:3] == (1, 1)  # 32 px / 2 / 2^4
    whole = LightCNNBackbone(width=0.25).apply(
        LightCNNBackbone(width=0.25).init(key(0), x, train=False), x, train=False)
    assert whole.shape[1:3] == (2, 2)
    assert backbone.min_input_size == 32


def test_avgmax_pooling_feeds_the_head_average_and_maximum():
    config = default_model_config("light")
    config.update(width=0.25, input_size=32, pool="avgmax")
    model = create_model(config)
    x = images(2, 32)
    variables = model.init(key(0), x, train=False)
    channels = round(256 * 0.25)
    assert variables["params"]["head"]["dense0"]["kernel"].shape[0] == 2 * channels
    assert model.apply(variables, x, train=False).shape == (2, 10)
    config.pool = "median"
    with pytest.raises(ValueError, match="pool must be one of avg, avgmax"):
        create_model(config)


def test_d4_test_time_augmentation_averages_the_eight_views_at_inference_only():
    config = default_model_config("light")
    config.update(width=0.25, input_size=32)
    plain = create_model(config)
    config.tta = "d4"
    d4 = create_model(config)
    x = images(3, 32)
    variables = plain.init(key(0), x, train=False)  # the same parameters serve both
    turns = [jnp.rot90(x, k, axes=(1, 2)) for k in range(4)]
    views = turns + [t[:, :, ::-1] for t in turns]
    expected = jnp.mean(jnp.stack([plain.apply(variables, v, train=False) for v in views]), 0)
    got = d4.apply(variables, x, train=False)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # Invariant: a rotated or mirrored image gets the same answer.
    np.testing.assert_allclose(d4.apply(variables, views[3], train=False), got, rtol=1e-4,
                               atol=1e-4)
    assert not np.allclose(plain.apply(variables, views[3], train=False),
                           plain.apply(variables, x, train=False), atol=1e-4)
    # Training sees one view per image: the same logits as without test-time augmentation.
    train_kwargs = {"train": True, "mutable": ["batch_stats"], "rngs": {"dropout": key(1)}}
    np.testing.assert_array_equal(d4.apply(variables, x, **train_kwargs)[0],
                                  plain.apply(variables, x, **train_kwargs)[0])
    config.tta = "d8"
    with pytest.raises(ValueError, match="tta must be one of none, d4"):
        create_model(config)
