"""A local stand-in for TensorFlow Serving: its gRPC and REST protocols over the same SavedModels.

    python -m geojax.model_server --port=8500 --rest_api_port=8501 \\
        --model_config_file=serving/models.config --model_config_file_poll_wait_seconds=10 \\
        --allow_version_labels_for_unavailable_models=true [--host=127.0.0.1]
    python -m geojax.model_server --model_name=geojax --model_base_path=export/geojax

TF Serving's `tensorflow_model_server` is not on PyPI or in Debian, so development machines and
tests run this server; deployment runs the real `tensorflow/serving` image with the same flags, the
same model base path and the same `models.config`. A client cannot tell the two apart by the
protocol: the same protos, routes, JSON shapes, status codes and (where TF Serving's source states
them) the same error messages.

Read in the tensorflow/serving repository (paths under `tensorflow_serving/`):

- flags: `model_servers/main.cc`, `model_servers/server.h` (names, defaults);
- config, versions, labels: `model_servers/server_core.cc` (`ReloadConfig`,
  `UpdateModelVersionLabelMap`, `ServableRequestFromModelSpec`, `GetModelVersionForLabel`),
  `core/manager.h` (`ServableRequest::DebugString`), `core/basic_manager.cc` ("Servable not found
  for request: ..."), `config/model_server_config.proto`; the load-before-unload order is the
  AvailabilityPreservingPolicy that `main.cc` names (its source was not re-read here);
- gRPC: `apis/prediction_service.proto`, `apis/model_service.proto` and the messages they use,
  `servables/tensorflow/predict_util.cc`, `servables/tensorflow/get_model_metadata_impl.cc`,
  `model_servers/get_model_status_impl.cc`;
- REST: `g3doc/api_rest.md`, `model_servers/http_rest_api_util.cc` (routes, label/version
  parsing, JSON of status and metadata), `model_servers/http_rest_api_handler.cc` and its test,
  `model_servers/http_server.cc` (`ToHTTPStatusCode`), `util/json_tensor.cc` (request parsing,
  `predictions`/`outputs` shapes, float printing, `_bytes` outputs as `{"b64": ...}`, messages),
  `servables/tensorflow/testdata/saved_model_half_plus_two_2_versions_metadata.json`;
- warm-up: `servables/tensorflow/saved_model_warmup.cc`, `saved_model_warmup_util.cc`;
- monitoring: `config/monitoring_config.proto`, `g3doc/serving_config.md` (Monitoring
  Configuration), `model_servers/http_server.cc` (`CreateAndStartHttpServer`,
  `ProcessPrometheusRequest`), `util/prometheus_exporter.cc` (names, text format), the metrics'
  definitions in `servables/tensorflow/util.cc`, `saved_model_warmup_util.cc` and
  tensorflow's `tensorflow/cc/saved_model/loader.cc`, and where they are recorded:
  `model_servers/prediction_service_impl.cc` (`Predict`), `servables/tensorflow/predict_util.cc`
  (`RunPredict`).

Behaviour of the released server (labels at startup, status history, rollback order) was
cross-checked with a public field guide's notes taken on `tensorflow/serving:2.21.0`.

TF Serving behaviours kept on purpose, because the deployed server has them:

- A version label may only name a version that is AVAILABLE when the config is read, so a config
  that adds a version and labels it in the same change is refused (FAILED_PRECONDITION, the old
  state keeps serving and each poll logs it again). With labels in the config at startup the
  server does not start unless `--allow_version_labels_for_unavailable_models=true`, which lets a
  *new* label name a version that is not loaded yet (moving an existing label still needs the
  version AVAILABLE). Requests naming an unknown label get INVALID_ARGUMENT (REST 400):
  "Unrecognized servable version label: L"; unknown models and versions get NOT_FOUND (REST 404).
- Model status lists every version the server has seen, with state START/LOADING/AVAILABLE/
  UNLOADING/END, until restart; status by label is status of all versions (GetModelStatus
  reads only `model_spec.version`).
- New models (and all models at startup) are waited for before a reload returns; new versions of
  known models load in the background, newest first, and an old version unloads only once an
  aspired version is AVAILABLE.
- `model_platform` must be "tensorflow" in a config file.
- `--monitoring_config_file` (a MonitoringConfig text proto) with `prometheus_config { enable:
  true }` serves Prometheus text on the REST port at `prometheus_config.path` (default
  `/monitoring/prometheus/metrics`); without it, or at any other non-/v1/ path, the REST port
  answers 404. The metrics, per server, with TF Serving's names (the TensorFlow monitoring
  name with "/" made ":"), labels, microsecond units, buckets (10 us x 1.8^i, 33 limits, then
  +Inf) and text (TYPE lines, counters without `_total`, histograms as `_bucket`/`_sum`/`_count`):
  `:tensorflow:serving:request_count` {model_name, status} and
  `:tensorflow:serving:request_latency` {model_name, API, entrypoint} (only OK requests) for
  each Predict, over gRPC (API "Predict", entrypoint "GRPC") and REST (API the URL's verb,
  entrypoint "REST"); `:tensorflow:serving:runtime_latency` {model_name, API, runtime="TF1"}
  for each run of the graph, warm-up included; `:tensorflow:serving:model_warmup_latency`
  {model_path, status}; `:tensorflow:cc:saved_model:load_attempt_count` {model_path, status
  "success"|"fail"} and `:tensorflow:cc:saved_model:load_latency` {model_path}. As in TF
  Serving, GetModelMetadata and GetModelStatus are not counted. The REST accounting follows
  `HttpRestApiHandler::ProcessRequest`, which hands the model name and verb to
  http_server.cc for its metrics (that caller's current text was not re-read here).

Not implemented: Classify, Regress and MultiInference (UNIMPLEMENTED; warm-up records of those
kinds are skipped with a log line), request batching (so no
`:tensorflow:serving:batching_session:*` metrics), TensorFlow's own `:tensorflow:core:*`
metrics, load retries (a version that fails to load or warm up goes to END with the error in
its status, and loads again only after it leaves the policy and comes back), SSL, UNIX sockets,
`custom_model_config`, logging configs, and other model platforms. Flags for those are accepted
and logged as ignored, so the deployment's command line runs here unchanged; `--host` (bind
address) is this server's own addition. A REST call over `--rest_api_timeout_in_ms` gets 504
with this server's own message.

Limits (this server's own additions; TF Serving leaves them to its deployment): a REST body
over `--max_request_bytes` is refused with 413 before it is read in full (and is read
linearly); a request tensor whose declared shape holds more than `--max_tensor_bytes` is
refused (INVALID_ARGUMENT) before anything is allocated, however few values it sends; JSON
nested deeper than Python can parse is INVALID_ARGUMENT, not a 500; at most
`--max_concurrent_requests` Predict calls run at once on each API (gRPC refuses the excess with
RESOURCE_EXHAUSTED; REST queues it within its timeout), and work whose deadline passed while
queued never starts (a graph already running cannot be interrupted: it finishes, holding its
slot). Error texts quote at most ECHO_LIMIT characters of what was sent. Error messages that come from inside TensorFlow (a wrong
shape reaching the graph) are TensorFlow's Python-side wording, not the C++ session's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import json
import logging
import math
import os
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from geojax.core.artefact import WARMUP_FILE, versions_on_disk

log = logging.getLogger("geojax.model_server")

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHODS = ("tensorflow/serving/predict", "tensorflow/serving/classify",
                   "tensorflow/serving/regress")
MAX_WARMUP_RECORDS = 1000
GRPC_MAX_MESSAGE = 2**31 - 1

# tensorflow/core/protobuf/error_codes.proto numbers, as used by StatusProto and gRPC.
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND = 0, 1, 2, 3, 4, 5
FAILED_PRECONDITION, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS = 9, 12, 13, 14, 15

HTTP_STATUS = {OK: 200, CANCELLED: 499, UNKNOWN: 500, INVALID_ARGUMENT: 400,
               DEADLINE_EXCEEDED: 504, NOT_FOUND: 404, 6: 409, 7: 403, 8: 429,
               FAILED_PRECONDITION: 400, 10: 409, 11: 400, UNIMPLEMENTED: 501, INTERNAL: 500,
               UNAVAILABLE: 503, 15: 500, 16: 401}
"""`ToHTTPStatusCode` in tensorflow_serving/model_servers/http_server.cc."""

CODE_NAMES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
              "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
              "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
              "UNAUTHENTICATED")
"""error_codes.proto's names by number (the status label of request_count)."""

