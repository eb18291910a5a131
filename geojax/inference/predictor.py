"""A trained classifier for prediction, from a training workdir's checkpoint or an exported
SavedModel (`ShapePredictor`), and every shape in an image through it (`MultiShapeDetector`).

MODEL is a training workdir (its checkpoint, set up by `geojax.inference.workdir.serving_model`),
an exported SavedModel version directory, or a model base path of numbered versions (the highest
is taken):

    predictor = ShapePredictor("runs/quick")
    predictor.predict("shape.png")        # {'class', 'label', 'confidence', 'probabilities'}
    MultiShapeDetector(predictor).detect(image, method="contours").detections

TensorFlow is imported only when a SavedModel is loaded, JAX only when a workdir is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geojax import CLASSES
from geojax.core.artefact import PIXELS_SIGNATURE, SAVED_MODEL_FILE, versions_on_disk
from geojax.core.errors import UserError
from geojax.core.images import load_image, resize_to
from geojax.core.results import prediction_json
from geojax.detection.detect import DetectionResult, detect


class ModelError(UserError, RuntimeError):
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
    import tensorflow as tf  # here, not at the top: only a SavedModel needs it

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
    # Here, not at the top: JAX, Flax and Orbax come with them, which a SavedModel does not need.
    import jax

    from geojax.inference.workdir import serving_model
    from geojax.training.checkpoints import CheckpointError

    try:
        served = serving_model(str(workdir), checkpoint)
    except CheckpointError as err:
        raise ModelError(f"{err} (a model is a training workdir, a SavedModel directory or a "
                         "model base path of numbered versions)") from err
    probabilities = jax.jit(lambda v, x: jax.nn.softmax(served.apply_fn(v, x).astype("float32")))

    def classify(images: np.ndarray) -> np.ndarray:
        return np.asarray(probabilities(served.variables, images))

    return classify, int(served.config.data.img_size), CLASSES


class ShapePredictor:
    """A trained classifier from a workdir checkpoint or an exported SavedModel.

    `classify(crops)` (float32 [N, S, S, 3] in [0, 1] -> probabilities [N, C]) is the function
    `geojax.detection.detect.detect` takes; `predict(image)` classifies one whole image.
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
    """Every shape in an image: `geojax.detection.detect.detect` with a `ShapePredictor` as
    classifier."""

    def __init__(self, predictor: ShapePredictor) -> None:
        self.predictor = predictor

    def detect(self, image: np.ndarray | str | os.PathLike, method: str = "contours",
               confidence: float = 0.5, iou: float = 0.3, **options: Any) -> DetectionResult:
        """Detections in an RGB uint8 image or image file; `options` as
        `geojax.detection.detect.detect`."""
        array = image if isinstance(image, np.ndarray) else load_image(image)
        return detect(array, self.predictor.classify, method, confidence, iou,
                      input_size=self.predictor.input_size,
                      class_names=self.predictor.class_names, **options)
