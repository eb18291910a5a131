"""Every experiment config trains a couple of steps unchanged, given only size overrides."""

import json
from pathlib import Path

import pytest

from geojax.models import TRANSFER_MODELS
from geojax.training.loop import train_and_evaluate
from tests.train_setup import REPO, load_config, main_command, run

# Shrinks any experiment to two steps on tiny images without touching its model or optimizer.
SMALL = {
    "total_steps": 2,
    "batch_size": 2,
    "log_every_steps": 1,
    "eval_every_steps": 2,
    "checkpoint_every_steps": 2,
    "data.img_size": 32,
    "data.workers": 0,
    "data.eval_size": 4,
    "wandb.mode": "disabled",
}
EXPERIMENTS = sorted(
    p.stem for p in (REPO / "experiments").glob("*.py") if p.stem not in ("__init__", "default")
)


def test_every_model_has_an_experiment():
    from geojax import models

    assert {"custom", "light", "quick", *models.TRANSFER_MODELS} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", [
    # Full-size transfer backbones spend 2-4 minutes each compiling on 2 cores: `make test-slow`.
    pytest.param(n, marks=pytest.mark.slow) if n in TRANSFER_MODELS else n
    for n in EXPERIMENTS if n != "custom"])
def test_experiment_trains_two_steps(name, tmp_path):
    config = load_config(name, SMALL)
    train_and_evaluate(config, str(tmp_path))
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["step"] == 2
    assert report["num_examples"] == SMALL["data.eval_size"]


def test_custom_runs_from_the_command_line_with_overrides(tmp_path: Path):
    result = run(main_command("custom", tmp_path, SMALL))
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["model"]["name"] == "se_resnet"
    assert written["total_steps"] == 2
    assert (tmp_path / "eval" / "metrics.json").exists()