MAX_REQUEST_BYTES = 64 * 1024 * 1024
MAX_TENSOR_BYTES = 256 * 1024 * 1024
MAX_CONCURRENT_REQUESTS = 16
ECHO_LIMIT = 200
"""Characters of a request quoted back in an error message (TF Serving quotes it all)."""

# ModelVersionStatus.State (apis/get_model_status.proto).
START, LOADING, AVAILABLE, UNLOADING, END = 10, 20, 30, 40, 50


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


class ServingError(Exception):
    """A request or config that TF Serving would refuse: a status code and its message."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------------------------------------
# Monitoring: TF Serving's own metrics, as its Prometheus exporter writes them
# ---------------------------------------------------------------------------------------------

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
"""PrometheusExporter::kPrometheusPath: where the metrics are when PrometheusConfig.path is
empty."""


def exponential_buckets(scale: float, growth: float, count: int) -> tuple[float, ...]:
    """monitoring::Buckets::Exponential: `count` limits from `scale`, each `growth` times the
    last (multiplied in order, as TensorFlow does), then DBL_MAX for the overflow bucket."""
    limits, bound = [], scale
    for _ in range(count):
        limits.append(bound)
        bound *= growth
    return (*limits, sys.float_info.max)


LATENCY_BUCKETS = exponential_buckets(10, 1.8, 33)
"""Microseconds, 10 us to ~20 minutes: every latency Sampler below uses these."""


def prometheus_name(name: str) -> str:
    """GetPrometheusMetricName: '/tensorflow/serving/request_count' ->
    ':tensorflow:serving:request_count'."""
    name = re.sub(r"[^a-zA-Z0-9_]", ":", name)
    return "_" + name if name[:1].isdigit() else name


def _label_pairs(names: Sequence[str], values: Sequence[str]) -> list[str]:
    """Labels as the exporter writes them: names sanitized, values with \\ and " escaped."""
    pairs = []
    for name, value in zip(names, values, strict=True):
        name = re.sub(r"[^a-zA-Z0-9]", "_", name)
        name = "_" + name if name[:1].isdigit() else name
        value = value.replace("\\", "\\\\").replace('"', '\\"')
        pairs.append(f'{name}="{value}"')
    return pairs


def _six_digits(value: float) -> str:
    """absl::StrCat of a double (SixDigitsToBuffer): printf's %.6g."""
    return f"{value:.6g}"


class Counter:
    """monitoring::Counter<N>: an int64 per label-value tuple."""

    def __init__(self, name: str, description: str, *labels: str):
        self.name, self.description, self.labels = name, description, labels
        self.cells: dict[tuple[str, ...], int] = {}

    def increment(self, values: tuple[str, ...], by: int = 1) -> None:
        self.cells[values] = self.cells.get(values, 0) + by

    def lines(self) -> list[str]:
        """SerializeScalar: a TYPE line, then `NAME{labels} value` per cell, no suffix."""
        name = prometheus_name(self.name)
        return [f"# TYPE {name} counter"] + [
            f"{name}{{{','.join(_label_pairs(self.labels, values))}}} {count}"
            for values, count in sorted(self.cells.items())]


class Sampler:
    """monitoring::Sampler<N>: a histogram per label-value tuple. A value v counts in the first
    bucket whose limit is > v (std::upper_bound, as tensorflow::histogram::Histogram::Add)."""

    def __init__(self, name: str, description: str, *labels: str,
                 buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.name, self.description, self.labels, self.buckets = name, description, labels, buckets
        self.cells: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def add(self, values: tuple[str, ...], sample: float) -> None:
        counts, total = self.cells.setdefault(values, ([0] * len(self.buckets), [0.0]))
        counts[min(bisect.bisect_right(self.buckets, sample), len(self.buckets) - 1)] += 1
        total[0] += sample

    def lines(self) -> list[str]:
        """SerializeHistogram: cumulative `_bucket` lines with le = each limit (the last one
        written "+Inf"), then `_sum` and `_count`."""
        name = prometheus_name(self.name)
        lines = [f"# TYPE {name} histogram"]
        for values, (counts, total) in sorted(self.cells.items()):
            labels = _label_pairs(self.labels, values)
            prefix = f"{name}_bucket{{{','.join(labels)}{',' if labels else ''}"
            cumulative = 0
            for i, count in enumerate(counts):
                cumulative += count
                limit = "+Inf" if i == len(counts) - 1 else _six_digits(self.buckets[i])
                lines.append(f'{prefix}le="{limit}"}} {cumulative}')
            lines.append(f"{name}_sum{{{','.join(labels)}}} {_six_digits(total[0])}")
            lines.append(f"{name}_count{{{','.join(labels)}}} {cumulative}")
        return lines


class ServingMetrics:
    """The metrics of TF Serving (and of the TensorFlow loader it links) that a dashboard of
    this server uses, with TF Serving's names, labels, units (microseconds) and buckets; one
    instance per server, so servers in one process do not share counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # servables/tensorflow/util.cc
        self.request_count = Counter(
            "/tensorflow/serving/request_count", "The total number of requests.",
            "model_name", "status")
        self.request_latency = Sampler(
            "/tensorflow/serving/request_latency", "Distribution of wall time (in microseconds) "
            "for Tensorflow Serving request.", "model_name", "API", "entrypoint")
        self.runtime_latency = Sampler(
            "/tensorflow/serving/runtime_latency", "Distribution of wall time (in microseconds) "
            "for Tensorflow runtime.", "model_name", "API", "runtime")
        # servables/tensorflow/saved_model_warmup_util.cc
        self.model_warmup_latency = Sampler(
            "/tensorflow/serving/model_warmup_latency", "Distribution of wall time (in "
            "microseconds) for warming up the model.", "model_path", "status")
        # tensorflow/cc/saved_model/loader.cc
        self.load_attempt_count = Counter(
            "/tensorflow/cc/saved_model/load_attempt_count",
            "The number of times a SavedModel was successfully loaded.", "model_path", "status")
        self.load_latency = Counter(
            "/tensorflow/cc/saved_model/load_latency",
            "Latency in microseconds for SavedModels that were successfully loaded.",
            "model_path")

    def record_request(self, model_name: str, api: str, entrypoint: str, code: int,
                       start: float) -> None:
        """RecordModelRequestCount always; RecordRequestLatency only for an OK request (as
        PredictionServiceImpl::Predict). `start` is a time.perf_counter() reading."""
        latency = _micros_since(start)
        with self._lock:
            self.request_count.increment((model_name, _code_name(code)))
            if code == OK:
                self.request_latency.add((model_name, api, entrypoint), latency)

    def record_runtime(self, model_name: str, api: str, start: float) -> None:
        """RecordRuntimeLatency around the run of the graph (predict_util.cc, runtime "TF1")."""
        latency = _micros_since(start)
        with self._lock:
            self.runtime_latency.add((model_name, api, "TF1"), latency)

    def record_load(self, model_path: str, ok: bool, start: float) -> None:
        """LoadSavedModel's load_attempt_count ("success" / "fail") and, on success,
        load_latency."""
        latency = _micros_since(start)
        with self._lock:
            self.load_attempt_count.increment((model_path, "success" if ok else "fail"))
            if ok:
                self.load_latency.increment((model_path,), latency)

    def record_warmup(self, model_path: str, status: str, start: float) -> None:
        """model_warm_up_latency by export dir and Status::ToString ("OK" when it succeeds)."""
        latency = _micros_since(start)
        with self._lock:
            self.model_warmup_latency.add((model_path, status), latency)

    def prometheus_page(self) -> str:
        """PrometheusExporter::GeneratePage: every metric in order of its TensorFlow name, lines
        joined by newlines, one at the end."""
        families: list[Counter | Sampler] = [
            self.request_count, self.request_latency, self.runtime_latency,
            self.model_warmup_latency, self.load_attempt_count, self.load_latency]
        with self._lock:
            lines = [line for family in sorted(families, key=lambda f: f.name)
                     for line in family.lines()]
        return "\n".join(lines) + "\n"


def _micros_since(start: float) -> int:
    return max(int((time.perf_counter() - start) * 1e6), 0)


@cache
def monitoring_config_message() -> Any:
    """The tensorflow.serving.MonitoringConfig message class. tensorflow-serving-api does not
    ship config/monitoring_config.proto, so where its module is missing the two messages are
    declared here, field for field: PrometheusConfig {bool enable = 1; string path = 2;},
    MonitoringConfig {PrometheusConfig prometheus_config = 1;}."""
    try:
        from tensorflow_serving.config import monitoring_config_pb2

        return monitoring_config_pb2.MonitoringConfig
    except ImportError:
        pass
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto", package="tensorflow.serving",
        syntax="proto3")
    field_type = descriptor_pb2.FieldDescriptorProto
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=field_type.TYPE_BOOL,
                         label=field_type.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=field_type.TYPE_STRING,
                         label=field_type.LABEL_OPTIONAL)
    proto.message_type.add(name="MonitoringConfig").field.add(
        name="prometheus_config", number=1, type=field_type.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig", label=field_type.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


def prometheus_path(monitoring_config: Any) -> str | None:
    """Where the REST port serves the metrics (CreateAndStartHttpServer), None if disabled."""
    prometheus = monitoring_config.prometheus_config
    if not prometheus.enable:
        return None
    return prometheus.path or PROMETHEUS_PATH


# ---------------------------------------------------------------------------------------------
# Servables: one loaded SavedModel version
# ---------------------------------------------------------------------------------------------


def dtype_name(dtype_enum: int) -> str:
    """TensorFlow's DataTypeString: DT_FLOAT -> 'float'."""
    from tensorflow.core.framework import types_pb2

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
        tf = _tf()
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
    tf = _tf()
    from tensorflow.core.protobuf import saved_model_pb2

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
    tf = _tf()
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
    tf = _tf()
    array = tf.make_ndarray(tensor)
    if tensor.dtype == tf.string.as_datatype_enum:
        return np.asarray(array, dtype=object)
    return array


def array_to_tensor(array: np.ndarray) -> Any:
    """numpy to TensorProto in typed fields, as TF Serving answers (Tensor::AsProtoField)."""
    tf = _tf()
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

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
    tf = _tf()
    from tensorflow_serving.apis import prediction_log_pb2

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


# ---------------------------------------------------------------------------------------------
# Versions on disk and the version policy
# ---------------------------------------------------------------------------------------------


def aspired_versions(model_config: Any, on_disk: Iterable[int]) -> set[int]:
    """The versions a ModelConfig's model_version_policy asks for (default: the latest one)."""
    policy = model_config.model_version_policy
    on_disk = set(on_disk)
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return on_disk
    if choice == "specific":
        wanted = set(policy.specific.versions)
        missing = wanted - on_disk
        if missing:
            log.warning("Version(s) %s of servable %s not found under base path %s",
                        sorted(missing), model_config.name, model_config.base_path)
        return wanted & on_disk
    keep = max(policy.latest.num_versions, 1) if choice == "latest" else 1
    return set(sorted(on_disk)[-keep:])


# ---------------------------------------------------------------------------------------------
# The core: config, version states, labels (ServerCore + AspiredVersionsManager)
# ---------------------------------------------------------------------------------------------


@dataclass
class VersionRecord:
    """One version's entry in the servable state monitor."""

    state: int
    error_code: int = OK
    error_message: str = ""
    servable: Servable | None = None


@dataclass
class ServerOptions:
    """The ServerCore options this server implements."""

    allow_version_labels_for_unavailable_models: bool = False
    file_system_poll_wait_seconds: float = 1.0
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    max_tensor_bytes: int = MAX_TENSOR_BYTES


@dataclass
class _Model:
    config: Any
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)


