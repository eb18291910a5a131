"""Test-wide settings (offline, quiet, no W&B account) and the shared tiny exported model."""

import fcntl
import os
import shutil
import socket
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from geojax import CLASSES

TINY_SIZE = 32


def free_port() -> int:
    """A TCP port nothing listens on right now, for servers the tests start."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_model():
    """A tiny random-init light model at 32 px and its variables (deterministic)."""
    import jax

    from geojax import models

    config = models.default_model_config("light")
    config.input_size = TINY_SIZE
    config.stage_widths = (8, 16)
    config.head_widths = (16,)
    model = models.create_model(config)
    return model, models.init_variables(model, config, jax.random.key(0))


def tiny_samples(n, size=TINY_SIZE):
    """`n` rendered images (seeds 0..n-1) at `size` px."""
    from geojax.data import render_shape

    return [render_shape(np.random.default_rng(i), size).image for i in range(n)]


@pytest.fixture(scope="session")
def tiny_saved_model(tmp_path_factory) -> Path:
    """`tiny_model` exported as a SavedModel (warm-up: 2 `tiny_samples`) once per test run:
    the first pytest-xdist worker exports, the others wait on the lock; the export is most of
    the serving tests' time. Read-only: copy it to build model base paths."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    target = shared / "tiny_saved_model"
    with open(shared / "tiny_saved_model.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_dir():
            from geojax.core.images import encode_png
            from geojax.release.saved_model import export_saved_model

            model, variables = tiny_model()
            incoming = shared / ".tiny_saved_model-incoming"
            shutil.rmtree(incoming, ignore_errors=True)
            export_saved_model(lambda v, x: model.apply(v, x, train=False), variables,
                               TINY_SIZE, CLASSES, incoming,
                               warmup_images=[encode_png(s) for s in tiny_samples(2)])
            incoming.rename(target)
    return target



@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory) -> Path:
    """A workdir `geojax.evaluate` and `geojax.inference.workdir.load_for_inference` read:
    experiments/quick.py at the size of `tests.train_setup.TINY` (config.json) and its initial
    state as checkpoint 0, ranked best. Untrained, so it costs no compilation; train for a model
    that learned."""

    from geojax.training.checkpoints import create_checkpoint_manager, save_checkpoint
    from geojax.training.steps import create_training
    from geojax.training.workdir import write_config
    from tests.train_setup import TINY, load_config

    config = load_config("quick", TINY)
    workdir = tmp_path_factory.mktemp("tiny_workdir")
    write_config(config, str(workdir))
    state = create_training(config).state  # steps are jitted lazily: nothing compiles
    manager = create_checkpoint_manager(str(workdir), config)
    progress = {"best_accuracy": 0.0, "best_step": 0, "stopped_early": False}
    save_checkpoint(manager, state, progress, {"accuracy": 0.0})
    manager.wait_until_finished()
    manager.close()
    return workdir
