"""Multi-object detection: propose regions, classify every crop in one call, suppress overlaps.

    result = detect(image, classify, method="contours", input_size=224)
    result.detections        # [Detection(class_name, label, confidence, bbox), ...]
    result.timings_ms        # {'proposal', 'crop', 'classify', 'nms', 'total'}

`classify` is any function from crops (float32 [N, S, S, 3] in [0, 1]) to probabilities [N, C]:
a JAX model, a SavedModel, or the serving proxy's one batched request to TF Serving. It is called
once per image with all its crops (not at all when there are none). Each crop frames its region
the way training images frame a shape: a square whose side is the shape's extent (the diameter
of its smallest enclosing circle) over `DEFAULT_FILL`, on the image's own background around
it. Region proposals come from one of three methods:

- `contours`: distance of each pixel from a robust estimate of the background (a plane per
  channel, so flat and gradient backgrounds alike), measured in units of the background's own
  colour spread along its principal colour axes (a texture varies along one colour direction
  and counts for little there; the spread is a MAD, robust to the shapes), thresholded (a
  noise-level and an Otsu threshold), closed, and the connected regions' boxes; a region must
  stand clear of the background on average and rise from it in a sharp edge (painted shapes
  end in a step, texture blobs fade out), which rejects the blobs of textured backgrounds;
- `sliding_window`: the seed's 224 px window with stride 56 generalised to six square window
  sizes relative to the image's shorter side (largest first), stride a third of the window
  (about 800 windows in a 640x480 image);
- `selective_search`: OpenCV's selective search (fast mode) on a downscaled copy.

Detection quality in pure numpy: `match_detections`, `precision_recall` and
`mean_average_precision` (all-point interpolated AP at an IoU threshold, mean over the classes
that have ground truth).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from geojax import CLASSES, SHAPE_THRESHOLD
from geojax.core.images import resize_to
from geojax.core.results import Detection

METHODS: tuple[str, ...] = ("contours", "sliding_window", "selective_search")
DEFAULT_FILL = 0.8
"""A crop's side is the region's extent / DEFAULT_FILL. Training shapes have extents of 50-82%
of the frame in quick (size_range 0.5-0.95, capped by the stroke margin at 40 px) and 30-95% in
the default config; a contour region's extent runs a few px past the shape's (the smoothing and
the threshold in the blur's tail). Tuned with the quick model on scene seeds 50000-50199 (F1 at
IoU 0.5: 0.962 at 0.6, 0.978-0.981 from 0.72 to 0.84, 0.958 at 0.9); reported on other seeds."""

DETECT_MAX_SIDE = 1024
"""Detection runs on a copy whose longer side is at most this (px), boxes mapped back: the
proposals' cost (float copies of the image, a background fit, filters) stays bounded whatever the
upload's size or aspect ratio. Shapes under 5% of the shorter side are not proposed anyway, and
every crop is shrunk to the model's input, so a larger image adds cost, not detections."""

SAME_OBJECT_IOU = 0.7
"""Detections of different classes overlapping more than this frame one object: one is kept."""

Classifier = Callable[[np.ndarray], np.ndarray]
"""Crops float32 [N, S, S, 3] in [0, 1] -> probabilities float32 [N, C]."""

ImagePredictions = tuple[np.ndarray, np.ndarray, np.ndarray]
"""One image's predictions: boxes [K, 4], scores [K], labels [K]."""

ImageTruth = tuple[np.ndarray, np.ndarray]
"""One image's ground truth: boxes [M, 4], labels [M]."""


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


# ---------------------------------------------------------------------------------------------
# Region proposals
# ---------------------------------------------------------------------------------------------


