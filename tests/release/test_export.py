"""jax2tf export: the SavedModel's two signatures answer right and match JAX."""

import json

import jax
import numpy as np
import pytest

from geojax import CLASSES
from geojax.core.artefact import WARMUP_FILE
from geojax.core.images import encode_png, resize_to
from geojax.data import render_shape
from geojax.release.saved_model import saved_model_probabilities

from conftest import TINY_SIZE, tiny_model

SIZE = TINY_SIZE


@pytest.fixture(scope="module")
def exported(tiny_saved_model):
    model, variables = tiny_model()
    samples = [render_shape(np.random.default_rng(i), SIZE) for i in range(6)]
    return tiny_saved_model, jax.jit(lambda v, x: model.apply(v, x, train=False)), variables, \
        samples


def softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_pixels_signature_matches_jax(exported):
    directory, apply_fn, variables, samples = exported
    pixels = np.stack([s.image for s in samples]).astype(np.float32) / 255
    expected = softmax(np.asarray(apply_fn(variables, pixels)))
    got = saved_model_probabilities(directory, pixels)
    assert np.abs(got - expected).max() <= 1e-4


def test_signatures_names_shapes_and_outputs(exported):
    import tensorflow as tf

    directory, *_ = exported
    loaded = tf.saved_model.load(str(directory))
    assert set(loaded.signatures) == {"serving_default", "predict_pixels"}
    pixels_sig = loaded.signatures["predict_pixels"]
    (_, kwargs) = pixels_sig.structured_input_signature
    assert kwargs["images"].shape.as_list() == [None, SIZE, SIZE, 3]
    assert kwargs["images"].dtype == tf.float32
    encoded_sig = loaded.signatures["serving_default"]
    (_, kwargs) = encoded_sig.structured_input_signature
    assert kwargs["images"].shape.as_list() == [None] and kwargs["images"].dtype == tf.string
    outputs = pixels_sig.structured_outputs
    assert set(outputs) == {"probabilities", "classes", "class_names", "logits", "shape_found"}
    assert outputs["probabilities"].shape.as_list() == [None, len(CLASSES)]
    result = pixels_sig(images=tf.zeros([3, SIZE, SIZE, 3]))
    names = [n.decode() for n in result["class_names"].numpy()]
    assert names == [CLASSES[i] for i in result["classes"].numpy()]


def test_encoded_signature_prepares_images_like_python(exported):
    import cv2

    directory, apply_fn, variables, _ = exported
    rng = np.random.default_rng(0)
    wide = render_shape(rng, 90).image[10:70]  # 60x90: padded to square in both paths
    gray = cv2.cvtColor(render_shape(rng, 48).image, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([render_shape(rng, 40).image, np.full((40, 40), 255, np.uint8)])
    images = [wide, np.dstack([gray] * 3), rgba[..., :3]]
    encoded = [encode_png(wide), cv2.imencode(".png", gray)[1].tobytes(),
               cv2.imencode(".png", rgba[..., [2, 1, 0, 3]])[1].tobytes()]
    expected = softmax(np.asarray(apply_fn(
        variables, np.stack([resize_to(im, SIZE) for im in images]).astype(np.float32) / 255)))
    got = saved_model_probabilities(directory, np.array(encoded, dtype=object),
                                    signature="serving_default")
    assert got.shape == (3, len(CLASSES))
    assert np.abs(got - expected).max() < 0.02  # TF's area resize vs OpenCV's, 8-bit rounding
    assert (got.argmax(-1) == expected.argmax(-1)).all()


def test_assets_and_warmup_requests(exported):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    directory, *_ = exported
    assert (directory / "assets/labels.txt").read_text().split() == list(CLASSES)
    info = json.loads((directory / "assets/model.json").read_text())
    assert info == {"input_size": SIZE, "classes": list(CLASSES), "shape_threshold": 0.5}
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(directory / WARMUP_FILE))]
    signatures = [log.predict_log.request.model_spec.signature_name for log in logs]
    assert signatures == ["serving_default", "predict_pixels"]
    assert len(logs[0].predict_log.request.inputs["images"].string_val) == 2
