"""Export a trained workdir to TF Serving: a jax2tf SavedModel as the registry's next version.

    python -m geojax.export --workdir runs/quick [--base_path export/geojax]
                            [--config_file serving/models.config] [--checkpoint best]

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

Export is written into a directory the registry hands out inside the model base path, checked
for parity against JAX (max |delta probability| <= 1e-4 on a fixed batch; a failing export is
deleted, never registered) and only then renamed into place as the next version.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from geojax import SHAPE_THRESHOLD
from geojax.core.artefact import PIXELS_SIGNATURE, SERVING_SIGNATURE, WARMUP_FILE

PARITY_TOLERANCE = 1e-4
PARITY_BATCH = 32


class ExportError(RuntimeError):
    """The export could not produce a correct SavedModel; nothing was registered."""


def _tf():
    # TensorFlow is imported here, not at module level: it must stay out of training processes
    # that import geojax (on a GPU it takes the memory JAX needs).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


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
    tf = _tf()
    from jax.experimental import jax2tf

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
    tf = _tf()
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

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
    tf = _tf()
    loaded = tf.saved_model.load(str(directory))
    fn = loaded.signatures[signature]
    return fn(images=tf.constant(images))["probabilities"].numpy()


def directory_size(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


def _format_bytes(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"


def git_commit() -> str | None:
    """The commit of the code that exported (None outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


class ServingModel(NamedTuple):
    """A workdir's checkpoint as it is served: `apply_fn(variables, images float32 [N, S, S, 3]
    in [0, 1]) -> calibrated logits` (float32, one device)."""

    apply_fn: Callable[[Any, Any], Any]
    variables: Any
    config: Any  # the workdir's ml_collections config
    step: int
    temperature: float


def serving_model(workdir: str, checkpoint: str = "best") -> ServingModel:
    """WORKDIR's 'best', 'latest' or numbered checkpoint set up for serving: float32 on one
    device (no mesh axis for BatchNorm, no bfloat16 on CPU servers), logits divided by the
    temperature fitted after training. `geojax.export` and `geojax.predict` both serve this."""
    import jax
    import ml_collections

    from geojax import models, train

    config = train.read_config(workdir)
    state, _, _, step = train.load_for_inference(config, workdir, checkpoint)
    state = state.for_inference()  # the EMA weights when the run kept them
    temperature = train.read_temperature(workdir, step)
    model_config = ml_collections.ConfigDict(config.model.to_dict())
    model_config.dtype = "float32"
    model_config.bn_axis_name = None
    model = models.create_model(model_config)
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})

    def apply_fn(v: Any, images: Any) -> Any:
        return model.apply(v, images, train=False) / temperature

    return ServingModel(apply_fn, variables, config, int(step), temperature)


def export_workdir(
    workdir: str,
    base_path: str = "export/geojax",
    config_file: str = "serving/models.config",
    model_name: str = "geojax",
    checkpoint: str = "best",
    server: str | None = "auto",
) -> int:
    """Export WORKDIR's checkpoint as the next version under `base_path`; returns the version."""
    import jax

    from geojax import CLASSES, drift, metrics
    from geojax.core.images import encode_png
    from geojax.data import eval_split
    from geojax.registry import Registry

    started = time.perf_counter()
    apply_fn, variables, config, step, temperature = serving_model(workdir, checkpoint)

    val = eval_split(config.data, "val", seed=config.seed)
    pixels = val["image"].astype(np.float32) / 255.0
    probabilities = metrics.softmax(np.asarray(jax.jit(apply_fn)(variables, pixels)))

    registry = Registry(base_path, config_file=config_file, model_name=model_name,
                        server=server)
    incoming = registry.incoming_dir()
    try:
        export_saved_model(apply_fn, variables, config.data.img_size, CLASSES, incoming,
                           warmup_images=[encode_png(im) for im in val["image"][:2]])
        batch = slice(0, PARITY_BATCH)
        exported = saved_model_probabilities(incoming, pixels[batch])
        delta = float(np.abs(exported - probabilities[batch]).max())
        if not delta <= PARITY_TOLERANCE:
            raise ExportError(f"SavedModel differs from JAX by {delta:.2e} in probability "
                              f"(tolerance {PARITY_TOLERANCE:.0e}); not registered")
        metrics_file = Path(workdir) / "eval" / "metrics.json"
        metadata = {
            "workdir": str(Path(workdir).resolve()),
            "checkpoint": {"which": checkpoint, "step": int(step)},
            "config": config.to_dict(),
            "git_commit": git_commit(),
            "metrics": json.loads(metrics_file.read_text()) if metrics_file.exists() else {},
            "temperature": temperature,  # the logits are divided by it (calibration)
            "ema_decay": float(config.get("ema_decay", 0.0)),  # > 0: the EMA weights
            "shape_threshold": SHAPE_THRESHOLD,
            "parity": delta,  # max |probability| difference, SavedModel vs JAX
            "parity_check": {"batch": len(exported), "tolerance": PARITY_TOLERANCE,
                             "passed": True},
            "input_size": int(config.data.img_size),
            "classes": list(CLASSES),
            "signatures": [SERVING_SIGNATURE, PIXELS_SIGNATURE],
            "reference_profile": drift.profile(
                probabilities, [drift.image_statistics(im) for im in val["image"]]),
            "export_seconds": round(time.perf_counter() - started, 1),
            "saved_model_bytes": directory_size(incoming),
        }
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    return registry.register(incoming, metadata)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m geojax.export",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="training workdir to export")
    parser.add_argument("--base_path", default="export/geojax",
                        help="TF Serving model base path (numbered versions)")
    parser.add_argument("--config_file", default="serving/models.config",
                        help="TF Serving model config file the registry rewrites")
    parser.add_argument("--model_name", default="geojax", help="model name in TF Serving")
    parser.add_argument("--checkpoint", default="best",
                        help="'best', 'latest' or a step number")
    parser.add_argument("--server", default="auto",
                        help="gRPC host:port of a running model server: wait for the new "
                             "version to load before labelling it; 'auto' (default): "
                             "$GEOJAX_MODEL_SERVER or localhost:8500 if a server listens there; "
                             "'none': never wait")
    args = parser.parse_args(argv)
    from geojax.core.console import quiet_start_up

    quiet_start_up()  # TensorFlow's and JAX's C++ start-up lines
    logging.getLogger("absl").setLevel(logging.ERROR)  # Orbax's read-only checkpoint notes
    logging.basicConfig(format="%(message)s")  # the registry's notes, as plain lines
    from geojax.registry import RegistryError
    from geojax.train import CheckpointError

    try:
        version = export_workdir(args.workdir, args.base_path, args.config_file,
                                 args.model_name, args.checkpoint,
                                 None if args.server == "none" else args.server)
    except (ExportError, CheckpointError, RegistryError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    version_dir = Path(args.base_path) / str(version)
    metadata = json.loads((version_dir / "metadata.json").read_text())
    print(f"wrote {version_dir} ({_format_bytes(directory_size(version_dir))}): a SavedModel "
          f"with signatures serving_default and predict_pixels")
    print(f"parity with JAX: max |delta p| {metadata['parity']:.2e} on "
          f"{metadata['parity_check']['batch']} validation images "
          f"(tolerance {metadata['parity_check']['tolerance']:g})")
    print(f"{args.model_name} version {version}, labelled development "
          f"(python -m geojax.registry --base_path {args.base_path} promote {version} "
          "--to staging)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