class ServerCore:
    """Which versions are loaded, which labels point where, and lookup of a ModelSpec; the
    server's metrics live here, where the loads happen."""

    def __init__(self, options: ServerOptions, metrics: ServingMetrics | None = None):
        self.options = options
        self.metrics = metrics if metrics is not None else ServingMetrics()
        self._state = threading.Condition()
        self._reload = threading.Lock()
        self._models: dict[str, _Model] = {}
        self._retired: dict[str, dict[int, VersionRecord]] = {}
        self._labels: dict[str, dict[str, int]] | None = None
        self._configured = False
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._manager = threading.Thread(target=self._manage, name="version-manager",
                                         daemon=True)
        self._manager.start()

    # -- config -------------------------------------------------------------------------------

    def reload_config(self, config: Any) -> None:
        """ServerCore::ReloadConfig: validate, relabel, then add/update/remove models."""
        with self._reload:
            choice = config.WhichOneof("config")
            if choice is None:
                log.info("Taking no action for empty config.")
                return
            if choice != "model_config_list":
                raise ServingError(FAILED_PRECONDITION, "Cannot transition to requested config. "
                                   "It is only legal to transition from one ModelConfigList to "
                                   "another.")
            names = set()
            for model in config.model_config_list.config:
                if model.name in names:
                    raise ServingError(INVALID_ARGUMENT, f"Illegal to list model {model.name} "
                                       "multiple times in config list")
                names.add(model.name)
                if not model.model_platform:
                    raise ServingError(INVALID_ARGUMENT, "Illegal setting neither "
                                       "ModelServerConfig::model_type (deprecated) nor "
                                       "ModelServerConfig::model_platform.")
                if model.model_platform != "tensorflow":
                    raise ServingError(INVALID_ARGUMENT, f"Model {model.name} requests "
                                       f"unsupported platform {model.model_platform}")
            labels = self._checked_labels(config)
            with self._state:
                new_models = names - set(self._models)
                for name in set(self._models) - names:
                    log.info("Removing model %s: no longer in the config", name)
                    self._models[name].config = None
                for model in config.model_config_list.config:
                    log.info("(Re-)adding model: %s", model.name)
                    if model.name in self._models:
                        self._models[model.name].config = model
                    else:
                        self._models[model.name] = _Model(model, self._retired.pop(model.name,
                                                                                    {}))
                self._labels = labels
                self._configured = True
            self._wake.set()
            self._await_models(new_models)

    def _checked_labels(self, config: Any) -> dict[str, dict[str, int]]:
        """UpdateModelVersionLabelMap: labels may only name AVAILABLE versions (see flag)."""
        labels: dict[str, dict[str, int]] = {}
        with self._state:
            for model in config.model_config_list.config:
                records = self._models[model.name].versions if model.name in self._models else {}
                for label, version in model.version_labels.items():
                    allowed = False
                    if self.options.allow_version_labels_for_unavailable_models:
                        existing = (self._labels or {}).get(model.name, {}).get(label)
                        allowed = existing is None or existing == version
                    record = records.get(version)
                    if not allowed and (record is None or record.state != AVAILABLE):
                        raise ServingError(
                            FAILED_PRECONDITION, f"Request to assign label to version "
                            f"{version} of model {model.name}, which is not currently "
                            "available for inference")
                    labels.setdefault(model.name, {})[label] = version
        return labels

    def _await_models(self, names: set[str]) -> None:
        """WaitUntilModelsAvailable: each new model has a version AVAILABLE, or failed."""
        def settled() -> bool:
            return all(self._latest(n) is not None or self._model_failed(n) for n in names)

        with self._state:
            self._state.wait_for(lambda: settled() or self._stopped.is_set())
            failed = sorted(n for n in names if self._latest(n) is None)
            if failed:
                details = ", ".join(
                    f"{{name: {n} version: {v} due to error: {r.error_message}}}"
                    for n in failed for v, r in self._models[n].versions.items()
                    if r.error_code != OK)
                raise ServingError(UNKNOWN, f"{len(failed)} model(s) did not become available:"
                                   f" {{{details}}}")

    def _model_failed(self, name: str) -> bool:
        model = self._models[name]
        on_disk = versions_on_disk(Path(model.config.base_path)) if model.config else {}
        aspired = aspired_versions(model.config, on_disk) if model.config else set()
        return bool(aspired) and aspired <= model.failed

    # -- the manager: polls base paths, loads and unloads ------------------------------------

    def _manage(self) -> None:
        period = self.options.file_system_poll_wait_seconds
        while not self._stopped.is_set():
            self._wake.clear()  # before the work: a reload during it wakes the next round
            if self._configured:
                try:
                    self._reconcile()
                except Exception:  # a bug here must not silently stop all future loads
                    log.exception("Version manager failed; retrying at the next poll")
            self._wake.wait(period if period > 0 else None)

    def _reconcile(self) -> None:
        while not self._stopped.is_set():
            with self._state:
                action = self._next_action()
            if action is None:
                return
            kind, name, version, path = action
            if kind == "load" and path is not None:
                self._load(name, version, path)
            else:
                self._unload(name, version)

    def _next_action(self) -> tuple[str, str, int, Path | None] | None:
        """AvailabilityPreservingPolicy: unload once an aspired version serves, else load the
        newest aspired version that is not loaded."""
        for name, model in list(self._models.items()):
            on_disk = versions_on_disk(Path(model.config.base_path)) if model.config else {}
            if model.config is not None and not on_disk:
                log.warning("No versions of servable %s found under base path %s. Did you "
                            "forget to name your leaf directory as a number (eg. '/1/')?",
                            name, model.config.base_path)
            aspired = aspired_versions(model.config, on_disk) if model.config else set()
            model.failed &= aspired
            ready = {v for v, r in model.versions.items() if r.state == AVAILABLE}
            unaspired = ready - aspired
            if unaspired and (not aspired or ready & aspired or len(unaspired) > 1):
                return "unload", name, min(unaspired), None
            pending = sorted(aspired - ready - model.failed)
            if pending:
                return "load", name, pending[-1], on_disk[pending[-1]]
            if model.config is None and not model.versions.keys() - self._ended(model):
                self._retired[name] = self._models.pop(name).versions
        return None

    @staticmethod
    def _ended(model: _Model) -> set[int]:
        return {v for v, r in model.versions.items() if r.state == END}

    def _set(self, name: str, version: int, record: VersionRecord) -> None:
        with self._state:
            self._models[name].versions[version] = record
            self._state.notify_all()

    def _load(self, name: str, version: int, path: Path) -> None:
        log.info("Approving load for servable version {name: %s version: %d}", name, version)
        self._set(name, version, VersionRecord(START))
        self._set(name, version, VersionRecord(LOADING))
        try:
            servable = load_servable(name, version, path, self.metrics)
            if self.options.enable_model_warmup:
                run_warmup(servable, self.options.num_request_iterations_for_warmup)
        except Exception as err:
            code = err.code if isinstance(err, ServingError) else UNKNOWN
            message = err.message if isinstance(err, ServingError) else f"{type(err).__name__}: {err}"
            log.error("Loading servable: {name: %s version: %d} failed: %s", name, version,
                      message)
            with self._state:
                self._models[name].failed.add(version)
            self._set(name, version, VersionRecord(END, code, message))
            return
        self._set(name, version, VersionRecord(AVAILABLE, servable=servable))
        log.info("Successfully loaded servable version {name: %s version: %d}", name, version)

    def _unload(self, name: str, version: int) -> None:
        log.info("Quiescing servable version {name: %s version: %d}", name, version)
        self._set(name, version, VersionRecord(UNLOADING))
        self._set(name, version, VersionRecord(END))
        log.info("Done unloading servable version {name: %s version: %d}", name, version)

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        with self._state:
            self._state.notify_all()

    # -- lookups ------------------------------------------------------------------------------

    def _latest(self, name: str) -> Servable | None:
        model = self._models.get(name)
        if model is None:
            return None
        ready = [v for v, r in model.versions.items() if r.state == AVAILABLE]
        return model.versions[max(ready)].servable if ready else None

    def servable(self, model_spec: Any) -> Servable:
        """ServerCore::GetServableHandle for a ModelSpec (name + version | version_label)."""
        name = model_spec.name
        if not name:
            raise ServingError(INVALID_ARGUMENT, "ModelSpec has no name specified.")
        choice = model_spec.WhichOneof("version_choice")
        with self._state:
            if choice is None:
                found = self._latest(name)
                if found is None:
                    raise ServingError(NOT_FOUND, f"Servable not found for request: "
                                       f"Latest({name})")
                return found
            if choice == "version_label":
                label = model_spec.version_label
                if self._labels is None:
                    raise ServingError(UNAVAILABLE, f"Model labels does not init yet.{label}")
                version = self._labels.get(name, {}).get(label)
                if version is None:
                    raise ServingError(INVALID_ARGUMENT,
                                       f"Unrecognized servable version label: {label}")
            else:
                version = model_spec.version.value
            model = self._models.get(name)
            record = model.versions.get(version) if model else None
            if record is None or record.state != AVAILABLE or record.servable is None:
                raise ServingError(NOT_FOUND, f"Servable not found for request: "
                                   f"Specific({name}, {version})")
            return record.servable

    def version_states(self, name: str, version: int | None) -> list[tuple[int, VersionRecord]]:
        """GetModelStatusImpl: one version, or all versions newest first (labels ignored)."""
        with self._state:
            model = self._models.get(name)
            records = dict(model.versions) if model else dict(self._retired.get(name, {}))
        if version is not None:
            if version not in records:
                raise ServingError(NOT_FOUND, f"Could not find version {version} of model {name}")
            return [(version, records[version])]
        if not records:
            raise ServingError(NOT_FOUND, f"Could not find any versions of model {name}")
        return sorted(records.items(), reverse=True)


