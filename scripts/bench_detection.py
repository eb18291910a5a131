"""Detection quality per proposal method on generated scenes: proposal recall, and with a model
mAP@0.5, precision and recall.

    python -m scripts.bench_detection [--model WORKDIR_OR_SAVEDMODEL] [--scenes 100]
                                      [--methods contours sliding_window selective_search]
                                      [--scenes_dir DIR]

Proposal recall (model-free): the fraction of ground-truth boxes that some proposal overlaps with
IoU >= 0.5, an upper bound on detection recall. With `--model`, every scene goes through
`geojax.detection.detect.detect` (NMS at `--iou`): mAP@0.5 is computed over all detections (confidence
threshold 0), precision and recall over those at `--confidence`. Scenes come from
`compose_scene` with seeds `--seed`, `--seed` + 1, ...: every method sees the same images. (The
contour detector's settings were tuned on seeds 50000-50199; the default seeds are others.)
With `--scenes_dir DIR` the scenes are read instead from DIR/annotations.json (COCO, as
`python -m geojax.data scenes` or `python -m scripts.seed_style_shapes scenes` write it) and the
images it names; `--scenes` then takes the first N (default: all), `--seed`, `--width` and
`--height` are not used.
Prints one markdown table; times are means per image on this machine.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from geojax import CLASSES
from geojax.data import Scene, compose_scene
from geojax.detection.boxes import box_iou
from geojax.detection.detect import detect
from geojax.detection.proposals import METHODS, propose_regions
from geojax.detection.scoring import mean_average_precision, precision_recall

if TYPE_CHECKING:
    from geojax.inference.predictor import ShapePredictor


def load_scenes(scenes_dir: str | Path, limit: int | None = None) -> list[Scene]:
    """Scenes from DIR/annotations.json (COCO: bbox [x, y, width, height], category_id the
    label + 1, or a category named as a class) and its images, in image id order."""
    root = Path(scenes_dir)
    coco = json.loads((root / "annotations.json").read_text())
    names = {c["id"]: c.get("name") for c in coco.get("categories", [])}
    label_of = {cid: CLASSES.index(name) if name in CLASSES else cid - 1
                for cid, name in names.items()}
    per_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        per_image.setdefault(ann["image_id"], []).append(ann)
    scenes = []
    for entry in sorted(coco["images"], key=lambda e: e["id"])[:limit]:
        with Image.open(root / entry["file_name"]) as img:
            image = np.asarray(img.convert("RGB"), dtype=np.uint8)
        anns = per_image.get(entry["id"], [])
        boxes = np.array([[round(x), round(y), round(x + w), round(y + h)]
                          for x, y, w, h in (a["bbox"] for a in anns)], np.int64).reshape(-1, 4)
        labels = np.array([label_of.get(a["category_id"], a["category_id"] - 1) for a in anns],
                          np.int64)
        scenes.append(Scene(image=image, boxes=boxes, labels=labels))
    return scenes


def proposal_row(method: str, scenes: list[Scene]) -> dict[str, float]:
    hits = total = count = 0
    seconds = 0.0
    for scene in scenes:
        started = time.perf_counter()
        boxes = propose_regions(scene.image, method)
        seconds += time.perf_counter() - started
        count += len(boxes)
        total += len(scene.boxes)
        if len(boxes) and len(scene.boxes):
            hits += int((box_iou(scene.boxes, boxes).max(axis=1) >= 0.5).sum())
    return {"proposal recall": hits / max(total, 1), "proposals/img": count / len(scenes),
            "proposal ms": 1000 * seconds / len(scenes)}


def detection_row(method: str, scenes: list[Scene], predictor: ShapePredictor,
                  confidence: float, iou: float) -> dict[str, float]:
    predictions, truth = [], []
    total_ms = 0.0
    for scene in scenes:
        result = detect(scene.image, predictor.classify, method, confidence=0.0, iou=iou,
                        input_size=predictor.input_size, class_names=predictor.class_names)
        predictions.append(result.arrays())
        truth.append((scene.boxes, scene.labels))
        total_ms += result.timings_ms["total"]
    confident = [(b[s >= confidence], s[s >= confidence], c[s >= confidence])
                 for b, s, c in predictions]
    precision, recall = precision_recall(confident, truth)
    return {"mAP@0.5": mean_average_precision(predictions, truth),
            f"precision@{confidence:g}": precision, f"recall@{confidence:g}": recall,
            "detect ms": total_ms / len(scenes)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="training workdir, SavedModel or model base path")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--scenes", type=int, default=None,
                        help="scenes to generate (default 100), or to read from --scenes_dir "
                             "(default all)")
    parser.add_argument("--scenes_dir", help="read COCO scenes (annotations.json) from DIR")
    parser.add_argument("--seed", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--confidence", type=float, default=0.5)
    parser.add_argument("--iou", type=float, default=0.3, help="NMS IoU threshold")
    args = parser.parse_args()
    if args.scenes_dir:
        scenes = load_scenes(args.scenes_dir, args.scenes)
        if not scenes:
            print(f"error: no scenes in {args.scenes_dir}", file=sys.stderr)
            return 2
        sizes = sorted({f"{s.image.shape[1]}x{s.image.shape[0]}" for s in scenes})
        size = sizes[0] if len(sizes) == 1 else "mixed sizes"
    else:
        scenes = [compose_scene(np.random.default_rng(args.seed + i), args.width, args.height)
                  for i in range(100 if args.scenes is None else args.scenes)]
        size = f"{args.width}x{args.height}"
    predictor = None
    if args.model:
        from geojax.inference.predictor import ModelError, ShapePredictor

        try:
            predictor = ShapePredictor(args.model, checkpoint=args.checkpoint)
        except ModelError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    rows = []
    for method in args.methods:
        row = proposal_row(method, scenes)
        if predictor is not None:
            row |= detection_row(method, scenes, predictor, args.confidence, args.iou)
        rows.append((method, row))
    num_boxes = sum(len(s.boxes) for s in scenes)
    source = f", model: {predictor.source}" if predictor else ""
    print(f"$ python -m {shlex.join(['scripts.bench_detection', *sys.argv[1:]])}\n")
    origin = f" from {args.scenes_dir}" if args.scenes_dir else ""
    print(f"{len(scenes)} scenes {size}{origin}, {num_boxes} shapes{source}\n")
    columns = list(rows[0][1])
    print("| method | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for method, row in rows:
        cells = [f"{v:.1f}" if k.endswith(("ms", "/img")) else f"{v:.3f}" for k, v in row.items()]
        print(f"| {method} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
