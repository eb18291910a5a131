"""A trained network as a TF Serving SavedModel (jax2tf), and reading one back.

The SavedModel (native serialization: one XlaCallModule op lowered for both CPU and CUDA, batch
dimension polymorphic; the server needs `--xla_cpu_compilation_enabled=true`) has two signatures:

- `serving_default`: `images` tf.string [N], encoded PNG/JPEG/BMP/GIF of any size and mode
  (REST clients send {"b64": ...}). Decoded, alpha composited over white, padded to square with
  the border's median colour and resized inside the graph: the same preparation as
  `geojax.core.images.resize_to`.
- `predict_pixels`: `images` float32 [N, S, S, 3] in [0, 1] at the model's input size (what the
  detection proxy sends for a batch of crops).

Both return `probabilities` [N, C], `classes` [N] int64, `class_names` [N] string, `logits`
(divided by the temperature fitted after training: calibrated) and `shape_found` [N] bool: the
top probability reaches `geojax.SHAPE_THRESHOLD`; false means "no shape" (the class is only the
nearest guess).
`assets/labels.txt` and `assets/model.json` (input size, classes) travel inside the SavedModel;
`assets.extra/tf_serving_warmup_requests` holds real requests for both signatures.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geojax import SHAPE_THRESHOLD
from geojax.core.artefact import PIXELS_SIGNATURE, SERVING_SIGNATURE, WARMUP_FILE
from geojax.core.console import import_tensorflow


def decode_for_model(tf: Any, data: Any, size: int) -> Any:
    """Encoded image bytes -> float32 [size, size, 3] in [0, 1], inside a TF graph."""
    image = tf.io.decode_image(data, channels=0, dtype=tf.float32, expand_animations=False)
    channels = tf.shape(image)[-1]
    color = tf.cond(channels < 3, lambda: tf.tile(image[..., :1], [1, 1, 3]),
                    lambda: image[..., :3])
    alpha = tf.cond(tf.equal(channels % 2, 0), lambda: image[..., -1:],
                    lambda: tf.ones_like(image[..., :1]))
    image = color * alpha + (1.0 - alpha)
    # As geojax.core.images.resize_to: the longer side scaled to `size` first, then the
    # shorter padded with the median border colour (a long strip never becomes a huge square).
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    border = tf.concat([image[0], image[-1], image[:, 0], image[:, -1]], axis=0)
    ordered = tf.sort(border, axis=0)
    n = tf.shape(border)[0]
    fill = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2.0
    side = tf.maximum(height, width)
    scale = tf.cast(size, tf.float64) / tf.cast(side, tf.float64)

    def scaled(length: Any) -> Any:
        return tf.clip_by_value(tf.cast(tf.round(tf.cast(length, tf.float64) * scale), tf.int32),
                                1, size)

    new_h, new_w = scaled(height), scaled(width)
    image = tf.cond(
        side > size,
        lambda: tf.image.resize(image, [new_h, new_w], method="area"),
        lambda: tf.image.resize(image, [new_h, new_w], method="bilinear"),
    )
    top, left = (size - new_h) // 2, (size - new_w) // 2
    resized = tf.pad(image - fill, [[top, size - new_h - top], [left, size - new_w - left],
                                    [0, 0]]) + fill
    return tf.clip_by_value(tf.reshape(resized, [size, size, 3]), 0.0, 1.0)


def export_saved_model(
    apply_fn: Callable[[Any, Any], Any],
    variables: Any,
    input_size: int,
    class_names: Sequence[str],
    directory: str | os.PathLike,
    warmup_images: Sequence[bytes] = (),
) -> None:
    """Write a SavedModel of `apply_fn(variables, images) -> logits` to `directory`."""
    tf = import_tensorflow()
    from jax.experimental import jax2tf  # deferred as TensorFlow above: it imports TF

    size = int(input_size)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tf_variables = tf.nest.map_structure(
        lambda v: tf.Variable(np.asarray(v), trainable=False), variables)
    logits_fn = jax2tf.convert(
        apply_fn,
        polymorphic_shapes=[None, f"(b, {size}, {size}, 3)"],
        native_serialization_platforms=("cpu", "cuda"),
        with_gradient=False,
    )
    names = tf.constant(list(class_names))

    def outputs(images: Any) -> dict[str, Any]:
        logits = tf.cast(logits_fn(tf_variables, images), tf.float32)
        classes = tf.argmax(logits, axis=-1)
        probabilities = tf.nn.softmax(logits)
        return {"probabilities": probabilities, "classes": classes,
                "class_names": tf.gather(names, classes), "logits": logits,
                "shape_found": tf.reduce_max(probabilities, axis=-1) >= SHAPE_THRESHOLD}

    @tf.function(autograph=False,
                 input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, "images")])
    def predict_pixels(images):
        return outputs(images)

    @tf.function(autograph=False,
                 input_signature=[tf.TensorSpec([None], tf.string, "images")])
    def serving_default(images):
        pixels = tf.map_fn(lambda b: decode_for_model(tf, b, size), images,
                           fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        return outputs(pixels)

    # Named after the incoming directory, so the registry's gc clears it if the export dies.
    assets = directory.parent / f"{directory.name}-assets"
    assets.mkdir(exist_ok=True)
    (assets / "labels.txt").write_text("\n".join(class_names) + "\n")
    (assets / "model.json").write_text(json.dumps(
        {"input_size": size, "classes": list(class_names), "shape_threshold": SHAPE_THRESHOLD},
        indent=1))
    module = tf.Module()
    module.variables_tree = tf_variables
    module.labels = tf.saved_model.Asset(str(assets / "labels.txt"))
    module.model_info = tf.saved_model.Asset(str(assets / "model.json"))
    try:
        tf.saved_model.save(
            module, str(directory),
            signatures={SERVING_SIGNATURE: serving_default.get_concrete_function(),
                        PIXELS_SIGNATURE: predict_pixels.get_concrete_function()},
            options=tf.saved_model.SaveOptions(experimental_custom_gradients=False),
        )
    finally:
        shutil.rmtree(assets, ignore_errors=True)
    write_warmup_requests(directory, size, warmup_images)


def write_warmup_requests(directory: Path, size: int, images: Sequence[bytes]) -> None:
    """TF Serving replays these PredictionLogs when it loads the version, so the first user
    request does not pay for compilation: one per signature."""
    tf = import_tensorflow()
    from tensorflow_serving.apis import (  # deferred: it imports all of TensorFlow
        predict_pb2,
        prediction_log_pb2,
    )

    path = directory / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    requests = []
    if images:
        encoded = predict_pb2.PredictRequest()
        encoded.model_spec.signature_name = "serving_default"
        encoded.inputs["images"].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string))
        requests.append(encoded)
    pixels = predict_pb2.PredictRequest()
    pixels.model_spec.signature_name = PIXELS_SIGNATURE
    pixels.inputs["images"].CopyFrom(
        tf.make_tensor_proto(np.full((1, size, size, 3), 0.5, np.float32)))
    requests.append(pixels)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def saved_model_probabilities(directory: str | os.PathLike, images: np.ndarray,
                              signature: str = PIXELS_SIGNATURE) -> np.ndarray:
    """Run a signature of a SavedModel with TensorFlow: probabilities [N, C]."""
    tf = import_tensorflow()
    loaded = tf.saved_model.load(str(directory))
    fn = loaded.signatures[signature]
    return fn(images=tf.constant(images))["probabilities"].numpy()