# ---------------------------------------------------------------------------------------------
# The API, shared by gRPC and REST: protos in, protos (or arrays) out
# ---------------------------------------------------------------------------------------------


class ModelServerApi:
    """PredictionService and ModelService semantics over a ServerCore."""

    def __init__(self, core: ServerCore):
        self.core = core

    def counted(self, model_name: str, api: str, entrypoint: str, call: Callable[[], Any]) -> Any:
        """Run one inference request as TF Serving accounts for it (PredictionServiceImpl):
        request_count by model and status whatever the outcome, request_latency when OK."""
        start = time.perf_counter()
        code = UNKNOWN
        try:
            result = call()
            code = OK
            return result
        except ServingError as err:
            code = err.code
            raise
        finally:
            self.core.metrics.record_request(model_name, api, entrypoint, code, start)

    def predict(self, request: Any) -> tuple[Any, dict[str, np.ndarray]]:
        """PredictRequest -> (response model_spec, outputs as arrays)."""
        from tensorflow_serving.apis import model_pb2

        servable = self.core.servable(request.model_spec)
        inputs = {}
        for alias, tensor in request.inputs.items():
            check_tensor_size(tensor, alias, self.core.options.max_tensor_bytes)
            try:
                inputs[alias] = tensor_to_array(tensor)
            except Exception as err:
                raise ServingError(INVALID_ARGUMENT, f"tensor parsing error: {alias}") from err
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        outputs = servable.predict(signature, inputs, request.output_filter)
        spec = model_pb2.ModelSpec(name=request.model_spec.name, signature_name=signature)
        spec.version.value = servable.version
        return spec, outputs

    def predict_response(self, request: Any) -> Any:
        from tensorflow_serving.apis import predict_pb2

        spec, outputs = self.predict(request)
        response = predict_pb2.PredictResponse(model_spec=spec)
        for alias, array in outputs.items():
            response.outputs[alias].CopyFrom(array_to_tensor(array))
        return response

    def metadata(self, request: Any) -> Any:
        """GetModelMetadataImpl: the SignatureDefMap packed into Any under 'signature_def'."""
        from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

        if not request.HasField("model_spec"):
            raise ServingError(INVALID_ARGUMENT, "Missing ModelSpec")
        if not request.metadata_field:
            raise ServingError(INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least "
                               "one metadata_field")
        for name in request.metadata_field:
            if name != "signature_def":
                raise ServingError(INVALID_ARGUMENT, f"Metadata field {name} is not supported")
        servable = self.core.servable(request.model_spec)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in servable.signature_defs.items():
            signatures.signature_def[name].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=model_pb2.ModelSpec(name=servable.name))
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(signatures)
        return response

    def status(self, request: Any) -> Any:
        from tensorflow_serving.apis import get_model_status_pb2, status_pb2

        if not request.HasField("model_spec"):
            raise ServingError(INVALID_ARGUMENT, "Missing ModelSpec")
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, record in self.core.version_states(spec.name, version):
            response.model_version_status.add(
                version=number, state=record.state,
                status=status_pb2.StatusProto(error_code=record.error_code,
                                              error_message=record.error_message))
        return response

    def reload(self, request: Any) -> Any:
        """ModelService.HandleReloadConfigRequest (model_service_impl.cc)."""
        from tensorflow_serving.apis import model_management_pb2, status_pb2

        if request.config.WhichOneof("config") != "model_config_list":
            error = ServingError(INVALID_ARGUMENT, "ServerModelConfig type not supported by "
                                 "HandleReloadConfigRequest. Only ModelConfigList is currently "
                                 "supported")
            log.error("ReloadConfig failed: %s", error.message)
            raise error
        try:
            self.core.reload_config(request.config)
        except ServingError as err:
            log.error("ReloadConfig failed: %s", err.message)
            raise
        return model_management_pb2.ReloadConfigResponse(status=status_pb2.StatusProto())


