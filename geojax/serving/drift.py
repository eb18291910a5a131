"""Drift profiles: what a model's inputs and predictions look like, and how far live traffic moved.

The export step stores a reference profile (from the validation split) with each model version;
the detection proxy builds the same profile over a sliding window of live requests and compares
the two with the population stability index (PSI). One definition of the bins, here, for both.

PSI = sum_i (a_i - e_i) * ln(a_i / e_i) over bins of the expected (e) and actual (a)
distributions. Common reading: < 0.1 no shift, 0.1-0.25 moderate, > 0.25 significant.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Mapping

import cv2
import numpy as np

PSI_DRIFT_THRESHOLD = 0.25
FEATURE_BINS: dict[str, np.ndarray] = {
    "brightness": np.linspace(0.0, 1.0, 11),  # mean luma in [0, 1]
    "contrast": np.linspace(0.0, 0.5, 11),  # std of luma in [0, 1] (0.5 is the maximum)
    "log2_pixels": np.arange(8.0, 27.0, 2.0),  # 256 px .. 64 Mpx
    "confidence": np.linspace(0.0, 1.0, 11),
}


def image_statistics(image: np.ndarray) -> dict[str, float]:
    """Brightness, contrast and size of one RGB uint8 image."""
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)  # uint8: no float copy of a large upload
    mean, std = cv2.meanStdDev(luma)
    height, width = image.shape[:2]
    return {
        "brightness": float(mean[0, 0]) / 255.0,
        "contrast": float(std[0, 0]) / 255.0,
        "log2_pixels": float(np.log2(max(1, height * width))),
    }


def histogram(values: Iterable[float], feature: str) -> list[float]:
    """Normalised histogram of `values` over the feature's fixed bins (outliers clipped in)."""
    edges = FEATURE_BINS[feature]
    clipped = np.clip(np.asarray(list(values), np.float64), edges[0], edges[-1])
    counts, _ = np.histogram(clipped, bins=edges)
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * (len(edges) - 1)


def class_distribution(predicted: Iterable[int], num_classes: int) -> list[float]:
    counts = np.bincount(np.asarray(list(predicted), np.int64), minlength=num_classes)
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * num_classes


def profile(
    probabilities: np.ndarray, statistics: list[Mapping[str, float]]
) -> dict[str, object]:
    """The profile of a set of predictions ([N, C] probabilities) and their inputs' statistics."""
    probabilities = np.asarray(probabilities)
    return {
        "count": len(probabilities),
        "class_distribution": class_distribution(probabilities.argmax(-1),
                                                 probabilities.shape[-1]),
        "confidence": histogram(probabilities.max(-1), "confidence"),
        **{f: histogram((s[f] for s in statistics), f)
           for f in ("brightness", "contrast", "log2_pixels")},
    }


def population_stability_index(
    expected: Iterable[float], actual: Iterable[float], epsilon: float = 1e-4
) -> float:
    """PSI of two distributions over the same bins; empty bins are floored at `epsilon`."""
    e = np.maximum(np.asarray(list(expected), np.float64), epsilon)
    a = np.maximum(np.asarray(list(actual), np.float64), epsilon)
    if e.shape != a.shape:
        raise ValueError(f"distributions have different bins: {e.shape} vs {a.shape}")
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


class DriftMonitor:
    """Sliding windows of live inputs and predictions, scored against a reference profile.

    The model version's reference (from its validation split) covers predicted classes,
    confidence, brightness and contrast. Image sizes describe the clients, not the model, so
    their reference is the first full window of live traffic.
    """

    def __init__(self, window: int = 500, threshold: float = PSI_DRIFT_THRESHOLD):
        if window < 10:
            raise ValueError(f"drift window must be at least 10, got {window}")
        self.window = window
        self.threshold = threshold
        self.inputs: collections.deque[dict[str, float]] = collections.deque(maxlen=window)
        self.predictions: collections.deque[tuple[int, float]] = collections.deque(maxlen=window)
        self.size_baseline: list[float] | None = None
        self._lock = threading.Lock()

    def observe_input(self, statistics: Mapping[str, float]) -> None:
        with self._lock:
            self.inputs.append(dict(statistics))
            if self.size_baseline is None and len(self.inputs) == self.window:
                self.size_baseline = histogram((s["log2_pixels"] for s in self.inputs),
                                               "log2_pixels")

    def observe_predictions(self, probabilities: np.ndarray) -> None:
        probabilities = np.asarray(probabilities).reshape(-1, np.shape(probabilities)[-1])
        with self._lock:
            self.predictions.extend(zip(probabilities.argmax(-1).tolist(),
                                        probabilities.max(-1).tolist(), strict=True))

    def reset(self) -> None:
        """Forget the windows (a new model version starts a new comparison)."""
        with self._lock:
            self.inputs.clear()
            self.predictions.clear()
            self.size_baseline = None

    def report(self, reference: Mapping[str, object] | None, num_classes: int) -> dict:
        """PSI per feature (None where there is no reference or no data yet) and the verdict."""
        with self._lock:
            inputs = list(self.inputs)
            predictions = list(self.predictions)
            baseline = self.size_baseline
        live: dict[str, list[float]] = {}
        if predictions:
            classes, confidences = zip(*predictions, strict=True)
            live["class_distribution"] = class_distribution(classes, num_classes)
            live["confidence"] = histogram(confidences, "confidence")
        if inputs:
            for feature in ("brightness", "contrast", "log2_pixels"):
                live[feature] = histogram((s[feature] for s in inputs), feature)
        expected: dict[str, object] = dict(reference or {})
        expected["log2_pixels"] = baseline
        scores: dict[str, float | None] = {}
        for feature in ("class_distribution", "confidence", "brightness", "contrast",
                        "log2_pixels"):
            ref = expected.get(feature)
            scores[feature] = (population_stability_index(ref, live[feature])  # type: ignore[arg-type]
                               if ref is not None and feature in live else None)
        flagged = sorted(f for f, s in scores.items() if s is not None and s > self.threshold)
        return {
            "psi": scores,
            "threshold": self.threshold,
            "drift": bool(flagged),
            "drifted_features": flagged,
            "window": {"size": self.window, "inputs": len(inputs),
                       "predictions": len(predictions)},
            "reference": reference is not None,
        }
