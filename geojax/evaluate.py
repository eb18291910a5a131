"""Evaluate a training workdir's best checkpoint (calibrated: its logits divided by the
temperature fitted after training) on a folder of images, with the metrics and report of
`geojax.metrics`:

    python -m geojax.evaluate --workdir runs/quick --data_dir data/shapes --output report.json
                              [--no_shape_dir DIR]

where the folder holds `CLASS/*.png` or `SPLIT/CLASS/*` (any size or mode; images are
prepared the way the model was trained). When it holds a `manifest.csv` (file, and any of
kind, style, background, extent; `scripts/heldout_shapes.py` and `scripts/seed_style_shapes.py`
write one), the report adds accuracy by size band (extent: the shape's longest side over the
frame's) and by style, so weak spots show. `--no_shape_dir` is a folder of shape-free images:
the report says how many of them were named a shape (top probability >= SHAPE_THRESHOLD).
"""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geojax import metrics

SIZE_BANDS = (0.0, 0.3, 0.5, 0.7, 1.01)  # shape extent over the frame: <30%, 30-50, 50-70, 70+

# ---------------------------------------------------------------------------------------------
# Command line: a workdir's checkpoint on a folder of images
# ---------------------------------------------------------------------------------------------


def _folder_split(data_dir: str, split: str) -> str | None:
    """`split` when DATA_DIR holds split folders (SPLIT/CLASS/*), None when it holds CLASS/*."""
    from geojax.data.dataset import SPLITS

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
    from geojax import CLASSES, SHAPE_THRESHOLD, train
    from geojax.data import load_folder
    from geojax.data.dataset import IMAGE_SUFFIXES, read_sample

    config = train.read_config(workdir)
    size = int(config.data.img_size)
    folder_split = _folder_split(data_dir, split)
    data = load_folder(data_dir, size, folder_split)
    state, predict_fn, mesh, step = train.load_for_inference(config, workdir, checkpoint)
    temperature = train.read_temperature(workdir, step)
    logits = train.predict(predict_fn, state, data["image"], mesh, batch_size)
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
        top = metrics.softmax(train.predict(predict_fn, state, blank, mesh, batch_size)
                      / temperature).max(-1)
        extra["no_shape"] = {"dir": os.path.abspath(no_shape_dir), "n": len(files),
                             "named_a_shape": int((top >= SHAPE_THRESHOLD).sum()),
                             "max_confidence": float(top.max()),
                             "mean_confidence": float(top.mean())}
    out_dir = os.path.dirname(os.path.abspath(output))
    return metrics.write_report(
        probs, labels, out_dir, class_names=CLASSES,
        history=train.read_history(workdir), extra=extra,
        metrics_filename=os.path.basename(output),
    )


def main(argv: Sequence[str]) -> None:
    """Runs `evaluate_folder` from the flags; a user error exits with its message."""
    import sys

    from absl import flags

    from geojax.core.images import ImageError
    from geojax.train import CheckpointError

    del argv
    flag_values = flags.FLAGS
    try:
        report = evaluate_folder(
            flag_values.workdir, flag_values.data_dir, flag_values.output,
            split=flag_values.split, checkpoint=flag_values.checkpoint,
            batch_size=flag_values.batch_size, no_shape_dir=flag_values.no_shape_dir,
        )
    except (CheckpointError, ImageError, FileNotFoundError, ValueError) as e:
        sys.exit(f"geojax.evaluate: {e}")
    print(f"accuracy {report['accuracy']:.4f} on {report['num_examples']} images, ECE "
          f"{report['expected_calibration_error']:.4f} (uncalibrated "
          f"{report['ece_uncalibrated']:.4f}, temperature {report['temperature']:.3f}), "
          f"checkpoint step {report['checkpoint_step']}; report: {flag_values.output}")
    for key in ("by_size", "by_kind", "by_style"):
        if key in report:
            print(f"  {key[3:]:<6} " + ", ".join(f"{name} {v['accuracy']:.3f} ({v['n']})"
                                                for name, v in report[key].items()))
    if "no_shape" in report:
        blank = report["no_shape"]
        print(f"  no-shape images named a shape: {blank['named_a_shape']} of {blank['n']} "
              f"(max confidence {blank['max_confidence']:.3f})")


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("workdir", None, "Training workdir (holds config.json, checkpoints/).")
    flags.DEFINE_string("data_dir", None, "Folder of CLASS/* or SPLIT/CLASS/* images.")
    flags.DEFINE_string("output", None, "Report JSON path; the PNGs are written beside it.")
    flags.DEFINE_string("split", "test", "Split folder to use when DATA_DIR holds splits.")
    flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.")
    flags.DEFINE_integer("batch_size", 64, "Images per forward pass.")
    flags.DEFINE_string("no_shape_dir", None, "Folder of shape-free images: how many are "
                        "named a shape (top probability >= SHAPE_THRESHOLD).")
    flags.mark_flags_as_required(["workdir", "data_dir", "output"])


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
