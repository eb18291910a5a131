"""Evaluate a classifier's predictions: metrics (pure numpy), then a JSON + PNG report.

Metrics: accuracy, per-class precision/recall/F1, confusion matrix, one-vs-rest ROC curves
and AUC, expected calibration error, temperature scaling. `write_report` is the one function
with side effects (files). As a command, evaluates a training workdir's best checkpoint
(calibrated: its logits divided by the temperature fitted after training) on a folder of images:

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
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SIZE_BANDS = (0.0, 0.3, 0.5, 0.7, 1.01)  # shape extent over the frame: <30%, 30-50, 50-70, 70+

# ---------------------------------------------------------------------------------------------
# Metrics (pure numpy)
# ---------------------------------------------------------------------------------------------


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """[true, predicted] counts."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(predictions)), 1)
    return cm


def _safe_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def precision_recall_f1(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix (0 where undefined)."""
    true_positives = np.diag(cm).astype(np.float64)
    precision = _safe_divide(true_positives, cm.sum(axis=0))
    recall = _safe_divide(true_positives, cm.sum(axis=1))
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": cm.sum(axis=1)}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
    """Σ_b |accuracy_b - confidence_b| · n_b / N over equal-width confidence bins (0, 1]."""
    probs = np.asarray(probs, np.float64)
    if len(probs) == 0:
        return 0.0
    confidence = probs.max(axis=-1)
    correct = (probs.argmax(axis=-1) == np.asarray(labels)).astype(np.float64)
    # Bin b holds confidences in (b/num_bins, (b+1)/num_bins].
    bins = np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)
    ece = 0.0
    for b in range(num_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += abs(correct[in_bin].mean() - confidence[in_bin].mean()) * in_bin.sum()
    return float(ece / len(probs))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0
                            ) -> float:
    """Mean -log softmax(logits / temperature)[label]."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(-log_probs[np.arange(len(z)), np.asarray(labels)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)
                    ) -> float:
    """The temperature T (within `bounds`) minimising the NLL of softmax(logits / T):
    temperature scaling (Guo et al. 2017), golden-section search on log T (the NLL is convex in
    1 / T). One scalar, so it changes confidences, never which class is predicted."""
    if len(logits) == 0:
        return 1.0
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    ratio = (np.sqrt(5) - 1) / 2

    def nll(log_t: float) -> float:
        return negative_log_likelihood(logits, labels, float(np.exp(log_t)))

    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return float(np.exp((lo + hi) / 2))


