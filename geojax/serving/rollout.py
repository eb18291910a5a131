"""Canary rollouts: which requests the canary answers (GEOJAX_ROLLOUT), and how far a shadow
answer agrees with the served one."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Any

import numpy as np

from geojax.detection.boxes import box_iou
from geojax.serving.settings import SettingsError

AGREEMENT_WINDOW = 500
"""Shadow comparisons (images) the agreement gauges average over."""


@dataclasses.dataclass(frozen=True)
class Rollout:
    """GEOJAX_ROLLOUT: `mode` '' (none), 'split' (`percent` of requests to the canary) or
    'shadow'."""

    mode: str = ""
    percent: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Rollout:
        text = text.strip()
        if text in ("", "none"):
            return cls()
        if text == "shadow":
            return cls("shadow")
        kind, _, value = text.partition(":")
        try:
            percent = float(value)
        except ValueError:
            percent = -1.0
        if kind != "split" or not 0 <= percent <= 100:
            raise SettingsError(f"GEOJAX_ROLLOUT={text!r}: expected '', 'shadow' or 'split:P' "
                             "with P a percentage, e.g. split:10")
        return cls("split", percent)

    def to_canary(self, client_id: str | None) -> bool:
        """Whether a request goes to the canary: by a hash of `client_id` (the same client
        always lands on the same side), else at random."""
        if client_id:
            digest = hashlib.sha256(client_id.encode()).digest()
            return int.from_bytes(digest[:8], "big") % 10_000 < self.percent * 100
        return random.random() * 100 < self.percent


def detection_agreement(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
    """How far two detection answers agree: detections matched one to one by class and IoU >=
    0.5 (greedy, most confident first), over the mean count; 1.0 when both are empty."""
    if not a and not b:
        return 1.0
    used: set[int] = set()
    matched = 0
    for d in a:
        best, best_iou = None, 0.5
        for j, e in enumerate(b):
            if j in used or e["class"] != d["class"]:
                continue
            iou = float(box_iou(np.array([d["bbox"]], float),
                                np.array([e["bbox"]], float))[0, 0])
            if iou >= best_iou:
                best, best_iou = j, iou
        if best is not None:
            used.add(best)
            matched += 1
    return 2 * matched / (len(a) + len(b))