def _background_residual(image: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The image minus a per-channel plane fitted to its background by trimmed least squares
    (each round refits on the half of the samples closest to the last fit, so shapes covering
    less than half the image do not pull it), and the mask of background samples."""
    height, width = image.shape[:2]
    samples = image[::step, ::step].reshape(-1, 3)
    ys, xs = np.mgrid[0:height:step, 0:width:step]
    design = np.stack([np.ones(xs.size), xs.ravel() / width, ys.ravel() / height], axis=1)
    keep = np.ones(len(samples), bool)
    for _ in range(4):
        coef = np.linalg.lstsq(design[keep], samples[keep], rcond=None)[0]
        distance = np.linalg.norm(samples - design @ coef, axis=1)
        keep = distance <= np.median(distance)
    coef = coef.astype(np.float32)
    x = (np.arange(width, dtype=np.float32) / width)[None, :, None]
    y = (np.arange(height, dtype=np.float32) / height)[:, None, None]
    return image - (coef[0] + x * coef[1] + y * coef[2]), keep


def _whitening(samples: np.ndarray, background: np.ndarray, noise_floor: float) -> np.ndarray:
    """A 3x3 matrix that maps residual colours to units of the background's spread.

    The axes are the principal axes of the background samples' colours (a texture varies
    along one colour direction); the spread along each is the MAD of *all* samples there,
    scaled to a Gaussian's standard deviation: robust to the shapes (under half the image),
    and unlike the spread of the trimmed background half, not biased low (that half holds
    only the residuals below the median: their spread is under half the true one, which makes
    an ordinary texture look significant). `noise_floor` (RGB levels) adds in quadrature.
    """
    _, axes = np.linalg.eigh(np.cov(samples[background].T))
    spread = 1.4826 * np.median(np.abs(samples @ axes), axis=0)
    return (axes / np.sqrt(spread**2 + noise_floor**2)).astype(np.float32)


def _box_filter(boxes: np.ndarray, shape: tuple[int, ...], min_size: float,
                max_area: float) -> np.ndarray:
    """Keep boxes whose longer side is at least `min_size` of the image's shorter side and whose
    area is at most `max_area` of the image's."""
    height, width = shape[:2]
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return (np.maximum(w, h) >= min_size * min(height, width)) & (w * h <= max_area * height * width)


@dataclasses.dataclass(frozen=True)
class ContourRegions:
    """Regions that stand out from the background: `boxes` [K, 4]; `contrast` [K], their mean
    distance from the background in units of its spread; `edge` [K], how sharply they rise
    from it (the median along the outline of the steepest nearby slope of that distance, in
    spreads per pixel); `extent` [K], the diameter of the smallest circle around each region
    (the training renderer's measure of a shape's size) in px."""

    boxes: np.ndarray
    contrast: np.ndarray
    edge: np.ndarray
    extent: np.ndarray

    def select(self, index: np.ndarray) -> ContourRegions:
        """The regions at `index` (indices or a mask), in that order."""
        return ContourRegions(self.boxes[index], self.contrast[index], self.edge[index],
                              self.extent[index])


def contour_regions(
    image: np.ndarray,
    threshold: float = 4.0,
    smoothing: float = 1.5,
    closing: int = 5,
    noise_floor: float = 4.0,
    min_side: int = 1,
) -> ContourRegions:
    """The connected regions of pixels that stand out from the estimated background, at two
    thresholds of their distance from it (`threshold` and Otsu's), whose boxes' longer side is
    at least `min_side` px.

    The distance is the Mahalanobis distance of the Gaussian-smoothed (`smoothing` px) residual
    after the background plane, in units of the background's spread (`_whitening`).
    """
    height, width = image.shape[:2]
    step = max(1, min(height, width) // 96)
    residual, background = _background_residual(image.astype(np.float32), step)
    residual = cv2.GaussianBlur(residual, (0, 0), smoothing)
    whiten = _whitening(residual[::step, ::step].reshape(-1, 3), background, noise_floor)
    distance = np.linalg.norm(residual @ whiten, axis=-1)
    slope = np.hypot(cv2.Sobel(distance, cv2.CV_32F, 1, 0, ksize=3),
                     cv2.Sobel(distance, cv2.CV_32F, 0, 1, ksize=3)) / 8.0
    steepest = cv2.dilate(slope, np.ones((7, 7), np.uint8))  # the edge's steepest point nearby
    top = max(float(np.percentile(distance, 99.5)), 1e-6)
    scaled = np.clip(distance * (255.0 / top), 0, 255).astype(np.uint8)
    otsu = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0] * top / 255.0
    boxes, contrast, edge, extent = [], [], [], []
    ring = np.ones((3, 3), np.uint8)
    for level in sorted({threshold, max(threshold, otsu)}):
        mask = (distance > level).astype(np.uint8)
        if closing > 1:  # joins an outline broken by noise or antialiasing
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (closing, closing))
            mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for k in range(1, count):
            x, y, w, h = (int(v) for v in stats[k, :4])
            if max(w, h) < min_side:
                continue
            region = labels[y:y + h, x:x + w] == k
            inner = cv2.erode(region.view(np.uint8), ring, borderType=cv2.BORDER_CONSTANT,
                              borderValue=0)
            outline = region & ~inner.view(bool)
            boxes.append((x, y, x + w, y + h))
            contrast.append(float(distance[y:y + h, x:x + w][region].mean()))
            edge.append(float(np.median(steepest[y:y + h, x:x + w][outline])))
            points = cv2.findContours(region.view(np.uint8), cv2.RETR_EXTERNAL,
                                      cv2.CHAIN_APPROX_SIMPLE)[0]
            extent.append(2.0 * cv2.minEnclosingCircle(np.concatenate(points))[1])
    return ContourRegions(np.array(boxes, np.float64).reshape(-1, 4),
                          *(np.array(v, np.float64) for v in (contrast, edge, extent)))


