"""One loaded SavedModel version: loading it with the 'serve' tag, running a signature as
RunPredict does (servables/tensorflow/predict_util.cc), TensorProto <-> numpy, and replaying its
warm-up requests (servables/tensorflow/saved_model_warmup.cc, saved_model_warmup_util.cc)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geojax.core.artefact import WARMUP_FILE
from geojax.core.console import import_tensorflow
from geojax.tfserving.metrics import ServingMetrics
from geojax.tfserving.status import (
    DATA_LOSS,
    FAILED_PRECONDITION,
    INTERNAL,
    INVALID_ARGUMENT,
    NOT_FOUND,
    UNIMPLEMENTED,
    ServingError,
)

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHODS = ("tensorflow/serving/predict", "tensorflow/serving/classify",
                   "tensorflow/serving/regress")
MAX_WARMUP_RECORDS = 1000
MAX_TENSOR_BYTES = 256 * 1024 * 1024


def dtype_name(dtype_enum: int) -> str:
    """TensorFlow's DataTypeString: DT_FLOAT -> 'float'."""
    from tensorflow.core.framework import types_pb2  # deferred: imports TensorFlow

    return types_pb2.DataType.Name(dtype_enum)[3:].lower()


@dataclass
class Servable:
    """A loaded version: the MetaGraphDef's signatures, the callable TF functions, and the
    server's metrics (runtime latency of each run)."""

    name: str
    version: int
    path: Path
    signature_defs: dict[str, Any]
    functions: Any
    metrics: ServingMetrics | None = None

    def predict(self, signature_name: str, inputs: dict[str, np.ndarray],
                output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Run one signature as `RunPredict` does (predict_util.cc): validate, then execute."""
        signature_name = signature_name or DEFAULT_SIGNATURE
        if signature_name not in self.signature_defs:
            raise ServingError(FAILED_PRECONDITION,
                               f'Serving signature key "{signature_name}" not found.')
        signature = self.signature_defs[signature_name]
        if signature.method_name not in PREDICT_METHODS:
            raise ServingError(INTERNAL, "Expected prediction signature method_name to be one "
                               f"of {{{', '.join(PREDICT_METHODS)}}}. Was: "
                               f"{signature.method_name}")
        expected = sorted(signature.inputs)
        sent = sorted(inputs)
        if len(sent) != len(expected):
            raise ServingError(
                INVALID_ARGUMENT,
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sent)}}}) != len({{{','.join(expected)}}}). Sent extra: "
                f"{{{','.join(sorted(set(sent) - set(expected)))}}}. Missing but required: "
                f"{{{','.join(sorted(set(expected) - set(sent)))}}}.")
        for alias in sent:
            if alias not in signature.inputs:
                raise ServingError(
                    INVALID_ARGUMENT, f"input tensor alias not found in signature: {alias}. "
                    f"Inputs expected to be in the set {{{','.join(expected)}}}.")
        outputs = list(output_filter)
        for alias in outputs:
            if alias not in signature.outputs:
                raise ServingError(
                    INVALID_ARGUMENT, f"output tensor alias not found in signature: {alias} "
                    f"Outputs expected to be in the set {{{','.join(sorted(signature.outputs))}}}.")
            if outputs.count(alias) > 1:
                raise ServingError(INVALID_ARGUMENT, f"duplicate output tensor alias: {alias}")
        tf = import_tensorflow()
        feeds = {}
        for index, alias in enumerate(sent):
            want = signature.inputs[alias].dtype
            have = (tf.string if inputs[alias].dtype.kind in "OSU"
                    else tf.as_dtype(inputs[alias].dtype)).as_datatype_enum
            if want != have:
                raise ServingError(INVALID_ARGUMENT, f"Expects arg[{index}] to be "
                                   f"{dtype_name(want)} but {dtype_name(have)} is provided")
            feeds[alias] = tf.constant(inputs[alias])
        start = time.perf_counter()
        try:
            result = self.functions[signature_name](**feeds)
        except tf.errors.OpError as err:
            raise ServingError(err.error_code, err.message) from err
        except (TypeError, ValueError) as err:
            raise ServingError(INVALID_ARGUMENT, str(err)) from err
        if self.metrics is not None:
            self.metrics.record_runtime(self.name, "Predict", start)
        return {alias: result[alias].numpy() for alias in (outputs or sorted(result))}


def load_servable(name: str, version: int, path: Path,
                  metrics: ServingMetrics | None = None) -> Servable:
    """Load a SavedModel version with the 'serve' tag, as SavedModelBundle does; each attempt
    counts in the loader's metrics under the version's directory."""
    tf = import_tensorflow()
    from tensorflow.core.protobuf import saved_model_pb2  # deferred: imports TensorFlow

    start = time.perf_counter()
    try:
        proto = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
        graphs = [g for g in proto.meta_graphs if "serve" in g.meta_info_def.tags]
        if not graphs:
            raise ServingError(NOT_FOUND, f"Could not find meta graph def matching supplied "
                               f"tags: {{ serve }}. To inspect available tag-sets in the "
                               f"SavedModel, please use the SavedModel CLI: `saved_model_cli` "
                               f"({path})")
        loaded = tf.saved_model.load(str(path), tags=["serve"])
    except Exception:
        if metrics is not None:
            metrics.record_load(str(path), False, start)
        raise
    if metrics is not None:
        metrics.record_load(str(path), True, start)
    return Servable(name, version, path, dict(graphs[0].signature_def), loaded.signatures,
                    metrics)


def check_tensor_size(tensor: Any, alias: str, max_bytes: int) -> None:
    """Refuse a TensorProto whose declared shape is over `max_bytes`, before it is allocated
    (a few bytes of proto can declare gigabytes: the last value fills the rest)."""
    tf = import_tensorflow()
    count = 1
    for dim in tensor.tensor_shape.dim:
        if dim.size < 0:
            raise ServingError(INVALID_ARGUMENT, f"tensor parsing error: {alias}")
        count *= dim.size
    try:
        itemsize = tf.as_dtype(tensor.dtype).size if tensor.dtype != tf.string.as_datatype_enum \
            else 1
    except TypeError as err:
        raise ServingError(INVALID_ARGUMENT, f"tensor parsing error: {alias}") from err
    if count * itemsize > max_bytes:
        shape = [d.size for d in tensor.tensor_shape.dim]
        raise ServingError(INVALID_ARGUMENT, f"tensor {alias} declares shape {shape}: "
                           f"{count * itemsize:,} bytes, over this server's limit of "
                           f"{max_bytes:,} (--max_tensor_bytes)")


def tensor_to_array(tensor: Any) -> np.ndarray:
    """TensorProto (typed fields or tensor_content) to numpy, as Tensor::FromProto."""
    tf = import_tensorflow()
    array = tf.make_ndarray(tensor)
    if tensor.dtype == tf.string.as_datatype_enum:
        return np.asarray(array, dtype=object)
    return array


def array_to_tensor(array: np.ndarray) -> Any:
    """numpy to TensorProto in typed fields, as TF Serving answers (Tensor::AsProtoField)."""
    tf = import_tensorflow()
    from tensorflow.core.framework import (  # deferred: imports TensorFlow
        tensor_pb2,
        tensor_shape_pb2,
    )

    dtype = tf.as_dtype(array.dtype)
    proto = tensor_pb2.TensorProto(
        dtype=dtype.as_datatype_enum,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in array.shape]))
    flat = array.reshape(-1)
    if dtype == tf.string:
        proto.string_val.extend(bytes(v) for v in flat)
    elif dtype == tf.float32:
        proto.float_val.extend(flat.tolist())
    elif dtype == tf.float64:
        proto.double_val.extend(flat.tolist())
    elif dtype == tf.int64:
        proto.int64_val.extend(flat.tolist())
    elif dtype in (tf.int32, tf.int16, tf.int8, tf.uint8):
        proto.int_val.extend(flat.tolist())
    elif dtype == tf.bool:
        proto.bool_val.extend(flat.tolist())
    elif dtype == tf.uint32:
        proto.uint32_val.extend(flat.tolist())
    elif dtype == tf.uint64:
        proto.uint64_val.extend(flat.tolist())
    elif dtype == tf.float16:
        proto.half_val.extend(flat.view(np.uint16).tolist())
    else:
        proto.tensor_content = flat.tobytes()
    return proto


def run_warmup(servable: Servable, iterations: int) -> int:
    """Replay assets.extra/tf_serving_warmup_requests; an error fails the load, as in TF Serving.
    Its latency counts by export dir and status when the file was read to its end."""
    path = servable.path / WARMUP_FILE
    if not path.exists():
        log.info("No warmup data file found at %s", path)
        return 0
    start = time.perf_counter()
    tf = import_tensorflow()
    from tensorflow_serving.apis import prediction_log_pb2  # deferred: imports TensorFlow

    records = 0
    try:
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            try:
                entry = prediction_log_pb2.PredictionLog.FromString(record)
            except Exception as err:
                raise ServingError(INVALID_ARGUMENT, f"Failed to parse warmup record: from "
                                   f"{path}") from err
            kind = entry.WhichOneof("log_type")
            if kind == "session_run_log":
                raise ServingError(UNIMPLEMENTED, "Unsupported log_type for warmup: 5")
            if kind == "predict_log":
                request = entry.predict_log.request
                inputs = {k: tensor_to_array(v) for k, v in request.inputs.items()}
                for _ in range(max(iterations, 1)):
                    servable.predict(request.model_spec.signature_name, inputs,
                                     request.output_filter)
            elif kind is not None:
                log.warning("Skipping %s warm-up record: this server does not implement it", kind)
            records += 1
            if records > MAX_WARMUP_RECORDS:
                raise ServingError(INVALID_ARGUMENT, "Number of warmup records exceeds the "
                                   f"maximum ({MAX_WARMUP_RECORDS}) at {path}")
    except tf.errors.DataLossError as err:
        if servable.metrics is not None:
            servable.metrics.record_warmup(str(servable.path), f"DATA_LOSS: {err.message}", start)
        raise ServingError(DATA_LOSS, f"{err.message}. Please verify your warmup data is in TFRecord "
                           "format.") from err
    if servable.metrics is not None:
        servable.metrics.record_warmup(str(servable.path), "OK", start)
    log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d.",
             path, records)
    return records
