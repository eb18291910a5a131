"""The PyTorch SE-ResNet of scripts/bench_train.py is the Flax one: parameters and logits.

Benchmark-only code: skipped where torch is not installed.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scripts import torch_se_resnet as twin  # noqa: E402


def _flax_classifier(**architecture):
    from geojax import models

    config = models.default_model_config("se_resnet")
    config.input_size = 32
    for key, value in architecture.items():
        config[key] = value
    return models.create_model(config), config


def test_parameter_count_equals_the_flax_models():
    import jax

    model, _ = _flax_classifier()
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x),
                            jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32))
    flax_count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
    assert flax_count == twin.NUM_PARAMS_10_CLASSES == 19_091_978
    assert twin.count_params(twin.build_se_resnet(10)) == flax_count


def test_flax_weights_give_the_same_logits():
    import jax

    from geojax import models

    model, config = _flax_classifier(width=0.125, stage_depths=(1, 1, 1, 1))
    variables = jax.device_get(models.init_variables(model, config, jax.random.key(0)))
    rng = np.random.default_rng(0)
    # Non-trivial running statistics, so a misplaced BatchNorm tensor shows.
    variables["batch_stats"] = jax.tree.map(
        lambda a: a + rng.uniform(0.1, 0.5, a.shape).astype(np.float32),
        variables["batch_stats"])
    for size in (32, 37):  # even and odd sides: XLA's 'SAME' pads differ
        images = rng.random((2, size, size, 3), dtype=np.float32)
        assert twin.check_against_flax(model, variables, images) < 1e-5


def test_same_padding_matches_xla():
    from jax import lax

    for size in (7, 8, 31, 32, 224):
        for kernel, stride in ((7, 2), (3, 2), (3, 1), (1, 2)):
            expected = lax.padtype_to_pads((size,), (kernel,), (stride,), "SAME")[0]
            assert twin.same_pads(size, kernel, stride) == tuple(expected)


def test_load_flax_params_rejects_a_missing_tensor():
    module = twin.build_se_resnet(10, width=0.125, stage_depths=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="without a Flax variable"):
        twin.load_flax_params(module, {"params": {}, "batch_stats": {}})


def test_bench_torch_runs_a_train_step():
    rate = twin.bench_torch(2, 32, 1, compile=False, device="cpu", dtype="float32",
                            architecture={"width": 0.125, "stage_depths": (1, 1, 1, 1)})
    assert rate > 0


def test_defaults_follow_the_flax_model_config():
    """The twin's architecture defaults are the Flax se_resnet config's (e.g. block dropout)."""
    import inspect

    from geojax import models

    config = models.default_model_config("se_resnet")
    defaults = inspect.signature(twin.SEResNetBackbone).parameters
    for name in ("width", "stem_width", "stage_widths", "stage_depths", "se_reduction",
                 "block_dropout"):
        value = config[name]
        expected = tuple(value) if isinstance(value, list | tuple) else value
        assert defaults[name].default == expected, name
    head = inspect.signature(twin.MLPHead).parameters
    assert head["widths"].default == tuple(config.head_widths)
    assert head["dropout"].default == tuple(config.head_dropout)
