"""Region proposals: candidate boxes for the shapes in an RGB uint8 image, by one of three methods.

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
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from geojax.detection.boxes import non_max_suppression

METHODS: tuple[str, ...] = ("contours", "sliding_window", "selective_search")


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
    return proposals_with_extents(image, method, params)[0]


def proposals_with_extents(image: np.ndarray, method: str, params: dict[str, Any]
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