def roc_curve(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates as the threshold sweeps down through the scores.

    Tied scores move together (one point per distinct score); starts at (0, 0).
    """
    scores = np.asarray(scores, np.float64)
    positives = np.asarray(positives, bool)
    order = np.argsort(-scores, kind="stable")
    scores, positives = scores[order], positives[order]
    last_of_tie = np.r_[np.diff(scores) != 0, True]
    tp = np.cumsum(positives)[last_of_tie]
    fp = np.cumsum(~positives)[last_of_tie]
    tpr = _safe_divide(np.r_[0, tp], positives.sum())
    fpr = _safe_divide(np.r_[0, fp], (~positives).sum())
    return fpr, tpr


def area_under_curve(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoidal area under y(x)."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def classification_report(
    probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Everything `write_report` stores in metrics.json, as plain JSON types."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels, np.int64)
    num_classes = len(class_names)
    predictions = probs.argmax(axis=-1)
    cm = confusion_matrix(labels, predictions, num_classes)
    scores = precision_recall_f1(cm)
    per_class = {}
    for i, name in enumerate(class_names):
        fpr, tpr = roc_curve(probs[:, i], labels == i)
        has_both = 0 < (labels == i).sum() < len(labels)
        per_class[name] = {
            "precision": float(scores["precision"][i]),
            "recall": float(scores["recall"][i]),
            "f1": float(scores["f1"][i]),
            "support": int(scores["support"][i]),
            "roc_auc": area_under_curve(fpr, tpr) if has_both else None,
        }
    return {
        "num_examples": len(labels),
        "accuracy": float((predictions == labels).mean()) if len(labels) else 0.0,
        "macro_precision": float(scores["precision"].mean()),
        "macro_recall": float(scores["recall"].mean()),
        "macro_f1": float(scores["f1"].mean()),
        "expected_calibration_error": expected_calibration_error(probs, labels),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }


# ---------------------------------------------------------------------------------------------
# Report files
# ---------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: str) -> None:
    plt = _pyplot()
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(8, 7))
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set(
        xticks=range(len(class_names)),
        yticks=range(len(class_names)),
        xlabel="predicted",
        ylabel="true",
        title="Confusion matrix",
    )
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    threshold = cm.max() / 2 if cm.size else 0
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center",
                color="white" if count > threshold else "black", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_roc_curves(
    probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: str
) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    for i, name in enumerate(class_names):
        positives = np.asarray(labels) == i
        if not 0 < positives.sum() < len(positives):
            continue
        fpr, tpr = roc_curve(np.asarray(probs)[:, i], positives)
        ax.plot(fpr, tpr, label=f"{name} (AUC {area_under_curve(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (one vs rest)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str) -> None:
    """Loss and accuracy against step, train and validation, from the run's history."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for split in ("train", "val"):
        points = [p for p in history if p["split"] == split]
        steps = [p["step"] for p in points]
        for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
            key = f"{split}_{metric}"
            if points and key in points[0]:
                ax.plot(steps, [p[key] for p in points], marker=".", label=split)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set(xlabel="step", ylabel=metric, title=metric)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(
    probs: np.ndarray,
    labels: np.ndarray,
    out_dir: str,
    *,
    class_names: Sequence[str],
    history: Sequence[Mapping[str, Any]] = (),
    extra: Mapping[str, Any] | None = None,
    metrics_filename: str = "metrics.json",
) -> dict[str, Any]:
    """Writes metrics JSON, confusion-matrix, ROC and (with history) training-curve PNGs."""
    os.makedirs(out_dir, exist_ok=True)
    report = {**classification_report(probs, labels, class_names), **(extra or {})}
    with open(os.path.join(out_dir, metrics_filename), "w") as f:
        json.dump(report, f, indent=2)
    plot_confusion_matrix(report["confusion_matrix"], class_names,
                          os.path.join(out_dir, "confusion_matrix.png"))
    plot_roc_curves(probs, labels, class_names, os.path.join(out_dir, "roc_curves.png"))
    if history:
        plot_training_curves(history, os.path.join(out_dir, "training_curves.png"))
    return report


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
    probs = softmax(logits / temperature)
    labels = np.asarray(data["label"])
    root = Path(data_dir) / (folder_split or "")
    relative = [Path(p).relative_to(root).as_posix() for p in data["path"]]
    extra: dict[str, Any] = {
        "workdir": os.path.abspath(workdir), "data_dir": os.path.abspath(data_dir),
        "checkpoint_step": step, "temperature": temperature,
        "ece_uncalibrated": expected_calibration_error(softmax(logits), labels),
        "shape_found_rate": float((probs.max(-1) >= SHAPE_THRESHOLD).mean()),
        **breakdown(read_manifest(str(root)), relative, probs.argmax(-1) == labels),
    }
    if no_shape_dir:
        files = sorted(p for p in Path(no_shape_dir).iterdir()
                       if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{no_shape_dir}: no images (--no_shape_dir)")
        blank = np.stack([read_sample(p, size) for p in files])
        top = softmax(train.predict(predict_fn, state, blank, mesh, batch_size)
                      / temperature).max(-1)
        extra["no_shape"] = {"dir": os.path.abspath(no_shape_dir), "n": len(files),
                             "named_a_shape": int((top >= SHAPE_THRESHOLD).sum()),
                             "max_confidence": float(top.max()),
                             "mean_confidence": float(top.mean())}
    out_dir = os.path.dirname(os.path.abspath(output))
    return write_report(
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
