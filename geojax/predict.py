"""Predict with a trained model: classify whole images or detect every shape in them.

    python -m geojax.predict --model MODEL IMAGE... [--detect [--method contours]
                             [--confidence 0.5] [--iou 0.3] [--annotate OUT.png]
                             [--classes circle,star] [--max_detections N]
                             [--box_format xyxy|xywh|normalized] [--coco]] [--json]

MODEL is a training workdir (its checkpoint, through `geojax.train`; `--checkpoint best`), an
exported SavedModel version directory, or a model base path of numbered versions (the highest is
taken). In Python:

    predictor = ShapePredictor("runs/quick")
    predictor.predict("shape.png")        # {'class', 'label', 'confidence', 'probabilities'}
    MultiShapeDetector(predictor).detect(image, method="contours").detections

TensorFlow is imported only when a SavedModel is loaded. A missing model or an unreadable image
ends the command with `error: ...` and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geojax import CLASSES, SHAPE_THRESHOLD
from geojax.core.artefact import PIXELS_SIGNATURE, SAVED_MODEL_FILE, versions_on_disk
from geojax.core.images import ImageError, encode_png, load_image, resize_to
from geojax.core.results import BOX_FORMATS, DetectionOptions, coco_results, prediction_json
from geojax.detect import METHODS, DetectionResult, detect, draw_detections


class ModelError(RuntimeError):
    """No usable model at the given path; the message says what was found and what is needed."""


def find_saved_model(path: str | os.PathLike) -> Path | None:
    """The SavedModel directory `path` names: itself, or its highest numbered version; None when
    it holds neither (it may then be a training workdir)."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file or directory")
    if (path / SAVED_MODEL_FILE).is_file():
        return path
    if not path.is_dir():
        raise ModelError(f"{path}: not a directory; expected a training workdir, a SavedModel "
                         "directory or a model base path of numbered versions")
    versions = {v: d for v, d in versions_on_disk(path).items()
                if (d / SAVED_MODEL_FILE).is_file()}
    return versions[max(versions)] if versions else None


def _size_buckets(n: int, batch_size: int) -> list[tuple[int, int, int]]:
    """(start, stop, padded size) chunks of n items: full batches, then a power-of-two remainder,
    so a jitted or XLA-compiled model sees few distinct batch shapes."""
    chunks = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        chunks.append((start, stop, min(batch_size, 1 << (stop - start - 1).bit_length())))
    return chunks


def _saved_model_classifier(directory: Path) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                       int, tuple[str, ...]]:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(directory))
        signature = loaded.signatures[PIXELS_SIGNATURE]
    except KeyError as err:
        raise ModelError(f"{directory}: SavedModel has no '{PIXELS_SIGNATURE}' signature; "
                         "export it with python -m geojax.export") from err
    except Exception as err:  # TF raises many types for a damaged SavedModel
        raise ModelError(f"{directory}: cannot load the SavedModel "
                         f"({type(err).__name__}: {err})") from err
    info_file = directory / "assets" / "model.json"
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        size, names = int(info["input_size"]), tuple(info["classes"])
    else:
        size = int(signature.structured_input_signature[1]["images"].shape[1])
        names = CLASSES

    def classify(images: np.ndarray) -> np.ndarray:
        # Through `loaded`: a signature outliving its SavedModel object loses its variables.
        outputs = loaded.signatures[PIXELS_SIGNATURE](images=tf.constant(images))
        return outputs["probabilities"].numpy()

    return classify, size, names


def _workdir_classifier(workdir: Path, checkpoint: str) -> tuple[
        Callable[[np.ndarray], np.ndarray], int, tuple[str, ...]]:
    import jax

    from geojax import train
    from geojax.export import serving_model

    try:
        served = serving_model(str(workdir), checkpoint)
    except train.CheckpointError as err:
        raise ModelError(f"{err} (a model is a training workdir, a SavedModel directory or a "
                         "model base path of numbered versions)") from err
    probabilities = jax.jit(lambda v, x: jax.nn.softmax(served.apply_fn(v, x).astype("float32")))

    def classify(images: np.ndarray) -> np.ndarray:
        return np.asarray(probabilities(served.variables, images))

    return classify, int(served.config.data.img_size), CLASSES


