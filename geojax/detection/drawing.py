"""Drawing detections: boxes and 'class confidence' labels on a copy of the image."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from geojax import CLASSES
from geojax.core.results import Detection


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