# ---------------------------------------------------------------------------------------------
# gRPC
# ---------------------------------------------------------------------------------------------


def _grpc_code(code: int) -> Any:
    import grpc

    return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)


def _grpc_call(context: Any, fn: Callable[[Any], Any], request: Any) -> Any:
    try:
        return fn(request)
    except ServingError as err:
        context.abort(_grpc_code(err.code), err.message)


def make_grpc_server(api: ModelServerApi, address: str, channel_arguments: Sequence[
        tuple[str, Any]] = (), max_workers: int = 16,
        max_concurrent_requests: int = MAX_CONCURRENT_REQUESTS) -> Any:
    """A gRPC server with PredictionService and ModelService, not yet started; calls beyond
    `max_concurrent_requests` in flight are refused with RESOURCE_EXHAUSTED."""
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        """Predict and GetModelMetadata; Classify, Regress, MultiInference: UNIMPLEMENTED."""

        def Predict(self, request: Any, context: Any) -> Any:
            remaining = context.time_remaining()
            if (remaining is not None and remaining <= 0) or not context.is_active():
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            return _grpc_call(context, lambda r: api.counted(
                r.model_spec.name, "Predict", "GRPC", lambda: api.predict_response(r)), request)

        def GetModelMetadata(self, request: Any, context: Any) -> Any:
            return _grpc_call(context, api.metadata, request)

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):
        def GetModelStatus(self, request: Any, context: Any) -> Any:
            return _grpc_call(context, api.status, request)

        def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:
            return _grpc_call(context, api.reload, request)

    options = [("grpc.max_receive_message_length", GRPC_MAX_MESSAGE),
               ("grpc.max_send_message_length", GRPC_MAX_MESSAGE), *channel_arguments]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=options,
                         maximum_concurrent_rpcs=max_concurrent_requests)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(),
                                                                        server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(), server)
    if server.add_insecure_port(address) == 0:
        raise OSError(f"could not bind the gRPC port at {address}")
    return server


# ---------------------------------------------------------------------------------------------
# REST: JSON <-> tensors as util/json_tensor.cc does
# ---------------------------------------------------------------------------------------------

PREDICT_PATH = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                          r":(classify|regress|predict)", re.IGNORECASE)
STATUS_PATH = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                         r"(?:/(metadata))?", re.IGNORECASE)
INT_RANGES = {"int32": (-2**31, 2**31 - 1), "int16": (-2**31, 2**31 - 1),
              "int8": (-2**31, 2**31 - 1), "uint8": (-2**31, 2**31 - 1),
              "int64": (-2**63, 2**63 - 1), "uint32": (0, 2**32 - 1), "uint64": (0, 2**64 - 1)}
NUMPY_TYPES = {"float": np.float32, "double": np.float64, "int32": np.int32, "int16": np.int16,
               "int8": np.int8, "uint8": np.uint8, "int64": np.int64, "uint32": np.uint32,
               "uint64": np.uint64, "bool": np.bool_, "string": object}


def echo(text: str) -> str:
    """`text` cut to ECHO_LIMIT characters for an error message (a request can be megabytes)."""
    if len(text) <= ECHO_LIMIT:
        return text
    return f"{text[:ECHO_LIMIT]}... ({len(text):,} characters)"


def _json_text(value: Any) -> str:
    return echo(json.dumps(value, indent=4))


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    return "String" if isinstance(value, str) else "Number"


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _leaf_value(value: Any, dtype: str) -> Any:
    """AddValueToTensor / JsonDecodeBase64Object for one JSON leaf."""
    def type_error() -> ServingError:
        return ServingError(INVALID_ARGUMENT, f"JSON Value: {_json_text(value)} Type: "
                            f"{_json_type(value)} is not of expected type: {dtype}")

    if isinstance(value, dict):
        if dtype != "string":
            raise type_error()
        if not _is_b64(value):
            raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_json_text(value)} not "
                               "formatted correctly for base64 data")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError as err:
            raise ServingError(INVALID_ARGUMENT, "Unable to base64 decode") from err
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if dtype in ("float", "double"):
        if not number:
            raise type_error()
        digits = 24 if dtype == "float" else 53
        limit = float(np.finfo(np.float32 if dtype == "float" else np.float64).max)
        lossless = (abs(value) <= 2**digits - 1 if isinstance(value, int)
                    else not math.isfinite(value) or abs(value) <= limit)
        if not lossless:
            raise ServingError(INVALID_ARGUMENT, f"Cannot convert JSON value: "
                               f"{_json_text(value)} to {dtype} without loss of precision.")
        return float(value)
    if dtype in INT_RANGES:
        low, high = INT_RANGES[dtype]
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            raise type_error()
        return value
    if dtype == "string":
        if not isinstance(value, str):
            raise type_error()
        return value.encode()
    if dtype == "bool":
        if not isinstance(value, bool):
            raise type_error()
        return value
    raise ServingError(UNIMPLEMENTED, f"Conversion of JSON Value: {_json_text(value)} to type: "
                       f"{dtype}")


