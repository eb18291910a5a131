"""The JSON shapes of answers, one for each kind, used by `geojax.predict` and the proxy alike:
a classified image (`prediction_json`), a detection (`Detection.to_dict`) and COCO results
entries (`coco_results`), plus the options a caller picks detections and boxes with
(`DetectionOptions`: classes, max_detections, box_format), as hosted detection APIs offer them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from geojax import CLASSES, SHAPE_THRESHOLD

BOX_FORMATS: tuple[str, ...] = ("xyxy", "xywh", "normalized")
"""'xyxy': [x0, y0, x1, y1] in pixels, ends exclusive (the default); 'xywh': [x, y, width,
height] in pixels (COCO's); 'normalized': [x0, y0, x1, y1] as fractions of the width and height."""

RESPONSE_FORMATS: tuple[str, ...] = ("json", "coco")


@dataclasses.dataclass(frozen=True)
class Detection:
    """One located shape; `bbox` is (x0, y0, x1, y1) in image pixels, ends exclusive."""

    class_name: str
    label: int
    confidence: float
    bbox: tuple[int, int, int, int]

    def box(self, box_format: str = "xyxy", width: int = 0, height: int = 0) -> list[float]:
        """The box in `box_format` (BOX_FORMATS; 'normalized' needs the image's size)."""
        x0, y0, x1, y1 = (int(v) for v in self.bbox)
        if box_format == "xyxy":
            return [x0, y0, x1, y1]
        if box_format == "xywh":
            return [x0, y0, x1 - x0, y1 - y0]
        if box_format == "normalized":
            if width <= 0 or height <= 0:
                raise ValueError("normalized boxes need the image's width and height")
            return [x0 / width, y0 / height, x1 / width, y1 / height]
        raise ValueError(f"box_format={box_format!r} is not one of {', '.join(BOX_FORMATS)}")

    def to_dict(self, box_format: str = "xyxy", width: int = 0, height: int = 0
                ) -> dict[str, Any]:
        """The one JSON shape of a detection (the proxy's and `geojax.predict --json`'s), with
        the keys of a classified image (`prediction_json`)."""
        return {"class": self.class_name, "label": self.label, "confidence": self.confidence,
                "bbox": self.box(box_format, width, height)}


@dataclasses.dataclass(frozen=True)
class DetectionOptions:
    """Which detections a caller wants and how: only `classes` (names; None: all), at most
    `max_detections` (the most confident; None: all), boxes in `box_format`."""

    classes: tuple[str, ...] | None = None
    max_detections: int | None = None
    box_format: str = "xyxy"

    def __post_init__(self) -> None:
        if self.classes is not None:
            unknown = [c for c in self.classes if c not in CLASSES]
            if unknown or not self.classes:
                raise ValueError(f"classes: unknown {', '.join(map(repr, unknown)) or 'none'}; "
                                 f"choose from {', '.join(CLASSES)}")
        if self.max_detections is not None and self.max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {self.max_detections}")
        if self.box_format not in BOX_FORMATS:
            raise ValueError(f"box_format={self.box_format!r} is not one of "
                             f"{', '.join(BOX_FORMATS)}")

    @classmethod
    def parse(cls, classes: str | None = None, max_detections: int | None = None,
              box_format: str = "xyxy") -> DetectionOptions:
        """From text options: `classes` comma-separated ("circle,star")."""
        names = None
        if classes is not None:
            names = tuple(c.strip() for c in classes.split(",") if c.strip())
        return cls(names, max_detections, box_format)

    def select(self, detections: Sequence[Detection]) -> list[Detection]:
        """The detections of the wanted classes, most confident first, at most
        `max_detections`."""
        kept = [d for d in detections if self.classes is None or d.class_name in self.classes]
        kept.sort(key=lambda d: -d.confidence)
        return kept[:self.max_detections] if self.max_detections else kept


def coco_results(detections: Sequence[Detection], image_id: int) -> list[dict[str, Any]]:
    """COCO results entries: `image_id`, `category_id` (label + 1, as the scenes'
    annotations.json numbers the classes), `bbox` [x, y, width, height] in pixels, `score`."""
    return [{"image_id": image_id, "category_id": d.label + 1, "bbox": d.box("xywh"),
             "score": d.confidence} for d in detections]


def prediction_json(probabilities: np.ndarray, class_names: Sequence[str] = CLASSES
                    ) -> dict[str, Any]:
    """One classified image: the top 'class' and its 'label' and 'confidence', 'shape_found'
    (the confidence reaches SHAPE_THRESHOLD; false: no shape, the class is only the nearest
    guess) and every class's probability."""
    label = int(probabilities.argmax())
    return {"class": class_names[label], "label": label,
            "confidence": float(probabilities[label]),
            "shape_found": bool(probabilities[label] >= SHAPE_THRESHOLD),
            "probabilities": {name: float(v) for name, v in zip(class_names, probabilities,
                                                               strict=True)}}