def contour_proposals(
    image: np.ndarray,
    threshold: float = 4.0,
    smoothing: float = 1.5,
    closing: int = 5,
    min_size: float = 0.05,
    max_area: float = 0.9,
    noise_floor: float = 4.0,
    min_contrast: float = 5.0,
    min_edge: float = 1.5,
    max_proposals: int = 64,
) -> np.ndarray:
    """Boxes [K, 4] of the regions that stand out from the estimated background, most
    contrasting first (`contour_regions` finds them).

    `threshold` is in units of the background's colour spread; an Otsu threshold of the same
    distance adds the boxes it finds (it separates touching shapes that the noise-level
    threshold joins). `noise_floor` (RGB levels) keeps a perfectly flat background from making
    JPEG ringing look significant. A region is kept when its mean distance is at least
    `min_contrast`, its edge at least `min_edge` spreads per pixel (painted shapes end in a
    step; texture blobs fade out), its longer side at least `min_size` of the image's shorter
    side and its area at most `max_area` of the image's.
    """
    return _contour_candidates(image, threshold, smoothing, closing, min_size, max_area,
                               noise_floor, min_contrast, min_edge, max_proposals).boxes


def _contour_candidates(image: np.ndarray, threshold: float = 4.0, smoothing: float = 1.5,
                        closing: int = 5, min_size: float = 0.05, max_area: float = 0.9,
                        noise_floor: float = 4.0, min_contrast: float = 5.0,
                        min_edge: float = 1.5, max_proposals: int = 64) -> ContourRegions:
    """`contour_proposals` with what is known of each region (see its parameters)."""
    if min(image.shape[:2]) < 4:  # too small for a background estimate or a shape
        return ContourRegions(np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros(0))
    regions = contour_regions(image, threshold, smoothing, closing, noise_floor,
                              min_side=math.ceil(min_size * min(image.shape[:2])))
    keep = np.flatnonzero(_box_filter(regions.boxes, image.shape, min_size, max_area)
                          & (regions.contrast >= min_contrast) & (regions.edge >= min_edge))
    regions = regions.select(keep)
    # Both thresholds often find the same region: keep one box of each.
    return regions.select(non_max_suppression(regions.boxes, regions.contrast,
                                              iou=0.9)[:max_proposals])


def sliding_window_proposals(
    image: np.ndarray,
    scales: Sequence[float] = (0.9, 0.65, 0.45, 0.32, 0.22, 0.15),
    stride: float = 1 / 3,
) -> np.ndarray:
    """Square windows [K, 4], each side a fraction (`scales`, in the order given) of the image's
    shorter side, moved by `stride` of their own side; the last row and column touch the
    image's far edges. (The seed slid one 224 px window by 56 px: a quarter of its side.)"""
    height, width = image.shape[:2]
    boxes = [np.zeros((0, 4))]
    for scale in scales:
        side = min(max(1, round(scale * min(height, width))), height, width)
        step = max(1, round(stride * side))
        xs = np.unique(np.append(np.arange(0, width - side + 1, step), width - side))
        ys = np.unique(np.append(np.arange(0, height - side + 1, step), height - side))
        gx, gy = np.meshgrid(xs, ys)
        corners = np.stack([gx.ravel(), gy.ravel()], axis=1)
        boxes.append(np.concatenate([corners, corners + side], axis=1))
    stacked = np.concatenate(boxes).astype(np.float64)
    first = np.unique(stacked, axis=0, return_index=True)[1]  # scales can round to one side
    return stacked[np.sort(first)]


def selective_search_proposals(
    image: np.ndarray,
    max_side: int = 320,
    max_proposals: int = 200,
    min_size: float = 0.05,
    max_area: float = 0.9,
) -> np.ndarray:
    """OpenCV selective search (fast mode) on a copy whose longer side is at most `max_side`;
    boxes [K, 4] in the original image's pixels, in the search's own order, at most
    `max_proposals` after dropping tiny and near-whole-image regions."""
    height, width = image.shape[:2]
    factor = min(1.0, max_side / max(height, width))
    small = image
    if factor < 1.0:
        small = cv2.resize(image, (max(1, round(width * factor)), max(1, round(height * factor))),
                           interpolation=cv2.INTER_AREA)
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(np.ascontiguousarray(small[..., ::-1]))
    search.switchToSelectiveSearchFast()
    rects = np.asarray(search.process(), np.float64).reshape(-1, 4)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1) / factor
    boxes = np.clip(np.round(boxes), 0, [width, height, width, height])
    boxes = boxes[_box_filter(boxes, image.shape, min_size, max_area)]
    return boxes[:max_proposals]


_PROPOSERS: dict[str, Callable[..., np.ndarray]] = {
    "contours": contour_proposals,
    "sliding_window": sliding_window_proposals,
    "selective_search": selective_search_proposals,
}