def _dense_shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: list[int], dtype: str, out: list) -> None:
    """FillTensorProto: every leaf at depth rank, every list of the size its level expects."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_json_text(value)} found at "
                               f"incorrect level: {level + 1} in the JSON DOM. Expected at "
                               f"level: {rank}")
        out.append(_leaf_value(value, dtype))
        return
    if level >= rank:
        raise ServingError(INVALID_ARGUMENT, f"Encountered list at unexpected level: {level} "
                           f"expected < {rank}")
    if len(value) != shape[level]:
        raise ServingError(INVALID_ARGUMENT, f"Encountered list at unexpected size: {len(value)}"
                           f" at level: {level} expected size: {shape[level]}")
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def json_to_array(value: Any, dtype: str) -> np.ndarray:
    """One JSON value (scalar or nested lists) of a signature input to an array."""
    shape = _dense_shape(value)
    flat: list = []
    _fill(value, 0, shape, dtype, flat)
    return _as_array(flat, shape, dtype)


def _as_array(flat: list, shape: Sequence[int], dtype: str) -> np.ndarray:
    if dtype == "string":
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    if dtype in ("int16", "int8", "uint8"):
        # Parsed as int32 (int_val) and narrowed by the C++ tensor, which wraps around.
        return np.asarray(flat, dtype=np.int64).astype(NUMPY_TYPES[dtype]).reshape(shape)
    return np.asarray(flat, dtype=NUMPY_TYPES[dtype]).reshape(shape)


def _instances_to_arrays(instances: list, dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList: rows batched along a new first dimension."""
    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise ServingError(INVALID_ARGUMENT, "instances is a plain list, but expecting list of "
                           "objects as multiple input tensors required as per tensorinfo_map")

    def is_object(value: Any) -> bool:
        return isinstance(value, dict) and not _is_b64(value)

    objects = is_object(instances[0])
    names = sorted(dtypes)
    rows: dict[str, list[np.ndarray]] = {}
    for index, element in enumerate(instances):
        if objects and not is_object(element):
            raise ServingError(INVALID_ARGUMENT, f"Expecting object but got list at item {index}"
                               " of input list")
        if not objects and is_object(element):
            raise ServingError(INVALID_ARGUMENT, "Expecting value/list but got object at item "
                               f"{index} of input list")
        items = element.items() if objects else [(names[0], element)]
        for name, value in items:
            try:
                if name not in dtypes:
                    raise ServingError(INVALID_ARGUMENT,
                                       f"JSON object: does not have named input: {name}")
                array = json_to_array(value, dtypes[name])
                first = rows.setdefault(name, [array])[0]
                if array is not first and array.size != first.size:
                    raise ServingError(INVALID_ARGUMENT, f"Expecting tensor size: {first.size}"
                                       f" but got: {array.size}")
                if array is not first and array.shape != first.shape:
                    raise ServingError(INVALID_ARGUMENT, "Expecting shape "
                                       f"[{','.join(map(str, first.shape))}] but got: "
                                       f"[{','.join(map(str, array.shape))}]")
                if array is not first:
                    rows[name].append(array)
            except ServingError as err:
                key = f" key: {name}" if objects else ""
                raise ServingError(INVALID_ARGUMENT, f"Failed to process element: {index}{key} "
                                   f"of 'instances' list. Error: "
                                   f"{_code_name(err.code)}: {err.message}") from err
        if objects and set(element) != set(names):
            raise ServingError(INVALID_ARGUMENT, f"Failed to process element: {index} of "
                               f"'instances' list. JSON object: {_json_text(element)} keys must "
                               f"be equal to: {','.join(names)}")
    return {name: np.stack(arrays) for name, arrays in rows.items()}


def _code_name(code: int) -> str:
    """error::Code_Name: 3 -> 'INVALID_ARGUMENT'."""
    return CODE_NAMES[code] if 0 <= code < len(CODE_NAMES) else str(code)


