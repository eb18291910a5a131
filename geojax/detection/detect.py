"""Multi-object detection: propose regions, classify every crop in one call, suppress overlaps.

    result = detect(image, classify, method="contours", input_size=224)
    result.detections        # [Detection(class_name, label, confidence, bbox), ...]
    result.timings_ms        # {'proposal', 'crop', 'classify', 'nms', 'total'}

`classify` is any function from crops (float32 [N, S, S, 3] in [0, 1]) to probabilities [N, C]:
a JAX model, a SavedModel, or the serving proxy's one batched request to TF Serving. It is called
once per image with all its crops (not at all when there are none). Each crop frames its region
the way training images frame a shape (`geojax.detection.crops`); region proposals come from
one of three methods (`geojax.detection.proposals`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from geojax import CLASSES, SHAPE_THRESHOLD
from geojax.core.results import Detection
from geojax.detection.boxes import non_max_suppression
from geojax.detection.crops import DEFAULT_FILL, crop_regions
from geojax.detection.proposals import proposals_with_extents
from geojax.detection.scoring import ImagePredictions

DETECT_MAX_SIDE = 1024
"""Detection runs on a copy whose longer side is at most this (px), boxes mapped back: the
proposals' cost (float copies of the image, a background fit, filters) stays bounded whatever the
upload's size or aspect ratio. Shapes under 5% of the shorter side are not proposed anyway, and
every crop is shrunk to the model's input, so a larger image adds cost, not detections."""

SAME_OBJECT_IOU = 0.7
"""Detections of different classes overlapping more than this frame one object: one is kept."""

Classifier = Callable[[np.ndarray], np.ndarray]
"""Crops float32 [N, S, S, 3] in [0, 1] -> probabilities float32 [N, C]."""


@dataclasses.dataclass(frozen=True)
class DetectionResult:
    """Detections (highest confidence first), how many regions were classified, and where the
    time went in milliseconds: 'proposal', 'crop', 'classify', 'nms', 'total'."""

    detections: list[Detection]
    num_proposals: int
    timings_ms: dict[str, float]

    def arrays(self) -> ImagePredictions:
        """Boxes [K, 4], scores [K], labels [K]: the form the metrics take."""
        boxes = np.array([d.bbox for d in self.detections], np.float64).reshape(-1, 4)
        scores = np.array([d.confidence for d in self.detections], np.float64)
        labels = np.array([d.label for d in self.detections], np.int64)
        return boxes, scores, labels


@dataclasses.dataclass
class Regions:
    """One image's proposals on its working copy, ready to classify: boxes, crops, the factor
    back to the image's pixels, the image's size and the time spent (`prepare`). Holds no
    full-size image: a batch can prepare its images one at a time."""

    boxes: np.ndarray
    crops: np.ndarray
    to_image: np.ndarray
    width: int
    height: int
    timings: dict[str, float]


def prepare(image: np.ndarray, method: str = "contours", max_regions: int = 1024, *,
            input_size: int, fill: float = DEFAULT_FILL,
            proposal_params: dict[str, Any] | None = None,
            max_side: int = DETECT_MAX_SIDE) -> Regions:
    """The first half of `detect`: propose and crop (see `detect` for the parameters)."""
    started = time.perf_counter()
    height, width = image.shape[:2]
    factor = max(height, width) / max_side
    to_image = np.ones(4)
    if factor > 1:
        shrunk = (max(1, round(width / factor)), max(1, round(height / factor)))
        image = cv2.resize(image, shrunk, interpolation=cv2.INTER_AREA)
        to_image = np.array([width / shrunk[0], height / shrunk[1]] * 2)
    boxes, extents = proposals_with_extents(image, method, proposal_params or {})
    boxes = boxes[:max_regions]
    extents = None if extents is None else extents[:max_regions]
    proposed = time.perf_counter()
    crops = crop_regions(image, boxes, input_size, fill, extents)
    return Regions(boxes, crops, to_image, width, height,
                    {"proposal": proposed - started, "crop": time.perf_counter() - proposed})


def _decide(regions: Regions, probabilities: np.ndarray, confidence: float, iou: float,
            class_names: Sequence[str]) -> tuple[list[Detection], float]:
    """Threshold, per-class then cross-class NMS, boxes back in the image's pixels."""
    started = time.perf_counter()
    boxes = regions.boxes
    labels = probabilities.argmax(axis=1)
    scores = probabilities.max(axis=1)
    confident = np.flatnonzero(scores >= confidence)
    kept = confident[non_max_suppression(boxes[confident], scores[confident], iou,
                                         labels[confident])]
    # Boxes this alike frame one object, which has one class: the likelier one stays.
    kept = kept[non_max_suppression(boxes[kept], scores[kept], max(iou, SAME_OBJECT_IOU))]
    limits = np.array([regions.width, regions.height] * 2)
    pixels = np.clip(np.round(boxes * regions.to_image), 0, limits).astype(int)
    detections = [
        Detection(class_name=class_names[labels[i]], label=int(labels[i]),
                  confidence=float(scores[i]),
                  bbox=(int(pixels[i, 0]), int(pixels[i, 1]), int(pixels[i, 2]),
                        int(pixels[i, 3])))
        for i in kept
    ]
    return detections, time.perf_counter() - started


