"""Metrics of a classifier's predictions (pure numpy) and the JSON + PNG report.

Accuracy, per-class precision/recall/F1, confusion matrix, one-vs-rest ROC curves and AUC,
expected calibration error, negative log-likelihood and temperature scaling. `write_report` is
the one function with side effects (files). The training loop (`geojax.training.loop`), the
folder evaluation (`geojax.evaluation.report`) and the export all use them; nothing here
imports the rest of geojax.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

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
    """Mean -log softmax(logits / temperature)[label]; a negative label (`geojax.NO_SHAPE`, an
    image with no shape) scores against the uniform distribution: -mean(log softmax)."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    labels = np.asarray(labels)
    shape = labels >= 0
    losses = -log_probs.mean(axis=-1)
    losses[shape] = -log_probs[np.flatnonzero(shape), labels[shape]]
    return float(losses.mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)
                    ) -> float:
    """The temperature T (within `bounds`) minimising the NLL of softmax(logits / T):
    temperature scaling (Guo et al. 2017), golden-section search on log T (the NLL is convex in
    1 / T). One scalar, so it changes confidences, never which class is predicted. Rows labelled
    `NO_SHAPE` (shape-free images, target uniform) keep T from sharpening without bound when
    every shape is already right: the confidence on "no shape" has to stay low too."""
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
    # Here, not at the top: only the report's plots need matplotlib, and its headless Agg
    # backend must be chosen before pyplot is first imported.
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
