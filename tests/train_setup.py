"""What the training tests share: a tiny config (as --config overrides) and subprocess runs."""

import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

REPO = Path(__file__).resolve().parent.parent

# A few-second run of experiments/quick.py: 16 px images from the CPU loader (tests that feed
# batches themselves need it; tests/data/test_device_source.py covers device data), a quarter-width
# light CNN on whole pixels (16 px has no room for 2x2 patches).
TINY = {
    "data.img_size": 16,
    "data.source": "stream",
    "data.workers": 0,
    "model.patch": 1,
    "data.eval_size": 20,
    "model.width": 0.25,
    "model.head_widths": (16,),
    "model.head_dropout": (0.1,),
    "batch_size": 8,
    "total_steps": 3,
    "warmup_steps": 1,
    "log_every_steps": 1,
    "eval_every_steps": 2,
    "checkpoint_every_steps": 1,
    "wandb.mode": "disabled",
}


def override(config: ml_collections.ConfigDict, values: Mapping[str, Any]) -> None:
    """Sets dotted fields, as `--config.a.b=value` does (unknown fields raise)."""
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = config
        for name in parents:
            node = node[name]
        if leaf not in node:
            raise KeyError(dotted)
        node[leaf] = value


def as_flags(values: Mapping[str, Any]) -> list[str]:
    return [f"--config.{k}={v}" for k, v in values.items()]


def load_config(name: str, values: Mapping[str, Any] = TINY) -> ml_collections.ConfigDict:
    """experiments/NAME.py's config with `values` overridden."""
    import importlib

    config = importlib.import_module(f"experiments.{name}").get_config()
    override(config, values)
    return config


def python_env(devices: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["JAX_PLATFORMS"] = "cpu"
    # Subprocess runs of one config compile the same programs: compile them once.
    env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), "geojax-test-xla-cache")
    env["WANDB_MODE"] = "disabled"
    return env


def main_command(config: str, workdir: Path, values: Mapping[str, Any]) -> list[str]:
    return [sys.executable, "-m", "geojax.main", f"--config=experiments/{config}.py",
            f"--workdir={workdir}", *as_flags(values)]


def run(args: Sequence[str], devices: int = 1, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env=python_env(devices), capture_output=True,
                          text=True, timeout=timeout)