class ShapePredictor:
    """A trained classifier from a workdir checkpoint or an exported SavedModel.

    `classify(crops)` (float32 [N, S, S, 3] in [0, 1] -> probabilities [N, C]) is the function
    `geojax.detect.detect` takes; `predict(image)` classifies one whole image.
    """

    def __init__(self, model: str | os.PathLike, checkpoint: str = "best",
                 batch_size: int = 64) -> None:
        saved_model = find_saved_model(model)
        if saved_model is not None:
            self._classify, self.input_size, self.class_names = _saved_model_classifier(
                saved_model)
            self.source = f"SavedModel {saved_model}"
        else:
            self._classify, self.input_size, self.class_names = _workdir_classifier(
                Path(model), checkpoint)
            self.source = f"workdir {model} (checkpoint {checkpoint})"
        self.batch_size = batch_size

    def classify(self, crops: np.ndarray) -> np.ndarray:
        """Probabilities float32 [N, C] for images float32 [N, S, S, 3] in [0, 1]."""
        crops = np.asarray(crops, np.float32)
        expected = (self.input_size, self.input_size, 3)
        if crops.ndim != 4 or crops.shape[1:] != expected:
            raise ValueError(f"expected images [N, {self.input_size}, {self.input_size}, 3], "
                             f"got {list(crops.shape)}")
        out = np.zeros((len(crops), len(self.class_names)), np.float32)
        for start, stop, padded in _size_buckets(len(crops), self.batch_size):
            batch = np.zeros((padded, *expected), np.float32)
            batch[:stop - start] = crops[start:stop]
            out[start:stop] = self._classify(batch)[:stop - start]
        return out

    def predict_batch(self, images: Sequence[np.ndarray | str | os.PathLike]
                      ) -> list[dict[str, Any]]:
        """Classify whole images (RGB uint8 arrays or paths), each padded to square and resized
        to the model's input size as in training."""
        if not images:
            return []
        arrays = [image if isinstance(image, np.ndarray) else load_image(image)
                  for image in images]
        pixels = np.stack([resize_to(a, self.input_size) for a in arrays]).astype(np.float32)
        probabilities = self.classify(pixels / 255.0)
        return [prediction_json(p, self.class_names) for p in probabilities]

    def predict(self, image: np.ndarray | str | os.PathLike) -> dict[str, Any]:
        """{'class', 'label', 'confidence', 'shape_found', 'probabilities': {class name:
        probability}} (`prediction_json`)."""
        return self.predict_batch([image])[0]


class MultiShapeDetector:
    """Every shape in an image: `geojax.detect.detect` with a `ShapePredictor` as classifier."""

    def __init__(self, predictor: ShapePredictor) -> None:
        self.predictor = predictor

    def detect(self, image: np.ndarray | str | os.PathLike, method: str = "contours",
               confidence: float = 0.5, iou: float = 0.3, **options: Any) -> DetectionResult:
        """Detections in an RGB uint8 image or image file; `options` as `geojax.detect.detect`."""
        array = image if isinstance(image, np.ndarray) else load_image(image)
        return detect(array, self.predictor.classify, method, confidence, iou,
                      input_size=self.predictor.input_size,
                      class_names=self.predictor.class_names, **options)


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
    try:
        find_saved_model(args.model)  # a wrong path fails before images are read
        images = [load_image(path) for path in args.images]
        predictor = ShapePredictor(args.model, checkpoint=args.checkpoint)
    except (ModelError, ImageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
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
                    print(f"error: cannot write {out} ({err.strerror})", file=sys.stderr)
                    return 2
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