def parse_predict_json(body: bytes, input_dtypes: Callable[[str], dict[str, str]]
                       ) -> tuple[str, dict[str, np.ndarray], str]:
    """FillPredictRequestFromJson: (signature_name, inputs, 'row' | 'columnar')."""
    if not body:
        raise ServingError(INVALID_ARGUMENT, "JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except RecursionError as err:
        raise ServingError(INVALID_ARGUMENT, "JSON Parse error: nested too deeply") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        message, offset = (err.msg, err.pos) if isinstance(err, json.JSONDecodeError) else (
            "Invalid encoding in string.", err.start)
        raise ServingError(INVALID_ARGUMENT, f"JSON Parse error: {message} at offset: "
                           f"{offset}") from err
    if not isinstance(doc, dict):
        raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_json_text(doc)} Is not object")
    signature = doc.get("signature_name", "")
    if not isinstance(signature, str):
        raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_json_text(doc)} not formatted "
                           "correctly. 'signature_name' key must be a string value.")
    dtypes = input_dtypes(signature)
    if not dtypes:
        raise ServingError(INVALID_ARGUMENT, "Failed to get input map for signature: "
                           f"{signature or 'DEFAULT'}")
    if "instances" in doc and "inputs" in doc:
        raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_json_text(doc)} Not formatted "
                           "correctly expecting only one of 'inputs' or 'instances' keys to exist ")
    if "instances" in doc:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_json_text(doc)} Excepting "
                               "'instances' to be an list/array")
        if not instances:
            raise ServingError(INVALID_ARGUMENT, f"JSON Value: {_json_text(doc)} No values in "
                               "'instances' array")
        return signature, _instances_to_arrays(instances, dtypes), "row"
    if "inputs" in doc:
        inputs = doc["inputs"]
        if not isinstance(inputs, dict) or _is_b64(inputs):
            if len(dtypes) > 1:
                raise ServingError(INVALID_ARGUMENT, "inputs is a plain value/list, but "
                                   "expecting an object as multiple input tensors required as "
                                   "per tensorinfo_map")
            name = sorted(dtypes)[0]
            return signature, {name: json_to_array(inputs, dtypes[name])}, "columnar"
        arrays = {}
        for name in sorted(dtypes):
            if name not in inputs:
                raise ServingError(INVALID_ARGUMENT, f"Missing named input: {name} in 'inputs' "
                                   "object.")
            arrays[name] = json_to_array(inputs[name], dtypes[name])
        return signature, arrays, "columnar"
    raise ServingError(INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key")


def format_decimal(value: float, float32: bool) -> str:
    """WriteDecimal: six significant digits if they round-trip, else full precision; '.0' on
    whole numbers; NaN / Infinity / -Infinity tokens."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:.6g}"
    back = float(np.float32(text)) if float32 else float(text)
    if back != value:
        text = f"{value:.9g}" if float32 else f"{value:.17g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _values_json(array: np.ndarray, as_bytes: bool) -> str:
    """AddTensorValues: nested JSON arrays of one tensor's values."""
    kind = array.dtype.kind
    if array.dtype == object or kind == "S":
        def write(v: Any) -> str:
            data = bytes(v)
            if as_bytes:
                return json.dumps({"b64": base64.b64encode(data).decode()})
            return json.dumps(data.decode("utf-8", errors="replace"))
    elif kind == "f":
        float32 = array.dtype.itemsize <= 4

        def write(v: Any) -> str:
            return format_decimal(float(v), float32)
    elif kind == "b":
        def write(v: Any) -> str:
            return "true" if v else "false"
    else:
        def write(v: Any) -> str:
            return str(int(v))

    def nest(a: Any) -> str:
        if a.ndim == 0:
            return write(a[()])
        return "[" + ", ".join(nest(np.asarray(x, dtype=a.dtype)) for x in a) + "]"

    return nest(array)


def predict_json(outputs: dict[str, np.ndarray], layout: str) -> str:
    """MakeJsonFromTensors: {"predictions": rows} or {"outputs": columns}; names dropped when
    there is one output."""
    names = sorted(outputs)
    if layout == "columnar":
        parts = {n: _values_json(outputs[n], n.endswith("_bytes")) for n in names}
        body = parts[names[0]] if len(names) == 1 else "{" + ", ".join(
            f"{json.dumps(n)}: {parts[n]}" for n in names) + "}"
        return '{\n    "outputs": ' + body + "\n}"
    batch = None
    for name in names:
        if outputs[name].ndim == 0:
            raise ServingError(INVALID_ARGUMENT, f"Tensor name: {name} has no shape information ")
        size = outputs[name].shape[0]
        if batch is not None and size != batch:
            raise ServingError(INVALID_ARGUMENT, f"Tensor name: {name} has inconsistent batch "
                               f"size: {size} expecting: {batch}")
        batch = size
    rows = []
    for i in range(batch or 0):
        values = {n: _values_json(outputs[n][i:i + 1].reshape(outputs[n].shape[1:]),
                                  n.endswith("_bytes")) for n in names}
        rows.append(values[names[0]] if len(names) == 1 else "{" + ", ".join(
            f"{json.dumps(n)}: {values[n]}" for n in names) + "}")
    return '{\n    "predictions": [\n        ' + ",\n        ".join(rows) + "\n    ]\n}"


class RestApi:
    """The HTTP/REST API of TF Serving as an ASGI application; with a `metrics_path` (from
    --monitoring_config_file) it also serves the server's metrics there in Prometheus text, as
    CreateAndStartHttpServer registers the exporter ahead of the /v1/ dispatcher."""

    def __init__(self, api: ModelServerApi, timeout_ms: int = 30000,
                 metrics_path: str | None = None, max_request_bytes: int = MAX_REQUEST_BYTES,
                 max_concurrent_requests: int = MAX_CONCURRENT_REQUESTS):
        self.api = api
        self.timeout = timeout_ms / 1000 if timeout_ms > 0 else None
        self.metrics_path = metrics_path
        self.max_request_bytes = max_request_bytes
        # The requests' work runs here: at most this many at once; a queued request whose
        # timeout passes is cancelled before it starts.
        self.workers = futures.ThreadPoolExecutor(max_concurrent_requests,
                                                  thread_name_prefix="rest")

    async def _read_body(self, scope: dict, receive: Callable) -> bytes | None:
        """The request body, or None when it is over `max_request_bytes` (declared or sent)."""
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and \
                    int(value) > self.max_request_bytes:
                return None
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_request_bytes:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        body = await self._read_body(scope, receive)
        if body is None:
            await self._reply(send, 413, json.dumps({"error": (
                f"request body over this server's limit of {self.max_request_bytes:,} bytes "
                "(--max_request_bytes)")}).encode(), "application/json")
            return
        path = scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?")[0]
        if path == self.metrics_path:
            page = self.api.core.metrics.prometheus_page()
            await self._reply(send, 200, page.encode(), "text/plain")
            return
        if not re.fullmatch(r"/v1/.*", path, re.IGNORECASE):
            await self._reply(send, 404, b"", "text/html")
            return
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        try:
            work = asyncio.get_running_loop().run_in_executor(
                self.workers, self.handle, scope["method"], path, body, deadline)
            text = await asyncio.wait_for(work, self.timeout)
            status = 200
        except ServingError as err:
            status, text = HTTP_STATUS.get(err.code, 500), json.dumps({"error": err.message},
                                                                       indent=4)
        except TimeoutError:
            status, text = 504, json.dumps({"error": "Deadline Exceeded"})
        except RecursionError:
            status, text = 400, json.dumps({"error": "JSON Parse error: nested too deeply"})
        except Exception as err:  # answer in TF Serving's error shape, never a bare 500
            log.exception("Error processing HTTP/REST request: %s %s", scope["method"], path)
            status, text = 500, json.dumps({"error": echo(f"{type(err).__name__}: {err}")})
        await self._reply(send, status, text.encode(), "application/json")

    @staticmethod
    async def _reply(send: Callable, status: int, body: bytes, content_type: str) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def handle(self, method: str, path: str, body: bytes, deadline: float | None = None) -> str:
        """HttpRestApiHandler::ProcessRequest: route, run, and write JSON (or raise); work
        past `deadline` (time.monotonic) is not started."""
        from tensorflow_serving.apis import (
            get_model_metadata_pb2,
            get_model_status_pb2,
            model_pb2,
            predict_pb2,
        )

        match = None
        if method == "POST":
            match = PREDICT_PATH.fullmatch(path)
        elif method == "GET":
            match = STATUS_PATH.fullmatch(path)
        if match is None:
            raise ServingError(INVALID_ARGUMENT, f"Malformed request: {method} {path}")
        name, version, label, verb = match.groups()
        name = urllib.parse.unquote(name or "")
        if version is not None and int(version) >= 2**63:
            raise ServingError(INVALID_ARGUMENT,
                               f"Failed to convert version: {version} to numeric.")
        spec = model_pb2.ModelSpec(name=name)
        if version is not None:
            spec.version.value = int(version)
        if label is not None:
            spec.version_label = urllib.parse.unquote(label)
        if method == "POST":
            if verb in ("classify", "regress"):
                raise ServingError(UNIMPLEMENTED, f"{verb} is not implemented by this server "
                                   "(geojax.model_server serves Predict only)")
            if verb != "predict":
                raise ServingError(INVALID_ARGUMENT, f"Malformed request: {method} {path}")
            return self.api.counted(name, verb, "REST",
                                    lambda: self._predict(spec, body, predict_pb2, deadline))
        if not name:
            raise ServingError(INVALID_ARGUMENT, "Missing model name in request.")
        from google.protobuf import json_format

        if verb == "metadata":
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=spec, metadata_field=["signature_def"])
            response = self.api.metadata(request)
            signatures = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signatures)
            as_dict = {
                "model_spec": json_format.MessageToDict(
                    response.model_spec, preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True),
                "metadata": {"signature_def": json_format.MessageToDict(
                    signatures, preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True)}}
            return json.dumps(as_dict, indent=1)
        response = self.api.status(get_model_status_pb2.GetModelStatusRequest(model_spec=spec))
        return json_format.MessageToJson(response, indent=1,
                                         always_print_fields_with_no_presence=True)

    def _predict(self, spec: Any, body: bytes, predict_pb2: Any,
                 deadline: float | None = None) -> str:
        def input_dtypes(signature_name: str) -> dict[str, str]:
            servable = self.api.core.servable(spec)
            name = signature_name or DEFAULT_SIGNATURE
            if name not in servable.signature_defs:
                raise ServingError(INVALID_ARGUMENT, f'Serving signature name: "{name}" not '
                                   "found in signature def")
            return {alias: dtype_name(info.dtype)
                    for alias, info in servable.signature_defs[name].inputs.items()}

        signature, inputs, layout = parse_predict_json(body, input_dtypes)
        request = predict_pb2.PredictRequest(model_spec=spec)
        request.model_spec.signature_name = signature
        for alias, array in inputs.items():
            request.inputs[alias].CopyFrom(array_to_tensor(array))
        if deadline is not None and time.monotonic() > deadline:
            raise ServingError(DEADLINE_EXCEEDED, "Deadline Exceeded")  # nobody is waiting
        _, outputs = self.api.predict(request)
        if not outputs:
            raise ServingError(INVALID_ARGUMENT, "Cannot convert empty tensor map to JSON")
        return predict_json(outputs, layout)


# ---------------------------------------------------------------------------------------------
# Command line: TF Serving's flags
# ---------------------------------------------------------------------------------------------

