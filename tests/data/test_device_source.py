"""data.source='device': batches drawn on the devices, the same on any device count, resumable,
and trained on by `python -m geojax.main`."""

import functools
import json
import shutil
import textwrap

import jax
import numpy as np
import pytest

from geojax import NO_SHAPE
from geojax.data import pipeline
from geojax.data.device import batches
from geojax.inference.workdir import load_for_inference
from geojax.training.state import create_mesh
from geojax.training.workdir import read_config
from tests.train_setup import TINY, main_command, run

BATCH = 8


def _config():
    config = pipeline.default_data_config()
    config.source = "device"
    config.img_size = 24
    return config


@functools.cache
def _one_device_batches():
    make = batches.batch_fn(_config(), create_mesh(jax.devices()[:1]), BATCH, seed=3)
    return [jax.tree.map(np.asarray, make(step)) for step in (0, 1, 0)]


def test_batches_are_deterministic_per_step_and_hold_valid_samples():
    first, second, first_again = _one_device_batches()
    assert first["image"].shape == (BATCH, 24, 24, 3) and first["image"].dtype == np.uint8
    assert first["label"].dtype == np.int32 and first["box"].shape == (BATCH, 4)
    for key in first:
        np.testing.assert_array_equal(first[key], first_again[key])
    assert not np.array_equal(first["image"], second["image"])
    for batch in (first, second):
        # A shape of a class, or (data.no_shape_fraction of them) none: NO_SHAPE.
        shape = batch["label"] != NO_SHAPE
        assert np.all((batch["label"][shape] >= 0) & (batch["label"][shape] < 10))
        boxes = batch["box"][shape]
        assert np.all((boxes[:, :2] >= 0) & (boxes[:, :2] < boxes[:, 2:]) & (boxes[:, 2:] <= 24))
    images = np.concatenate([first["image"], second["image"]])
    labels = np.concatenate([first["label"], second["label"]])
    assert images[labels != NO_SHAPE].reshape(-1, 24 * 24 * 3).std(axis=1).min() > 1
    assert len({bytes(im) for im in images}) == len(images)


_TWO_DEVICES = textwrap.dedent("""
    import jax, numpy as np, sys
    from geojax.training.state import create_mesh
    from geojax.data.device import batches
    from tests.data.test_device_source import BATCH, _config
    assert jax.device_count() == 2
    make = batches.batch_fn(_config(), create_mesh(), BATCH, seed=3)
    batch = make(1)
    assert len(batch["image"].sharding.device_set) == 2
    np.savez(sys.argv[1], **jax.tree.map(np.asarray, batch))
""")


def test_two_devices_draw_the_global_batch_of_one(tmp_path):
    out = tmp_path / "two.npz"
    result = run([*_python(), "-c", _TWO_DEVICES, str(out)], devices=2)
    assert result.returncode == 0, result.stderr[-3000:]
    two = np.load(out)
    one = _one_device_batches()[1]
    for key in one:
        np.testing.assert_array_equal(two[key], one[key], err_msg=key)


def _python() -> list[str]:
    import sys

    return [sys.executable]


def _params(workdir):
    config = read_config(str(workdir))
    state, _, _, step = load_for_inference(config, str(workdir), "latest")
    return step, jax.device_get(state.params)


def test_training_on_device_data_runs_and_resumes_to_the_same_parameters(tmp_path):
    values = {**TINY, "data.source": "device", "total_steps": 4}
    reference = tmp_path / "reference"
    result = run(main_command("quick", reference, values))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((reference / "eval" / "metrics.json").read_text())
    assert report["num_examples"] == TINY["data.eval_size"]

    # A run stopped after step 2: nothing but the checkpointed state (its step) is kept.
    resumed = tmp_path / "resumed"
    shutil.copytree(reference, resumed)
    for checkpoint in (resumed / "checkpoints").iterdir():
        if checkpoint.name.isdigit() and int(checkpoint.name) > 2:
            shutil.rmtree(checkpoint)
    result = run(main_command("quick", resumed, values))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from step 2" in result.stderr
    (step_a, params_a), (step_b, params_b) = _params(reference), _params(resumed)
    assert step_a == step_b == 4
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b), strict=True):
        np.testing.assert_array_equal(a, b)


def test_train_batches_refuses_the_device_source():
    with pytest.raises(ValueError, match="made on the accelerators"):
        pipeline.train_batches(_config(), BATCH, seed=0)


def test_a_bad_device_op_fails_the_config_check_naming_it():
    config = _config()
    config.device_ops = "flip_lr|twirl"
    with pytest.raises(ValueError, match="unknown op 'twirl'"):
        pipeline.check_data_config(config)
