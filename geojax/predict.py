"""Predict with a trained model: classify whole images or detect every shape in them.

    python -m geojax.predict --model MODEL IMAGE... [--detect [--method contours]
                             [--confidence 0.5] [--iou 0.3] [--annotate OUT.png]
                             [--classes circle,star] [--max_detections N]
                             [--box_format xyxy|xywh|normalized] [--coco]] [--json]

MODEL is a training workdir (its checkpoint; `--checkpoint best`), an exported SavedModel version
directory, or a model base path of numbered versions (the highest is taken). In Python, the
same through `geojax.inference.predictor` (`ShapePredictor`, `MultiShapeDetector`).

TensorFlow is imported only when a SavedModel is loaded. A missing model or an unreadable image
ends the command with `geojax.predict: ...` and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geojax import SHAPE_THRESHOLD
from geojax.core.errors import exit_with, user_errors
from geojax.core.images import encode_png, load_image
from geojax.core.results import BOX_FORMATS, DetectionOptions, coco_results
from geojax.detection.detect import DetectionResult
from geojax.detection.drawing import draw_detections
from geojax.detection.proposals import METHODS
from geojax.inference.predictor import MultiShapeDetector, ShapePredictor, find_saved_model

PROG = "geojax.predict"


def _annotation_path(template: str, index: int, count: int) -> Path:
    path = Path(template)
    return path if count == 1 else path.with_name(f"{path.stem}-{index}{path.suffix}")


def _format_text(name: str, result: dict[str, Any] | DetectionResult) -> str:
    if isinstance(result, DetectionResult):
        lines = [f"{name}: {len(result.detections)} shape(s) from {result.num_proposals} "
                 f"regions in {result.timings_ms['total']:.0f} ms"]
        lines += [f"  {d.class_name:<9} {d.confidence:.3f}  bbox {list(d.bbox)}"
                  for d in result.detections]
        return "\n".join(lines)
    ranked = sorted(result["probabilities"].items(), key=lambda kv: -kv[1])
    if result["shape_found"]:
        lines = [f"{name}: {result['class']} ({result['confidence']:.3f})"]
    else:
        lines = [f"{name}: no shape (nearest: {result['class']} {result['confidence']:.3f}, "
                 f"below {SHAPE_THRESHOLD})"]
    lines += [f"  {label:<9} {p:.4f}" for label, p in ranked]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m geojax.predict",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True,
                        help="training workdir, SavedModel directory or model base path")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--checkpoint", default="best",
                        help="for a workdir: 'best', 'latest' or a step number")
    parser.add_argument("--detect", action="store_true",
                        help="detect every shape instead of classifying the whole image")
    parser.add_argument("--method", choices=METHODS, default="contours",
                        help="region proposals for --detect")
    parser.add_argument("--confidence", type=float, default=0.5,
                        help="--detect: lowest class probability kept")
    parser.add_argument("--iou", type=float, default=0.3,
                        help="--detect: same-class boxes overlapping more are suppressed")
    parser.add_argument("--annotate", metavar="OUT.png",
                        help="--detect: write the image with boxes and labels (several images: "
                             "OUT-0.png, OUT-1.png, ...)")
    parser.add_argument("--classes", default=None,
                        help="--detect: comma-separated class names to keep (default: all)")
    parser.add_argument("--max_detections", type=int, default=None,
                        help="--detect: keep at most this many per image, the most confident")
    parser.add_argument("--box_format", choices=BOX_FORMATS, default="xyxy",
                        help="--detect --json: xyxy [x0, y0, x1, y1] px, xywh [x, y, w, h] px, "
                             "normalized (xyxy over the width and height)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--coco", action="store_true",
                        help="--detect: print COCO results entries (image_id = the image's "
                             "position, category_id = label + 1, bbox [x, y, w, h], score)")
    args = parser.parse_args(argv)
    detect_only = {"--annotate": args.annotate, "--classes": args.classes,
                   "--max_detections": args.max_detections, "--coco": args.coco}
    for flag, value in detect_only.items():
        if value and not args.detect:
            parser.error(f"{flag} is about detections: add --detect")
    try:
        options = DetectionOptions.parse(args.classes, args.max_detections, args.box_format)
    except ValueError as err:
        parser.error(str(err))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with user_errors(PROG):
        find_saved_model(args.model)  # a wrong path fails before images are read
        images = [load_image(path) for path in args.images]
        predictor = ShapePredictor(args.model, checkpoint=args.checkpoint)
    if args.detect:
        detector = MultiShapeDetector(predictor)
        results: list[Any] = [detector.detect(image, args.method, args.confidence, args.iou)
                              for image in images]
        results = [dataclasses.replace(r, detections=options.select(r.detections))
                   for r in results]
        if args.annotate:
            for i, (image, result) in enumerate(zip(images, results, strict=True)):
                out = _annotation_path(args.annotate, i, len(images))
                try:
                    out.write_bytes(encode_png(draw_detections(image, result.detections)))
                except OSError as err:
                    exit_with(PROG, f"cannot write {out} ({err.strerror})")
    else:
        results = predictor.predict_batch(images)
    if args.coco:
        print(json.dumps([entry for i, r in enumerate(results)
                          for entry in coco_results(r.detections, i)], indent=1))
        return 0
    if args.json:
        print(json.dumps({
            "model": predictor.source,
            "results": [
                {"image": name, "method": args.method, "num_proposals": r.num_proposals,
                 "timings_ms": r.timings_ms, "box_format": args.box_format,
                 "width": image.shape[1], "height": image.shape[0],
                 "detections": [d.to_dict(args.box_format, image.shape[1], image.shape[0])
                                for d in r.detections]}
                if isinstance(r, DetectionResult) else {"image": name, **r}
                for name, r, image in zip(args.images, results, images, strict=True)
            ],
        }, indent=1))
    else:
        print("\n".join(_format_text(name, r)
                        for name, r in zip(args.images, results, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