def propose_regions(image: np.ndarray, method: str = "contours", **params: Any) -> np.ndarray:
    """Candidate boxes [K, 4] (x0, y0, x1, y1, ends exclusive) in an RGB uint8 image; `params`
    go to the method's function (`contour_proposals`, `sliding_window_proposals`,
    `selective_search_proposals`)."""
    return _propose(image, method, params)[0]


def _propose(image: np.ndarray, method: str, params: dict[str, Any]
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """Boxes [K, 4] and, where the method measures them (contours), the shapes' extents [K]."""
    if method not in _PROPOSERS:
        raise ValueError(f"unknown proposal method {method!r}; choose one of {', '.join(METHODS)}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    if method == "contours":
        regions = _contour_candidates(image, **params)
        return regions.boxes, regions.extent
    return _PROPOSERS[method](image, **params), None


# ---------------------------------------------------------------------------------------------
# Crops, suppression, detection
# ---------------------------------------------------------------------------------------------


def box_extents(boxes: np.ndarray) -> np.ndarray:
    """A shape's extent (the diameter of its smallest enclosing circle) guessed from its box
    alone: between the box's longer side (a circle) and its diagonal (an upright square), so
    their mean."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return (np.maximum(w, h) + np.hypot(w, h)) / 2


def crop_regions(
    image: np.ndarray,
    boxes: np.ndarray,
    size: int,
    fill: float = DEFAULT_FILL,
    extents: np.ndarray | None = None,
) -> np.ndarray:
    """Crops float32 [N, size, size, 3] in [0, 1] that look like the training images.

    A training image is a square frame with one shape whose extent (the diameter of its
    smallest enclosing circle) is a set fraction of the side. So each crop is a square centred
    on its box with side extent / `fill` (at least the box's longer side), the extent measured
    by the proposals (`extents`) or else guessed from the box (`box_extents`). Sizing by the
    box instead makes an upright square fill more of its frame than any training square did,
    and the classifier calls it a rectangle. What falls outside the image is filled with the
    median colour of the crop's border.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not 0.0 < fill <= 1.0:
        raise ValueError(f"fill must be in (0, 1], got {fill}")
    extents = box_extents(boxes) if extents is None else np.asarray(extents, np.float64)
    height, width = image.shape[:2]
    crops = np.empty((len(boxes), size, size, 3), np.float32)
    for i, ((x0, y0, x1, y1), extent) in enumerate(zip(boxes, extents, strict=True)):
        side = max(extent / fill, x1 - x0, y1 - y0, 1.0)
        gx0, gy0 = round((x0 + x1 - side) / 2), round((y0 + y1 - side) / 2)
        gx1, gy1 = gx0 + max(round(side), 1), gy0 + max(round(side), 1)
        cx0, cy0 = min(max(gx0, 0), width - 1), min(max(gy0, 0), height - 1)
        cx1, cy1 = max(min(gx1, width), cx0 + 1), max(min(gy1, height), cy0 + 1)
        crop = image[cy0:cy1, cx0:cx1]
        if (cx0, cy0, cx1, cy1) != (gx0, gy0, gx1, gy1):
            border = np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])
            fill_colour = [int(c) for c in np.median(border, axis=0)]
            crop = cv2.copyMakeBorder(crop, cy0 - gy0, max(gy1 - cy1, 0), cx0 - gx0,
                                      max(gx1 - cx1, 0), cv2.BORDER_CONSTANT, value=fill_colour)
        crops[i] = resize_to(crop, size).astype(np.float32) / 255.0
    return crops


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
    boxes, extents = _propose(image, method, proposal_params or {})
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


def draw_detections(image: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """A copy of the RGB uint8 image with each detection's box and 'class confidence' label."""
    out = np.ascontiguousarray(image.copy())
    scale = max(0.4, min(out.shape[:2]) / 800)
    thickness = max(1, round(scale * 2))
    for det in detections:
        hue = int(det.label * 180 / max(len(CLASSES), 1)) % 180
        color = tuple(int(c) for c in cv2.cvtColor(np.array([[[hue, 220, 230]]], np.uint8),
                                                   cv2.COLOR_HSV2RGB)[0, 0])
        x0, y0, x1, y1 = det.bbox
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), color, thickness)
        text = f"{det.class_name} {det.confidence:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y0 - 2 if y0 - th - base - 2 >= 0 else min(y1 + th + 2, out.shape[0] - base)
        cv2.rectangle(out, (x0, ty - th - 2), (x0 + tw + 2, ty + base), color, cv2.FILLED)
        cv2.putText(out, text, (x0 + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return out


# ---------------------------------------------------------------------------------------------
# Detection quality
# ---------------------------------------------------------------------------------------------


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
