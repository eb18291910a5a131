"""Box geometry shared by proposals, detection and scoring: IoU and greedy non-maximum
suppression, on (x0, y0, x1, y1) boxes with exclusive ends."""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of (x0, y0, x1, y1) boxes with exclusive ends."""
    a = np.asarray(a, np.float64).reshape(-1, 1, 4)
    b = np.asarray(b, np.float64).reshape(1, -1, 4)
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-12)


def non_max_suppression(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou: float = 0.3,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, highest score first.

    A box is dropped when it overlaps a higher-scoring kept box by IoU > `iou`. With `labels`,
    only boxes of the same label suppress each other (boxes of different labels are shifted
    apart, as torchvision's `batched_nms` does).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    if labels is not None and len(boxes):
        offset = boxes.max() - boxes.min() + 1.0
        boxes = boxes + np.asarray(labels, np.float64).reshape(-1, 1) * offset
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while len(order):
        best, order = order[0], order[1:]
        keep.append(int(best))
        if len(order):
            order = order[box_iou(boxes[best], boxes[order])[0] <= iou]
    return np.asarray(keep, np.int64)