def detect_batch(
    images: Sequence[np.ndarray],
    classify: Classifier,
    method: str = "contours",
    confidence: float = SHAPE_THRESHOLD,
    iou: float = 0.3,
    max_regions: int = 1024,
    *,
    input_size: int,
    class_names: Sequence[str] = CLASSES,
    fill: float = DEFAULT_FILL,
    proposal_params: dict[str, Any] | None = None,
    crops_per_call: int = 0,
    max_side: int = DETECT_MAX_SIDE,
) -> list[DetectionResult]:
    """`detect` for several images, the crops of all of them classified together (one
    `classify` call, or calls of `crops_per_call`); one result per image, its 'classify' time
    the shared call's."""
    regions = [prepare(image, method, max_regions, input_size=input_size, fill=fill,
                       proposal_params=proposal_params, max_side=max_side) for image in images]
    return finish(regions, classify, confidence, iou, class_names=class_names,
                  crops_per_call=crops_per_call)


def finish(regions: Sequence[Regions], classify: Classifier,
           confidence: float = SHAPE_THRESHOLD, iou: float = 0.3, *,
           class_names: Sequence[str] = CLASSES, crops_per_call: int = 0
           ) -> list[DetectionResult]:
    """The second half of `detect` for prepared images: one classification of all their
    crops, then each image's threshold and suppression."""
    crops = np.concatenate([r.crops for r in regions]) if regions else np.zeros((0,))
    started = time.perf_counter()
    step = crops_per_call if crops_per_call > 0 else max(len(crops), 1)
    parts = [np.asarray(classify(crops[i:i + step]), np.float64)
             for i in range(0, len(crops), step)]
    probabilities = np.concatenate(parts) if parts else np.zeros((0, len(class_names)))
    if probabilities.shape != (len(crops), len(class_names)):
        raise ValueError(f"classifier returned {probabilities.shape} for {len(crops)} crops; "
                         f"expected probabilities [{len(crops)}, {len(class_names)}]")
    classify_s = time.perf_counter() - started
    results, start = [], 0
    for r in regions:
        count = len(r.boxes)
        detections, nms_s = _decide(r, probabilities[start:start + count], confidence, iou,
                                    class_names)
        start += count
        timings = {**r.timings, "classify": classify_s, "nms": nms_s}
        timings["total"] = sum(timings.values())
        results.append(DetectionResult(detections, count,
                                       {k: round(v * 1000.0, 2) for k, v in timings.items()}))
    return results


def detect(
    image: np.ndarray,
    classify: Classifier,
    method: str = "contours",
    confidence: float = SHAPE_THRESHOLD,
    iou: float = 0.3,
    max_regions: int = 1024,
    *,
    input_size: int,
    class_names: Sequence[str] = CLASSES,
    fill: float = DEFAULT_FILL,
    proposal_params: dict[str, Any] | None = None,
    crops_per_call: int = 0,
    max_side: int = DETECT_MAX_SIDE,
) -> DetectionResult:
    """Shapes in an RGB uint8 image: propose regions (at most `max_regions`, the method's best
    first), crop each to `input_size` (`crop_regions`, `fill`), classify all crops in one
    `classify` call, keep those whose top probability is at least `confidence` (by default
    `geojax.SHAPE_THRESHOLD`, below which a crop holds no shape: empty proposals drop out;
    0 keeps every crop, for mAP), suppress
    same-class overlaps above `iou`, then overlaps above `SAME_OBJECT_IOU` whatever the class.

    `crops_per_call` > 0 splits the crops into calls of at most that many (a bound on request
    size; 1 is the seed's one call per crop, kept for benchmarks); 0, the default, is one call.
    An image with a side over `max_side` is detected in a copy shrunk to it (DETECT_MAX_SIDE);
    the boxes are in the given image's pixels either way.
    """
    return detect_batch([image], classify, method, confidence, iou, max_regions,
                        input_size=input_size, class_names=class_names, fill=fill,
                        proposal_params=proposal_params, crops_per_call=crops_per_call,
                        max_side=max_side)[0]
