"""A training workdir's checkpoint evaluated on a folder of images (`evaluate_folder`): the
report of `geojax.core.metrics` on its calibrated probabilities, broken down by the
folder's manifest (size band, kind, style, background) when it has one, and how many
shape-free images it names a shape. The command is `python -m geojax.evaluate`.
"""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geojax import CLASSES, SHAPE_THRESHOLD
from geojax.core import metrics
from geojax.data import load_folder
from geojax.data.dataset import IMAGE_SUFFIXES, SPLITS, read_sample
from geojax.inference.workdir import load_workdir
from geojax.training.workdir import read_config, read_history

SIZE_BANDS = (0.0, 0.3, 0.5, 0.7, 1.01)  # shape extent over the frame: <30%, 30-50, 50-70, 70+


def _folder_split(data_dir: str, split: str) -> str | None:
    """`split` when DATA_DIR holds split folders (SPLIT/CLASS/*), None when it holds CLASS/*."""
    subdirs = {p.name for p in os.scandir(data_dir) if p.is_dir()} if os.path.isdir(data_dir) else set()
    if subdirs & set(SPLITS):
        if split not in subdirs:
            raise FileNotFoundError(
                f"{data_dir} holds split folders {sorted(subdirs & set(SPLITS))} but no "
                f"{split!r}: pass --split"
            )
        return split
    return None


def band_name(low: float, high: float) -> str:
    return f"{round(100 * low)}-{min(100, round(100 * high))}%"


def accuracy_by(groups: Sequence[str], correct: np.ndarray) -> dict[str, dict[str, float]]:
    """{group: {'accuracy', 'n'}} over the images of each group value, sorted by name."""
    groups = np.asarray(groups)
    return {str(g): {"accuracy": float(correct[groups == g].mean()),
                     "n": int((groups == g).sum())} for g in sorted(set(groups.tolist()))}


def breakdown(manifest: Mapping[str, Mapping[str, str]], paths: Sequence[str],
              correct: np.ndarray) -> dict[str, Any]:
    """Accuracy by size band and by each manifest column (kind, style, background) for the
    images at `paths` (relative names as the manifest's 'file' column)."""
    rows = [manifest.get(p, {}) for p in paths]
    out: dict[str, Any] = {}
    if all("extent" in r for r in rows):
        extent = np.array([float(r["extent"]) for r in rows])
        bands = [next(band_name(lo, hi) for lo, hi in itertools.pairwise(SIZE_BANDS)
                      if lo <= e < hi) for e in extent]
        out["by_size"] = accuracy_by(bands, correct)
    for column in ("kind", "style", "background"):
        if all(column in r for r in rows):
            out[f"by_{column}"] = accuracy_by([r[column] for r in rows], correct)
    return out


def read_manifest(data_dir: str) -> dict[str, dict[str, str]]:
    """DATA_DIR/manifest.csv as {file: row}; empty when there is none."""
    path = Path(data_dir) / "manifest.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f) if "file" in row}


def evaluate_folder(
    workdir: str, data_dir: str, output: str, *, split: str = "test",
    checkpoint: str = "best", batch_size: int = 64, no_shape_dir: str | None = None,
) -> dict[str, Any]:
    """Evaluates WORKDIR's checkpoint on DATA_DIR's images; report JSON at OUTPUT, PNGs beside."""
    config = read_config(workdir)
    size = int(config.data.img_size)
    folder_split = _folder_split(data_dir, split)
    data = load_folder(data_dir, size, folder_split)
    model = load_workdir(workdir, checkpoint)
    step, temperature = model.step, model.temperature
    logits = model.logits(data["image"], batch_size)
    probs = metrics.softmax(logits / temperature)
    labels = np.asarray(data["label"])
    root = Path(data_dir) / (folder_split or "")
    relative = [Path(p).relative_to(root).as_posix() for p in data["path"]]
    extra: dict[str, Any] = {
        "workdir": os.path.abspath(workdir), "data_dir": os.path.abspath(data_dir),
        "checkpoint_step": step, "temperature": temperature,
        "ece_uncalibrated": metrics.expected_calibration_error(metrics.softmax(logits), labels),
        "shape_found_rate": float((probs.max(-1) >= SHAPE_THRESHOLD).mean()),
        **breakdown(read_manifest(str(root)), relative, probs.argmax(-1) == labels),
    }
    if no_shape_dir:
        files = sorted(p for p in Path(no_shape_dir).iterdir()
                       if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{no_shape_dir}: no images (--no_shape_dir)")
        blank = np.stack([read_sample(p, size) for p in files])
        top = metrics.softmax(model.logits(blank, batch_size) / temperature).max(-1)
        extra["no_shape"] = {"dir": os.path.abspath(no_shape_dir), "n": len(files),
                             "named_a_shape": int((top >= SHAPE_THRESHOLD).sum()),
                             "max_confidence": float(top.max()),
                             "mean_confidence": float(top.mean())}
    out_dir = os.path.dirname(os.path.abspath(output))
    return metrics.write_report(
        probs, labels, out_dir, class_names=CLASSES,
        history=read_history(workdir), extra=extra,
        metrics_filename=os.path.basename(output),
    )
