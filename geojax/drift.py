"""Drift profiles: what a model's inputs and predictions look like, and how far live traffic moved.

The export step stores a reference profile (from the validation split) with each model version;
the detection proxy builds the same profile over a sliding window of live requests and compares
the two with the population stability index (PSI). One definition of the bins, here, for both.

PSI = sum_i (a_i - e_i) * ln(a_i / e_i) over bins of the expected (e) and actual (a)
distributions. Common reading: < 0.1 no shift, 0.1-0.25 moderate, > 0.25 significant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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
    luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0
    height, width = image.shape[:2]
    return {
        "brightness": float(luma.mean()),
        "contrast": float(luma.std()),
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


def drift_scores(reference: Mapping[str, object], live: Mapping[str, object]) -> dict[str, float]:
    """PSI per profiled distribution between a stored reference and a live profile."""
    keys = ("class_distribution", "confidence", "brightness", "contrast", "log2_pixels")
    return {k: population_stability_index(reference[k], live[k]) for k in keys}  # type: ignore[arg-type]