IGNORED_FLAGS = {
    "grpc_socket_path": str, "rest_api_num_threads": int, "rest_api_enable_cors_support": bool,
    "enable_batching": bool, "batching_parameters_file": str,
    "enable_per_model_batching_parameters": bool, "num_load_threads": int,
    "num_unload_threads": int, "max_num_load_retries": int, "load_retry_interval_micros": int,
    "flush_filesystem_caches": bool, "tensorflow_session_parallelism": int,
    "tensorflow_session_config_file": str, "use_alts_credentials": bool,
    "ssl_config_file": str, "platform_config_file": str,
    "per_process_gpu_memory_fraction": float, "saved_model_tags": str, "grpc_max_threads": int,
    "remove_unused_fields_from_bundle_metagraph": bool,
    "prefer_tflite_model": bool, "num_tflite_pools": int, "num_tflite_interpreters_per_pool": int,
    "enable_signature_method_name_check": bool, "xla_cpu_compilation_enabled": bool,
    "xla_gpu_compilation_enabled": bool, "enable_profiler": bool,
    "thread_pool_factory_config_file": str, "mixed_precision": str, "skip_initialize_tpu": bool,
    "enable_grpc_healthcheck_service": bool,
}
"""TF Serving flags accepted for a drop-in command line and logged as ignored: batching,
threading, TPU/TFLite and security options this stand-in does not model. (jax2tf
graphs need XLA, which TensorFlow's Python runtime always has.)"""


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m geojax.model_server",
                                     description=__doc__.splitlines()[0])

    def flag(name: str, kind: type, default: Any, help: str) -> None:
        if kind is bool:
            parser.add_argument(f"--{name}", type=_bool, nargs="?", const=True, default=default,
                                help=help)
        else:
            parser.add_argument(f"--{name}", type=kind, default=default, help=help)

    flag("port", int, 8500, "TCP port for the gRPC API")
    flag("rest_api_port", int, 8501, "TCP port for the HTTP/REST API; 0 disables it (the "
         "tensorflow/serving image passes 8501, the binary's default is 0)")
    flag("rest_api_timeout_in_ms", int, 30000, "timeout for HTTP/REST API calls")
    flag("host", str, "0.0.0.0", "bind address (this server's addition; TF Serving binds all)")
    flag("model_config_file", str, "", "ascii ModelServerConfig file; --model_name and "
         "--model_base_path are then ignored")
    flag("model_config_file_poll_wait_seconds", int, 0, "re-read --model_config_file this "
         "often; 0 reads it once")
    flag("model_name", str, "default", "name of the model (without --model_config_file)")
    flag("model_base_path", str, "", "path to the model's numbered versions (without "
         "--model_config_file)")
    flag("file_system_poll_wait_seconds", int, 1, "interval between scans of the model base "
         "paths for new versions")
    flag("allow_version_labels_for_unavailable_models", bool, False,
         "allow assigning unused version labels to versions that are not available yet")
    flag("enable_model_warmup", bool, True, "replay assets.extra/tf_serving_warmup_requests "
         "when a version loads")
    flag("num_request_iterations_for_warmup", int, 1, "times each warm-up request is run")
    flag("tensorflow_intra_op_parallelism", int, 0, "threads inside one op (0: TensorFlow "
         "chooses)")
    flag("tensorflow_inter_op_parallelism", int, 0, "ops run at once (0: TensorFlow chooses)")
    flag("monitoring_config_file", str, "", "ascii MonitoringConfig file; with "
         "prometheus_config { enable: true } the REST port serves the server's metrics in "
         f"Prometheus format at prometheus_config.path (default {PROMETHEUS_PATH})")
    flag("grpc_channel_arguments", str, "", "comma separated gRPC server arguments, "
         "e.g. grpc.max_connection_age_ms=2000")
    flag("max_request_bytes", int, MAX_REQUEST_BYTES, "largest REST request body; more is "
         "413 (this server's addition)")
    flag("max_tensor_bytes", int, MAX_TENSOR_BYTES, "largest request tensor by its declared "
         "shape; more is INVALID_ARGUMENT before allocating (this server's addition)")
    flag("max_concurrent_requests", int, MAX_CONCURRENT_REQUESTS, "requests run at once per "
         "API; gRPC refuses more (RESOURCE_EXHAUSTED), REST queues them within its timeout "
         "(this server's addition)")
    flag("version", bool, False, "print the version and exit")
    for name, kind in IGNORED_FLAGS.items():
        flag(name, kind, None, argparse.SUPPRESS)
    return parser


def read_text_proto(path: str, message: Any) -> Any:
    """ParseProtoTextFile: `message` filled from a text-format file, or INVALID_ARGUMENT naming
    the file (the parser's reason is the error's cause)."""
    from google.protobuf import text_format

    try:
        return text_format.Parse(Path(path).read_text(), message)
    except (OSError, UnicodeDecodeError, text_format.ParseError) as err:
        raise ServingError(INVALID_ARGUMENT, f"Invalid protobuf file: '{path}'") from err


def read_config_file(path: str) -> Any:
    """Parse a text-format ModelServerConfig (--model_config_file)."""
    from tensorflow_serving.config import model_server_config_pb2

    return read_text_proto(path, model_server_config_pb2.ModelServerConfig())


def read_monitoring_config(path: str) -> Any:
    """Parse a text-format MonitoringConfig (--monitoring_config_file)."""
    return read_text_proto(path, monitoring_config_message()())


def single_model_config(name: str, base_path: str) -> Any:
    """BuildSingleModelConfig: one model, latest version, platform tensorflow."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name=name, base_path=base_path,
                                        model_platform="tensorflow")
    return config


def _parse_channel_arguments(text: str) -> list[tuple[str, Any]]:
    pairs = []
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        pairs.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return pairs


def poll_config_file(core: ServerCore, path: str, period: int, stop: threading.Event) -> None:
    """PollFilesystemAndReloadConfig every `period` seconds; errors are logged, the old state
    keeps serving."""
    last_error, applied = None, None
    while not stop.wait(period):
        try:
            config = read_config_file(path)
            if config != applied:
                core.reload_config(config)
            applied, last_error = config, None
        except ServingError as err:
            if err.message != last_error:
                log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s",
                          err.message)
            last_error = err.message


def serve(args: argparse.Namespace) -> int:
    """Start the core, wait for the models, then the gRPC and REST servers; block."""
    for name in IGNORED_FLAGS:
        if getattr(args, name) is not None:
            log.info("--%s=%s accepted for compatibility with tensorflow_model_server and "
                     "ignored by this server", name, getattr(args, name))
    rest_api = args.rest_api_port not in (0, args.port)
    metrics_path = None
    if args.monitoring_config_file and rest_api:
        # Read before any model loads (TF Serving reads it when starting the REST server), so
        # a bad file fails fast; like TF Serving, it is not read without a REST port.
        metrics_path = prometheus_path(read_monitoring_config(args.monitoring_config_file))
    tf = _tf()
    if args.tensorflow_intra_op_parallelism > 0:
        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    if args.tensorflow_inter_op_parallelism > 0:
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    if args.model_config_file:
        config = read_config_file(args.model_config_file)
    elif args.model_base_path:
        log.info("Building single TensorFlow model file config:  model_name: %s "
                 "model_base_path: %s", args.model_name, args.model_base_path)
        config = single_model_config(args.model_name, args.model_base_path)
    else:
        raise ServingError(INVALID_ARGUMENT, "Both server_options.model_base_path and "
                           "server_options.model_config_file are empty!")
    core = ServerCore(ServerOptions(
        allow_version_labels_for_unavailable_models=(
            args.allow_version_labels_for_unavailable_models),
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        enable_model_warmup=args.enable_model_warmup,
        num_request_iterations_for_warmup=args.num_request_iterations_for_warmup,
        max_tensor_bytes=args.max_tensor_bytes))
    stop = threading.Event()
    try:
        core.reload_config(config)
        api = ModelServerApi(core)
        grpc_server = make_grpc_server(api, f"{args.host}:{args.port}",
                                       _parse_channel_arguments(args.grpc_channel_arguments),
                                       max_workers=max(16, args.max_concurrent_requests),
                                       max_concurrent_requests=args.max_concurrent_requests)
        grpc_server.start()
        log.info("Running gRPC ModelServer at %s:%d ...", args.host, args.port)
        if args.model_config_file and args.model_config_file_poll_wait_seconds > 0:
            threading.Thread(target=poll_config_file, daemon=True, name="config-poll", args=(
                core, args.model_config_file, args.model_config_file_poll_wait_seconds, stop)
            ).start()
        if args.rest_api_port == args.port:
            log.error("--rest_api_port cannot be same as --port. Please use a different port "
                      "for HTTP/REST API. Skipped exporting HTTP/REST API.")
        elif rest_api:
            import uvicorn

            log.info("Exporting HTTP/REST API at:%s:%d ...", args.host, args.rest_api_port)
            if metrics_path is not None:
                log.info("Exporting Prometheus metrics at %s on the HTTP/REST port",
                         metrics_path)
            uvicorn.Server(uvicorn.Config(
                RestApi(api, args.rest_api_timeout_in_ms, metrics_path, args.max_request_bytes,
                        args.max_concurrent_requests), host=args.host,
                port=args.rest_api_port, log_level="warning", access_log=False,
                lifespan="off")).run()
            grpc_server.stop(grace=1)
            return 0
        grpc_server.wait_for_termination()
        return 0
    finally:
        stop.set()
        core.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname).1s model_server] %(message)s")
    if args.version:
        print("geojax.model_server (stand-in for tensorflow_model_server)")
        return 0
    try:
        return serve(args)
    except ServingError as err:
        cause = f" ({err.__cause__})" if err.__cause__ is not None else ""
        log.error("Failed to start server. Error: %s: %s%s", _code_name(err.code), err.message,
                  cause)
        return 1


if __name__ == "__main__":
    sys.exit(main())
