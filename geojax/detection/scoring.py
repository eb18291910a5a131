"""Detection quality in pure numpy: `match_detections`, `precision_recall` and
`mean_average_precision` (all-point interpolated AP at an IoU threshold, mean over the classes
that have ground truth)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geojax import CLASSES
from geojax.detection.boxes import box_iou

ImagePredictions = tuple[np.ndarray, np.ndarray, np.ndarray]
"""One image's predictions: boxes [K, 4], scores [K], labels [K]."""

ImageTruth = tuple[np.ndarray, np.ndarray]
"""One image's ground truth: boxes [M, 4], labels [M]."""


def match_detections(
    predictions: ImagePredictions, truth: ImageTruth, iou: float = 0.5
) -> np.ndarray:
    """True-positive flags [K] for one image's predictions: in descending score order, a
    prediction is a true positive when it overlaps a not yet matched ground-truth box of its
    label with IoU >= `iou` (the best-overlapping such box is taken)."""
    boxes, scores, labels = (np.asarray(a) for a in predictions)
    gt_boxes, gt_labels = (np.asarray(a) for a in truth)
    tp = np.zeros(len(scores), bool)
    if not len(scores) or not len(gt_labels):
        return tp
    overlaps = box_iou(boxes, gt_boxes)
    overlaps[labels.reshape(-1, 1) != gt_labels.reshape(1, -1)] = -1.0
    taken = np.zeros(len(gt_labels), bool)
    for i in np.argsort(-scores, kind="stable"):
        candidates = np.where(taken, -1.0, overlaps[i])
        j = int(candidates.argmax())
        if candidates[j] >= iou:
            tp[i] = taken[j] = True
    return tp


def precision_recall(
    predictions: Sequence[ImagePredictions], ground_truth: Sequence[ImageTruth],
    iou: float = 0.5,
) -> tuple[float, float]:
    """Precision and recall over a set of images (every prediction counts, whatever its
    score); precision is 1.0 when nothing was predicted."""
    _check_lengths(predictions, ground_truth)
    tp = sum(int(match_detections(p, t, iou).sum()) for p, t in zip(predictions, ground_truth,
                                                                    strict=True))
    num_pred = sum(len(p[1]) for p in predictions)
    num_true = sum(len(t[1]) for t in ground_truth)
    return (tp / num_pred if num_pred else 1.0), (tp / num_true if num_true else 1.0)


def average_precision(tp: np.ndarray, scores: np.ndarray, num_true: int) -> float:
    """All-point interpolated AP (VOC 2010+, COCO without the 101-point sampling): the area
    under the precision-recall curve with precision made monotonically non-increasing."""
    if num_true == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = np.asarray(tp, np.float64)[order]
    cum_tp = np.cumsum(hits)
    recall = np.concatenate([[0.0], cum_tp / num_true, [1.0]])
    precision = np.concatenate([[1.0], cum_tp / np.arange(1, len(hits) + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def average_precision_per_class(
    predictions: Sequence[ImagePredictions], ground_truth: Sequence[ImageTruth],
    iou: float = 0.5, num_classes: int = len(CLASSES),
) -> np.ndarray:
    """AP [num_classes] at IoU `iou`; NaN for a class without ground-truth boxes."""
    _check_lengths(predictions, ground_truth)
    flags = [match_detections(p, t, iou) for p, t in zip(predictions, ground_truth, strict=True)]
    tp = np.concatenate([np.zeros(0, bool), *flags])
    scores = np.concatenate([np.zeros(0), *(np.asarray(p[1], np.float64) for p in predictions)])
    labels = np.concatenate([np.zeros(0, np.int64),
                             *(np.asarray(p[2], np.int64) for p in predictions)])
    gt_labels = np.concatenate([np.zeros(0, np.int64),
                                *(np.asarray(t[1], np.int64) for t in ground_truth)])
    return np.array([
        average_precision(tp[labels == c], scores[labels == c], int((gt_labels == c).sum()))
        for c in range(num_classes)
    ])


def mean_average_precision(
    predictions: Sequence[ImagePredictions], ground_truth: Sequence[ImageTruth],
    iou: float = 0.5, num_classes: int = len(CLASSES),
) -> float:
    """mAP at IoU `iou`: the mean AP over the classes that have ground truth (NaN if none)."""
    ap = average_precision_per_class(predictions, ground_truth, iou, num_classes)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def _check_lengths(predictions: Sequence[Any], ground_truth: Sequence[Any]) -> None:
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} images of predictions but {len(ground_truth)} of "
                         "ground truth")
