"""TF Serving's own metrics, as its Prometheus exporter writes them: counters and histograms
with TF Serving's names, labels and text (util/prometheus_exporter.cc), the metrics a server
records (servables/tensorflow/util.cc, saved_model_warmup_util.cc, tensorflow's
cc/saved_model/loader.cc), and the MonitoringConfig that says where they are served."""

from __future__ import annotations

import bisect
import re
import sys
import threading
import time
from collections.abc import Sequence
from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from geojax.tfserving.status import OK, code_name

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
            self.request_count.increment((model_name, code_name(code)))
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
        from tensorflow_serving.config import monitoring_config_pb2  # absent from the wheel

        return monitoring_config_pb2.MonitoringConfig
    except ImportError:
        pass
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
