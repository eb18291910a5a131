"""A training workdir's checkpoint as the registry's next version, checked before it counts.

The SavedModel (`geojax.release.saved_model`) is written into a directory the registry hands
out inside the model base path, checked for parity against JAX (max |delta probability| <= 1e-4
on a fixed batch; a failing export is deleted, never registered) and only then renamed into
place as the next version, with its metadata (checkpoint, config, metrics, calibration, drift
reference profile, parity).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import jax
import numpy as np

from geojax import CLASSES, SHAPE_THRESHOLD
from geojax.core.artefact import PIXELS_SIGNATURE, SERVING_SIGNATURE
from geojax.core.images import encode_png
from geojax.core.metrics import softmax
from geojax.data import eval_split
from geojax.inference.workdir import serving_model
from geojax.release.errors import ExportError
from geojax.release.registry import Registry
from geojax.release.saved_model import export_saved_model, saved_model_probabilities
from geojax.serving import drift

PARITY_TOLERANCE = 1e-4
PARITY_BATCH = 32


def directory_size(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


def format_bytes(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"


def git_commit() -> str | None:
    """The commit of the code that exported (None outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def export_workdir(
    workdir: str,
    base_path: str = "export/geojax",
    config_file: str = "serving/models.config",
    model_name: str = "geojax",
    checkpoint: str = "best",
    server: str | None = "auto",
) -> int:
    """Export WORKDIR's checkpoint as the next version under `base_path`; returns the version."""
    started = time.perf_counter()
    apply_fn, variables, config, step, temperature = serving_model(workdir, checkpoint)

    val = eval_split(config.data, "val", seed=config.seed)
    pixels = val["image"].astype(np.float32) / 255.0
    probabilities = softmax(np.asarray(jax.jit(apply_fn)(variables, pixels)))

    registry = Registry(base_path, config_file=config_file, model_name=model_name,
                        server=server)
    incoming = registry.incoming_dir()
    try:
        export_saved_model(apply_fn, variables, config.data.img_size, CLASSES, incoming,
                           warmup_images=[encode_png(im) for im in val["image"][:2]])
        batch = slice(0, PARITY_BATCH)
        exported = saved_model_probabilities(incoming, pixels[batch])
        delta = float(np.abs(exported - probabilities[batch]).max())
        if not delta <= PARITY_TOLERANCE:
            raise ExportError(f"SavedModel differs from JAX by {delta:.2e} in probability "
                              f"(tolerance {PARITY_TOLERANCE:.0e}); not registered")
        metrics_file = Path(workdir) / "eval" / "metrics.json"
        metadata = {
            "workdir": str(Path(workdir).resolve()),
            "checkpoint": {"which": checkpoint, "step": int(step)},
            "config": config.to_dict(),
            "git_commit": git_commit(),
            "metrics": json.loads(metrics_file.read_text()) if metrics_file.exists() else {},
            "temperature": temperature,  # the logits are divided by it (calibration)
            "ema_decay": float(config.get("ema_decay", 0.0)),  # > 0: the EMA weights
            "shape_threshold": SHAPE_THRESHOLD,
            "parity": delta,  # max |probability| difference, SavedModel vs JAX
            "parity_check": {"batch": len(exported), "tolerance": PARITY_TOLERANCE,
                             "passed": True},
            "input_size": int(config.data.img_size),
            "classes": list(CLASSES),
            "signatures": [SERVING_SIGNATURE, PIXELS_SIGNATURE],
            "reference_profile": drift.profile(
                probabilities, [drift.image_statistics(im) for im in val["image"]]),
            "export_seconds": round(time.perf_counter() - started, 1),
            "saved_model_bytes": directory_size(incoming),
        }
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    return registry.register(incoming, metadata)
