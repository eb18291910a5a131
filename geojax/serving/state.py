"""The proxy's shared state: model server clients per label, the model view behind the label,
the bounds on decoded images and model calls, the rollout's shadow replays, metrics and drift.

Each request runs in one worker thread (`Proxy.request`); its deadline and label are
thread-local, so the endpoints call `decode`, `classify` and `model_view` without passing them.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException

from geojax import CLASSES
from geojax.core.images import ImageError, ImageTooLarge, decode_image
from geojax.serving.client import ModelServerClient, ModelServerError
from geojax.serving.drift import DriftMonitor, image_statistics
from geojax.serving.metrics import Metrics
from geojax.serving.rollout import AGREEMENT_WINDOW, Rollout, detection_agreement
from geojax.serving.settings import ProxySettings

log = logging.getLogger("geojax.proxy")
MODEL_VIEW_TTL_S = 2.0


@dataclasses.dataclass(frozen=True)
class ModelView:
    """What the label points at right now, and what we know about that version."""

    version: int
    input_size: int
    metadata: dict[str, Any]
    fetched: float


def batch_bucket(count: int) -> int:
    """The batch size a request of `count` images is padded to: the next power of two up to 64,
    then the next multiple of 64. The served model is XLA-compiled once per batch shape (the
    first request of a new size waits for the compile); this keeps the shapes it ever sees to
    a few, at under 2x the work for small batches and under 8% for large ones."""
    if count <= 64:
        return 1 << max(count - 1, 0).bit_length()
    return -(-count // 64) * 64


class Proxy:
    """State shared by the endpoints: settings, model server clients (the served label and,
    with a rollout, the canary's), metrics, drift."""

    def __init__(self, settings: ProxySettings, client: ModelServerClient | None = None):
        self.settings = settings
        self.rollout = Rollout.parse(settings.rollout)
        self.clients = {settings.model_label: client or self._client(settings.model_label)}
        if self.rollout.mode:
            self.clients[settings.canary_label] = self._client(settings.canary_label)
        self.metrics = Metrics()
        self.drift = DriftMonitor(settings.drift_window, settings.drift_threshold)
        self.agreement: dict[str, collections.deque[float]] = {
            kind: collections.deque(maxlen=AGREEMENT_WINDOW)
            for kind in ("classes", "detections")}
        for kind in self.agreement:  # NaN until compared: no alert fires on "no data yet"
            self.metrics.shadow_agreement.labels(kind).set(math.nan)
            self.metrics.shadow_compared.labels(kind)
        self._shadow_pool = futures.ThreadPoolExecutor(2, thread_name_prefix="shadow")
        self._views: dict[str, ModelView] = {}
        self._lock = threading.Lock()
        self._decoded = threading.BoundedSemaphore(settings.max_decoded)
        self._model_calls = threading.BoundedSemaphore(settings.max_model_calls)
        self._request = threading.local()  # each request runs in one worker thread
        self.warm_version: int | None = None  # the version /ready's warm inference ran on

    def _client(self, label: str) -> ModelServerClient:
        s = self.settings
        return ModelServerClient(grpc_target=s.model_server, rest_url=s.model_server_rest,
                                 model_name=s.model_name, label=label, protocol=s.protocol,
                                 timeout_s=s.timeout_s)

    @property
    def client(self) -> ModelServerClient:
        """The client of the label this request is served from (default: the served label)."""
        return self.clients[self.label]

    @property
    def label(self) -> str:
        return getattr(self._request, "label", None) or self.settings.model_label

    @property
    def _view(self) -> ModelView | None:
        return self._views.get(self.settings.model_label)

    def pick_label(self, client_id: str | None) -> str:
        """The label a request is answered from: the canary for the split's share (sticky per
        client id), else the served label."""
        if self.rollout.mode == "split" and self.rollout.to_canary(client_id):
            return self.settings.canary_label
        return self.settings.model_label

    @contextlib.contextmanager
    def request(self, label: str | None = None, shadow: bool = False) -> Iterator[None]:
        """One request's work (in its worker thread), under its GEOJAX_REQUEST_TIMEOUT_S,
        answered from `label` (default: the served label); a `shadow` replay feeds no drift or
        prediction metrics."""
        self._request.deadline = time.monotonic() + self.settings.request_timeout_s
        self._request.label, self._request.shadow = label, shadow
        try:
            yield
        finally:
            self._request.deadline = self._request.label = None
            self._request.shadow = False

    def run(self, endpoint: str, label: str, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` as one request answered from `label`, counted and timed by label."""
        start, status = time.perf_counter(), "500"
        try:
            with self.request(label):
                result = fn(*args)
            status = "200"
            return result
        except HTTPException as err:
            status = str(err.status_code)
            raise
        finally:
            self.metrics.label_requests.labels(label, endpoint, status).inc()
            self.metrics.label_latency.labels(label, endpoint).observe(
                time.perf_counter() - start)

    def shadow(self, endpoint: str, fn: Callable[..., Any], args: tuple, answer: Any) -> None:
        """In the background: the same request answered from the canary, counted under its
        label and compared with `answer` (the agreement gauges); never touches the answer."""
        def replay() -> None:
            label, start, status = self.settings.canary_label, time.perf_counter(), "500"
            try:
                with self.request(label, shadow=True):
                    canary = fn(*args)
                status = "200"
                self.compare(answer, canary)
            except HTTPException as err:
                status = str(err.status_code)
            except Exception:
                log.exception("shadow request to the canary failed")
            finally:
                self.metrics.label_requests.labels(label, endpoint, status).inc()
                self.metrics.label_latency.labels(label, endpoint).observe(
                    time.perf_counter() - start)

        self._shadow_pool.submit(replay)

    def compare(self, served: Any, canary: Any) -> None:
        """Agreement of two answers to one request: the share of images with the same top class
        (/predict, /predict/batch), and of detections matched by class and IoU >= 0.5
        (/detect, /detect/batch)."""
        if not isinstance(served, dict) or not isinstance(canary, dict):
            return
        if "class" in served or "predictions" in served:
            a = [p["class"] for p in served.get("predictions", [served])]
            b = [p["class"] for p in canary.get("predictions", [canary])]
            self._agree("classes", [float(x == y) for x, y in zip(a, b, strict=False)])
        elif "detections" in served or "results" in served:
            pairs = zip(served.get("results", [served]), canary.get("results", [canary]),
                        strict=False)
            self._agree("detections", [detection_agreement(x["detections"], y["detections"])
                                       for x, y in pairs])

    def _agree(self, kind: str, scores: list[float]) -> None:
        with self._lock:
            self.agreement[kind].extend(scores)
            window = list(self.agreement[kind])
        if window:
            self.metrics.shadow_agreement.labels(kind).set(sum(window) / len(window))
        self.metrics.shadow_compared.labels(kind).inc(len(scores))

    def _remaining(self) -> float:
        deadline = getattr(self._request, "deadline", None)
        return math.inf if deadline is None else deadline - time.monotonic()

    @contextlib.contextmanager
    def _turn(self, semaphore: threading.BoundedSemaphore, what: str) -> Iterator[None]:
        """Wait (at most the timeout, and not past the request's deadline) for one of
        `semaphore`'s slots; 503 when none frees."""
        wait = min(self.settings.timeout_s, self._remaining())
        if wait <= 0 or not semaphore.acquire(timeout=wait):
            raise HTTPException(503, f"busy: no {what} slot freed within the request's time "
                                     "(GEOJAX_TIMEOUT_S, GEOJAX_REQUEST_TIMEOUT_S); retry later")
        try:
            yield
        finally:
            semaphore.release()

    @contextlib.contextmanager
    def full_size_image(self, data: bytes, source: str) -> Iterator[np.ndarray]:
        """The decoded image, held under the GEOJAX_MAX_DECODED bound while the block runs:
        keep only what is derived from it (a model-sized copy, crops) past the block."""
        with self._turn(self._decoded, "image decoding"):
            yield self.decode(data, source)

    def model_view(self, refresh: bool = False) -> ModelView:
        """The version behind this request's label and its input size (cached for a couple of
        seconds)."""
        label = self.label
        with self._lock:
            view = self._views.get(label)
        if view and not refresh and time.monotonic() - view.fetched < MODEL_VIEW_TTL_S:
            return view
        version, input_size = self._call(self.client.served_signature)
        if label == self.settings.model_label and (view is None or view.version != version):
            self.drift.reset()
        view = ModelView(version, input_size, self._version_metadata(version), time.monotonic())
        self.metrics.version.labels(self.settings.model_name, label).set(version)
        with self._lock:
            self._views[label] = view
        return view

    def _version_metadata(self, version: int) -> dict[str, Any]:
        if not self.settings.model_base_path:
            return {}
        path = Path(self.settings.model_base_path) / str(version) / "metadata.json"
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            with self._turn(self._model_calls, "model server call"):
                result = fn(*args)
        except ModelServerError as err:
            self.metrics.server_up.set(0)
            log.warning("model server call failed: %s", err)  # with its address, for operators
            raise HTTPException(503, f"{err.reason}; retry later") from err
        self.metrics.server_up.set(1)
        return result

    def classify(self, crops: np.ndarray, endpoint: str,
                 server_seconds: list[float] | None = None) -> np.ndarray:
        """One model server call for a batch of prepared crops: probabilities [N, C]; the
        call's duration is appended to `server_seconds` when given."""
        if len(crops) == 0:
            return np.zeros((0, len(CLASSES)), np.float32)
        count = len(crops)
        padded = batch_bucket(count)
        if padded > count:
            crops = np.concatenate([crops, np.zeros((padded - count, *crops.shape[1:]),
                                                    crops.dtype)])
        start = time.perf_counter()
        prediction = self._call(self.client.predict_pixels, crops)
        elapsed = time.perf_counter() - start
        self.metrics.model_latency.labels(endpoint).observe(elapsed)
        if server_seconds is not None:
            server_seconds.append(elapsed)
        probabilities = prediction.probabilities[:count]
        if getattr(self._request, "shadow", False):
            return probabilities  # the live traffic's figures count the served answer only
        self.drift.observe_predictions(probabilities)
        for p in probabilities:
            self.metrics.predicted.labels(CLASSES[int(p.argmax())]).inc()
            self.metrics.confidence.observe(float(p.max()))
        return probabilities

    def decode(self, data: bytes, source: str) -> np.ndarray:
        try:
            image = decode_image(data, source=source, max_pixels=self.settings.max_pixels,
                                 max_side=self.settings.max_side)
        except ImageError as err:
            raise HTTPException(413 if isinstance(err, ImageTooLarge) else 400,
                                str(err)) from err
        if not getattr(self._request, "shadow", False):
            self.drift.observe_input(image_statistics(image))
            self.metrics.input_pixels.observe(image.shape[0] * image.shape[1])
        return image

    def update_drift_gauges(self) -> dict:
        view = self._view
        report = self.drift.report(view.metadata.get("reference_profile") if view else None,
                                   len(CLASSES))
        for feature, score in report["psi"].items():
            if score is not None:
                self.metrics.drift_psi.labels(feature).set(score)
        self.metrics.drift.set(int(report["drift"]))
        return report

    def model_json(self, view: ModelView) -> dict[str, Any]:
        return {"name": self.settings.model_name, "version": view.version, "label": self.label}
