"""The detection proxy: a FastAPI service in front of TF Serving (or geojax.model_server).

    python -m geojax.proxy --port 8000        # settings from GEOJAX_* environment variables

Endpoints: POST /detect, /predict, /predict/batch; GET /health (alive), /ready (model server
reachable and the model loaded), /classes, /model/info, /drift, /metrics (Prometheus), /docs.

The proxy decodes and checks images itself (size limit, pixel-count guard against decompression
bombs, corrupt or empty uploads -> 4xx naming the problem), proposes regions, and classifies all
crops of one image in ONE batched call to the model server's `predict_pixels` signature (gRPC by
default, REST selectable). Which model and label it serves is configuration; the version behind
the label is looked up again every few seconds, so a promotion in the registry takes effect
without a restart. A model server that is down or slow gives 503 after a bounded timeout.
Decoding, detection and model calls run in a worker thread, so one slow request does not hold
up the others (/health and /metrics answer on the event loop, never waiting for a worker).
Memory is bounded per request and in all: images decode straight to uint8, are shrunk before
they are padded, a batch frees each full-size image before decoding the next, and at most
GEOJAX_MAX_DECODED full-size images are held at once; a request that cannot get its turn (or a
model call slot) within GEOJAX_TIMEOUT_S is a 503. A model call's batch is padded to one of a few sizes
(`batch_bucket`), since the served model is compiled once per batch shape.

Settings (environment):
    GEOJAX_MODEL_SERVER        gRPC host:port of the model server       (localhost:8500)
    GEOJAX_MODEL_SERVER_REST   REST base URL of the model server        (http://localhost:8501)
    GEOJAX_PROTOCOL            grpc | rest                              (grpc)
    GEOJAX_MODEL_NAME          model name on the server                 (geojax)
    GEOJAX_MODEL_LABEL         version label to serve                   (production)
    GEOJAX_ROLLOUT             "" (none), "split:P" (P% of requests answered by the canary
                               label, per request, or sticky per X-Client-Id header) or
                               "shadow" (every request also sent to the canary in the
                               background and compared; answered from the served label)  ("")
    GEOJAX_CANARY_LABEL        the canary's version label               (canary)
    GEOJAX_MODEL_BASE_PATH     the registry's model base path: version metrics and the drift
                               reference are read from VERSION/metadata.json   (unset: none)
    GEOJAX_TIMEOUT_S           model server timeout per call            (5)
    GEOJAX_REQUEST_TIMEOUT_S   one deadline per request: no slot wait or model call starts
                               after it (a call under way ends within GEOJAX_TIMEOUT_S)  (30)
    GEOJAX_MAX_UPLOAD_BYTES    request body limit                       (10485760)
    GEOJAX_MAX_PIXELS          decoded image pixel limit                (40000000)
    GEOJAX_MAX_SIDE            decoded image side limit, px             (20000)
    GEOJAX_MAX_DECODED         full-size images held at once (decoded, not yet shrunk to the
                               model's input; each up to 3 bytes a pixel); others wait (2)
    GEOJAX_MAX_MODEL_CALLS     model server calls in flight at once; others wait (8)
    GEOJAX_MAX_BATCH           images per /predict/batch                (32)
    GEOJAX_MAX_REGIONS         crops classified per /detect             (64)
    GEOJAX_CROPS_PER_CALL      crops per model server call in /detect; 0: all in one (0)
    GEOJAX_API_KEYS            comma-separated keys; when set (or GEOJAX_API_KEYS_FILE, one
                               key per line) requests need X-API-Key   (unset: no auth)
    GEOJAX_CORS_ORIGINS        comma-separated origins allowed by CORS  (unset: CORS off)
    GEOJAX_DRIFT_WINDOW        images in the drift window               (500)
    GEOJAX_DRIFT_THRESHOLD     PSI above which a feature has drifted    (0.25)
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from geojax import CLASSES
from geojax import detect as detection
from geojax.core.images import ImageError, ImageTooLarge, decode_image, encode_png, resize_to
from geojax.core.results import DetectionOptions, coco_results, prediction_json
from geojax.drift import PSI_DRIFT_THRESHOLD, DriftMonitor, image_statistics
from geojax.serving_client import ModelServerClient, ModelServerError

log = logging.getLogger("geojax.proxy")
OPEN_PATHS = {"/health", "/ready", "/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect"}
MODEL_VIEW_TTL_S = 2.0


def key_matches(key: str, keys: tuple[str, ...]) -> bool:
    """Whether `key` is one of `keys`, in time that does not depend on where they differ (every
    key is compared in full, so timing reveals neither a key's prefix nor which key matched)."""
    given = key.encode()
    return any([hmac.compare_digest(given, k.encode()) for k in keys])


@dataclasses.dataclass(frozen=True)
class ProxySettings:
    """Everything the proxy is configured by (see the module docstring for the variables)."""

    model_server: str = "localhost:8500"
    model_server_rest: str = "http://localhost:8501"
    protocol: str = "grpc"
    model_name: str = "geojax"
    model_label: str = "production"
    rollout: str = ""
    canary_label: str = "canary"
    model_base_path: str | None = None
    timeout_s: float = 5.0
    request_timeout_s: float = 30.0
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 20_000
    max_decoded: int = 2
    max_model_calls: int = 8
    max_batch: int = 32
    max_regions: int = 64
    crops_per_call: int = 0
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    drift_window: int = 500
    drift_threshold: float = PSI_DRIFT_THRESHOLD

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ProxySettings:
        """Settings from GEOJAX_* variables; a malformed value fails naming the variable."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(f"GEOJAX_{field.name.upper()}")
            if raw is None or field.name == "api_keys":
                continue
            try:
                if field.type in ("int", "float"):
                    values[field.name] = (int if field.type == "int" else float)(raw)
                elif field.type == "tuple[str, ...]":
                    values[field.name] = tuple(v.strip() for v in raw.split(",") if v.strip())
                else:
                    values[field.name] = raw
            except ValueError as err:
                raise ValueError(f"GEOJAX_{field.name.upper()}={raw!r}: {err}") from err
        keys = [k.strip() for k in environ.get("GEOJAX_API_KEYS", "").split(",") if k.strip()]
        key_file = environ.get("GEOJAX_API_KEYS_FILE")
        if key_file:
            try:
                from_file = [k.strip() for k in Path(key_file).read_text().splitlines()
                             if k.strip()]
            except OSError as err:
                raise ValueError(f"GEOJAX_API_KEYS_FILE={key_file!r}: {err.strerror}") from err
            if not from_file:
                # An empty file would silently turn authentication off.
                raise ValueError(f"GEOJAX_API_KEYS_FILE={key_file!r} holds no keys (one per "
                                 "line); unset it to run without authentication")
            keys += from_file
        values["api_keys"] = tuple(keys)
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class ModelView:
    """What the label points at right now, and what we know about that version."""

    version: int
    input_size: int
    metadata: dict[str, Any]
    fetched: float


class Metrics:
    """The proxy's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("geojax_requests", "Requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("geojax_request_latency_seconds", "End-to-end latency",
                                 ["endpoint"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.model_latency = Histogram("geojax_model_server_latency_seconds",
                                       "Time in model server calls", ["endpoint"], registry=r,
                                       buckets=(.002, .005, .01, .025, .05, .1, .25, .5, 1, 5))
        self.crops = Histogram("geojax_crops_per_request", "Regions classified per /detect",
                               registry=r, buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128))
        self.predicted = Counter("geojax_predicted_class", "Predictions by class", ["class"],
                                 registry=r)
        self.confidence = Histogram("geojax_prediction_confidence", "Top-class probability",
                                    registry=r, buckets=tuple(np.linspace(0.1, 1.0, 10)))
        self.input_pixels = Histogram("geojax_input_pixels", "Decoded image size in pixels",
                                      registry=r, buckets=tuple(4.0 ** np.arange(5, 13)))
        self.drift_psi = Gauge("geojax_drift_psi", "Population stability index vs reference",
                               ["feature"], registry=r)
        self.drift = Gauge("geojax_drift_detected", "1 when any feature's PSI is over the "
                           "threshold", registry=r)
        self.version = Gauge("geojax_served_model_version", "Version behind the served label",
                             ["model", "label"], registry=r)
        self.server_up = Gauge("geojax_model_server_up", "1 when the last model server call "
                               "succeeded", registry=r)
        self.label_requests = Counter("geojax_label_requests", "Requests answered by each "
                                      "version label (shadow replays under the canary's)",
                                      ["label", "endpoint", "status"], registry=r)
        self.label_latency = Histogram("geojax_label_latency_seconds", "Latency by label",
                                       ["label", "endpoint"], registry=r,
                                       buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
        self.shadow_agreement = Gauge("geojax_shadow_agreement", "Share of the canary's "
                                      "answers agreeing with the served ones (recent window)",
                                      ["kind"], registry=r)
        self.shadow_compared = Counter("geojax_shadow_compared", "Images compared in shadow "
                                       "mode", ["kind"], registry=r)


class ImagePayload(BaseModel):
    image: str = Field(description="base64-encoded image file (PNG, JPEG, ...)")


class BatchPayload(BaseModel):
    images: list[str] = Field(description="base64-encoded image files")


def _b64(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise HTTPException(400, f"{what}: not valid base64 ({err})") from err


def batch_bucket(count: int) -> int:
    """The batch size a request of `count` images is padded to: the next power of two up to 64,
    then the next multiple of 64. The served model is XLA-compiled once per batch shape (the
    first request of a new size waits for the compile); this keeps the shapes it ever sees to
    a few, at under 2x the work for small batches and under 8% for large ones."""
    if count <= 64:
        return 1 << max(count - 1, 0).bit_length()
    return -(-count // 64) * 64


AGREEMENT_WINDOW = 500
"""Shadow comparisons (images) the agreement gauges average over."""


@dataclasses.dataclass(frozen=True)
class Rollout:
    """GEOJAX_ROLLOUT: `mode` '' (none), 'split' (`percent` of requests to the canary) or
    'shadow'."""

    mode: str = ""
    percent: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Rollout:
        text = text.strip()
        if text in ("", "none"):
            return cls()
        if text == "shadow":
            return cls("shadow")
        kind, _, value = text.partition(":")
        try:
            percent = float(value)
        except ValueError:
            percent = -1.0
        if kind != "split" or not 0 <= percent <= 100:
            raise ValueError(f"GEOJAX_ROLLOUT={text!r}: expected '', 'shadow' or 'split:P' "
                             "with P a percentage, e.g. split:10")
        return cls("split", percent)

    def to_canary(self, client_id: str | None) -> bool:
        """Whether a request goes to the canary: by a hash of `client_id` (the same client
        always lands on the same side), else at random."""
        if client_id:
            digest = hashlib.sha256(client_id.encode()).digest()
            return int.from_bytes(digest[:8], "big") % 10_000 < self.percent * 100
        return random.random() * 100 < self.percent


def detection_agreement(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
    """How far two detection answers agree: detections matched one to one by class and IoU >=
    0.5 (greedy, most confident first), over the mean count; 1.0 when both are empty."""
    if not a and not b:
        return 1.0
    used: set[int] = set()
    matched = 0
    for d in a:
        best, best_iou = None, 0.5
        for j, e in enumerate(b):
            if j in used or e["class"] != d["class"]:
                continue
            iou = float(detection.box_iou(np.array([d["bbox"]], float),
                                          np.array([e["bbox"]], float))[0, 0])
            if iou >= best_iou:
                best, best_iou = j, iou
        if best is not None:
            used.add(best)
            matched += 1
    return 2 * matched / (len(a) + len(b))


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
        self.agreement = {kind: collections.deque(maxlen=AGREEMENT_WINDOW)
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


# /detect and /detect/batch options (module level: FastAPI resolves the annotations).
MethodQuery = Annotated[str, Query(pattern="^(contours|sliding_window|selective_search)$",
                                   description="region proposals")]
ConfidenceQuery = Annotated[float, Query(ge=0.0, le=1.0, description=(
    "lowest class probability kept (default geojax.SHAPE_THRESHOLD)"))]
IouQuery = Annotated[float, Query(gt=0.0, le=1.0, description=(
    "same-class boxes overlapping more are suppressed"))]
ClassesQuery = Annotated[str | None, Query(description=(
    "comma-separated class names to keep, e.g. circle,star (default: all)"))]
MaxQuery = Annotated[int | None, Query(ge=1, description=(
    "keep at most this many, the most confident (default: all)"))]
BoxQuery = Annotated[str, Query(pattern="^(xyxy|xywh|normalized)$", description=(
    "xyxy: [x0, y0, x1, y1] px; xywh: [x, y, w, h] px; normalized: xyxy over the size"))]
FormatQuery = Annotated[str, Query(pattern="^(json|coco)$", description=(
    "json: this API's answer; coco: a list of COCO results entries (image_id, "
    "category_id = label + 1, bbox [x, y, w, h], score)"))]
ImageIdQuery = Annotated[int, Query(ge=0, description=(
    "format=coco: the image_id of the (first) image"))]


async def _one_image(request: Request, file: UploadFile | None) -> tuple[bytes, str]:
    """The image of a request: a multipart `file` field or JSON {"image": base64}."""
    if file is not None:
        return await file.read(), file.filename or "upload"
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            payload = ImagePayload.model_validate(await request.json())
        except (ValueError, json.JSONDecodeError) as err:
            raise HTTPException(422, f"expected JSON {{\"image\": base64}}: {err}") from err
        return _b64(payload.image, "image"), "image"
    raise HTTPException(400, "send the image as multipart field 'file' or JSON "
                             "{\"image\": \"<base64>\"}")


class BodySizeLimit:
    """ASGI middleware: 413 for bodies over the limit, however they are sent. A body is read
    (at most `max_bytes` of it) before the app sees it, so a chunked upload without a
    Content-Length is refused here too, not half-parsed into a 400 or 500 by the app; each
    refusal is reported to `on_reject(path)` (the proxy counts it)."""

    def __init__(self, app: Any, max_bytes: int,
                 on_reject: Callable[[str], None] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(scope, send)
            return
        chunks, received = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                break
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                await self._reject(scope, send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: dict, send: Callable) -> None:
        if self.on_reject is not None:
            self.on_reject(scope.get("path", ""))
        body = json.dumps({"detail": f"request body over the limit of {self.max_bytes:,} "
                                     "bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def create_app(settings: ProxySettings | None = None,
               client: ModelServerClient | None = None) -> FastAPI:
    """The proxy application (a fresh Proxy state per app)."""
    settings = settings or ProxySettings.from_env()
    proxy = Proxy(settings, client)
    app = FastAPI(title="geojax detection proxy", version="0.1.0",
                  description="Detect and classify geometric shapes with a model served by "
                              "TF Serving.")
    app.state.proxy = proxy

    # Checked as middleware, before the route reads (and parses) an upload; counted by
    # count_requests below, which wraps it.
    @app.middleware("http")
    async def require_key(request: Request, call_next: Callable) -> Response:
        if settings.api_keys and request.url.path not in OPEN_PATHS:
            key = request.headers.get("x-api-key") or request.headers.get(
                "authorization", "").removeprefix("Bearer ").strip()
            if not key_matches(key, settings.api_keys):
                return JSONResponse({"detail": "missing or wrong API key: send it in the "
                                               "X-API-Key header"}, status_code=401)
        return await call_next(request)

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Callable) -> Response:
        start = time.perf_counter()
        status = "500"  # an exception the app did not handle becomes a 500: count it as one
        try:
            response = await call_next(request)
            status = str(response.status_code)
            return response
        finally:
            route = request.scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            proxy.metrics.requests.labels(endpoint, status).inc()
            proxy.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)


    @app.get("/health", tags=["status"])
    async def health() -> dict[str, str]:
        """The process is alive (no model server call)."""
        return {"status": "alive"}

    def readiness() -> tuple[bool, dict[str, Any]]:
        """(ready, body): the label resolves to a version, the model server reports that version
        AVAILABLE, and one inference through the proxy's own path has succeeded on it (once per
        version: the first request is not the one that waits for the model's compile). The body
        names each check and, when not ready, the one that failed."""
        checks: dict[str, str] = {}

        def failed(check: str, detail: str) -> tuple[bool, dict[str, Any]]:
            checks[check] = "failed"
            return False, {"status": "not ready", "failed": check, "detail": detail,
                           "checks": checks}

        try:
            view = proxy.model_view(refresh=True)
        except HTTPException as err:
            return failed("label", f"label {settings.model_label!r} does not resolve: "
                                   f"{err.detail}")
        checks["label"] = f"version {view.version}"
        try:
            states = proxy._call(proxy.client.status)
        except HTTPException as err:
            return failed("available", str(err.detail))
        if not any(s["state"] == "AVAILABLE" and int(s["version"]) == view.version
                   for s in states):
            return failed("available", f"version {view.version} is not AVAILABLE on the "
                                       "model server")
        checks["available"] = "ok"
        if proxy.warm_version != view.version:
            blank = np.full((1, view.input_size, view.input_size, 3), 0.5, np.float32)
            try:
                proxy._call(proxy.client.predict_pixels, blank)
            except HTTPException as err:
                return failed("warm_inference", str(err.detail))
            proxy.warm_version = view.version
        checks["warm_inference"] = "ok"
        return True, {"status": "ready", "model": proxy.model_json(view), "checks": checks}

    @app.get("/ready", tags=["status"], responses={503: {"description": "not ready"}})
    def ready() -> JSONResponse:
        """Ready to serve: the label resolves, its version is AVAILABLE on the model server and
        a warm inference through the proxy succeeded; otherwise 503 naming the failed check."""
        ok, body = readiness()
        return JSONResponse(body, 200 if ok else 503)

    # The Open Inference Protocol's health routes (KServe v2), for tooling that speaks it.
    @app.get("/v2/health/live", tags=["status"])
    async def oip_live() -> dict[str, bool]:
        """Open Inference Protocol: the server is live."""
        return {"live": True}

    @app.get("/v2/health/ready", tags=["status"], responses={503: {"description": "not ready"}})
    def oip_ready() -> JSONResponse:
        """Open Inference Protocol: the server is ready (the checks of /ready)."""
        ok, body = readiness()
        return JSONResponse({"ready": ok, **body}, 200 if ok else 503)

    @app.get("/v2/models/{model_name}/ready", tags=["status"],
             responses={404: {"description": "unknown model"},
                        503: {"description": "not ready"}})
    def oip_model_ready(model_name: str) -> JSONResponse:
        """Open Inference Protocol: the named model is ready (the checks of /ready)."""
        if model_name != settings.model_name:
            return JSONResponse({"error": f"unknown model {model_name!r}; this proxy serves "
                                          f"{settings.model_name!r}"}, 404)
        ok, body = readiness()
        return JSONResponse({"name": model_name, "ready": ok, **body}, 200 if ok else 503)

    @app.get("/classes", tags=["model"])
    def classes() -> dict[str, list[str]]:
        """The class names, in label order."""
        return {"classes": list(CLASSES)}

    @app.get("/model/info", tags=["model"])
    def model_info() -> dict[str, Any]:
        """Name, version, label, input size, classes and the registry's metrics."""
        view = proxy.model_view()
        metrics = view.metadata.get("metrics", {})
        return {**proxy.model_json(view), "input_size": view.input_size,
                "classes": list(CLASSES), "protocol": settings.protocol,
                "metrics": {k: v for k, v in metrics.items()
                            if isinstance(v, int | float | str)},
                "created": view.metadata.get("created"),
                "parity": view.metadata.get("parity")}

    async def dispatch(request: Request, endpoint: str, fn: Callable[..., Any], *args: Any
                       ) -> Any:
        """Run `fn(*args)` in a worker thread, answered from the label the rollout picks for
        this request (X-Client-Id keeps a client on one side of a split); in shadow mode the
        canary gets the same request afterwards, in the background."""
        label = proxy.pick_label(request.headers.get("x-client-id"))
        answer = await run_in_threadpool(proxy.run, endpoint, label, fn, *args)
        if proxy.rollout.mode == "shadow":
            proxy.shadow(endpoint, fn, args, answer)
        return answer

    def classify_images(items: list[tuple[bytes, str]], endpoint: str
                        ) -> tuple[ModelView, np.ndarray, float]:
        """Uploads decoded one at a time and resized as in training (each full-size image
        freed before the next is decoded), then one model call: (view, probabilities, model
        server seconds)."""
        view = proxy.model_view()
        batch = np.empty((len(items), view.input_size, view.input_size, 3), np.uint8)
        for i, (data, source) in enumerate(items):
            with proxy.full_size_image(data, source) as image:
                batch[i] = resize_to(image, view.input_size)
        seconds: list[float] = []
        probabilities = proxy.classify(batch.astype(np.float32) / 255.0, endpoint, seconds)
        proxy.update_drift_gauges()
        return view, probabilities, sum(seconds)

    def predict_sync(data: bytes, source: str) -> dict[str, Any]:
        start = time.perf_counter()
        view, probabilities, server = classify_images([(data, source)], "/predict")
        return {**prediction_json(probabilities[0]), "model": proxy.model_json(view),
                "timing_ms": {"model_server": server * 1000,
                              "total": (time.perf_counter() - start) * 1000}}

    @app.post("/predict", tags=["predict"])
    async def predict(request: Request,
                      file: Annotated[UploadFile | None, File()] = None) -> dict[str, Any]:
        """Classify one image: class, confidence and every class's probability."""
        data, source = await _one_image(request, file)
        return await dispatch(request, "/predict", predict_sync, data, source)

    def predict_batch_sync(items: list[tuple[bytes, str]]) -> dict[str, Any]:
        start = time.perf_counter()
        view, probabilities, server = classify_images(items, "/predict/batch")
        return {"predictions": [prediction_json(p) for p in probabilities],
                "model": proxy.model_json(view),
                "timing_ms": {"model_server": server * 1000,
                              "total": (time.perf_counter() - start) * 1000}}

    async def batch_items(request: Request, files: list[UploadFile] | None
                          ) -> list[tuple[bytes, str]]:
        """The images of a batch request: multipart fields 'files' or JSON {"images": [...]},
        at most GEOJAX_MAX_BATCH."""
        if files:
            items = [(await f.read(), f.filename or f"file {i}") for i, f in enumerate(files)]
        elif request.headers.get("content-type", "").startswith("application/json"):
            try:
                payload = BatchPayload.model_validate(await request.json())
            except (ValueError, json.JSONDecodeError) as err:
                raise HTTPException(422, f"expected JSON {{\"images\": [base64, ...]}}: "
                                         f"{err}") from err
            items = [(_b64(b, f"images[{i}]"), f"images[{i}]")
                     for i, b in enumerate(payload.images)]
        else:
            raise HTTPException(400, "send images as multipart fields 'files' or JSON "
                                     "{\"images\": [\"<base64>\", ...]}")
        if not items:
            raise HTTPException(400, "no images in the request")
        if len(items) > settings.max_batch:
            raise HTTPException(413, f"{len(items)} images is over the batch limit of "
                                     f"{settings.max_batch}")
        return items

    @app.post("/predict/batch", tags=["predict"])
    async def predict_batch(request: Request,
                            files: Annotated[list[UploadFile] | None, File()] = None
                            ) -> dict[str, Any]:
        """Classify up to GEOJAX_MAX_BATCH images in one model call."""
        items = await batch_items(request, files)
        return await dispatch(request, "/predict/batch", predict_batch_sync, items)

    def detection_options(classes: str | None, max_detections: int | None,
                          box_format: str) -> DetectionOptions:
        try:
            return DetectionOptions.parse(classes, max_detections, box_format)
        except ValueError as err:
            raise HTTPException(422, str(err)) from err

    def detections_json(result: detection.DetectionResult, regions: detection.Regions,
                        options: DetectionOptions, answer: str, image_id: int) -> Any:
        chosen = options.select(result.detections)
        if answer == "coco":
            return coco_results(chosen, image_id)
        return {"detections": [d.to_dict(options.box_format, regions.width, regions.height)
                               for d in chosen],
                "box_format": options.box_format,
                "width": regions.width, "height": regions.height}

    def detect_sync(items: list[tuple[bytes, str]], endpoint: str, method: str,
                    confidence: float, iou: float, options: DetectionOptions, answer: str,
                    image_id: int, annotate: bool = False) -> Any:
        """Each image decoded, proposed and cropped in turn (its full-size copy freed before
        the next), then one model call for the crops of all of them."""
        start = time.perf_counter()
        view = proxy.model_view()
        prepared, annotated = [], None
        for data, source in items:
            with proxy.full_size_image(data, source) as image:
                prepared.append(detection.prepare(
                    image, method, settings.max_regions, input_size=view.input_size))
                if annotate:
                    annotated = image
        decoded = time.perf_counter()
        seconds: list[float] = []
        results = detection.finish(
            prepared, lambda crops: proxy.classify(crops, endpoint, seconds), confidence,
            iou, crops_per_call=settings.crops_per_call)
        for result in results:
            proxy.metrics.crops.observe(result.num_proposals)
        proxy.update_drift_gauges()
        if annotated is not None:
            chosen = options.select(results[0].detections)
            png = encode_png(detection.draw_detections(annotated, chosen))
            return Response(png, media_type="image/png")
        answers = [detections_json(r, p, options, answer, image_id + i)
                   for i, (r, p) in enumerate(zip(results, prepared, strict=True))]
        if answer == "coco":
            return [entry for entries in answers for entry in entries]
        timing = {"decode_propose_crop": (decoded - start) * 1000,
                  "classify": results[0].timings_ms["classify"] if results else 0.0,
                  "model_server": sum(seconds) * 1000,
                  "total": (time.perf_counter() - start) * 1000}
        if endpoint == "/detect":
            only = results[0]
            timing = {"decode": (decoded - start) * 1000
                      - only.timings_ms["proposal"] - only.timings_ms["crop"],
                      **only.timings_ms, "model_server": sum(seconds) * 1000,
                      "total": (time.perf_counter() - start) * 1000}
            return {**answers[0], "model": proxy.model_json(view), "timing_ms": timing}
        return {"results": answers, "model": proxy.model_json(view), "timing_ms": timing}

    @app.post("/detect", tags=["detect"],
              responses={200: {"content": {"image/png": {}}}})
    async def detect(
        request: Request,
        file: Annotated[UploadFile | None, File()] = None,
        method: MethodQuery = "contours",
        confidence: ConfidenceQuery = 0.5,
        iou: IouQuery = 0.3,
        classes: ClassesQuery = None,
        max_detections: MaxQuery = None,
        box_format: BoxQuery = "xyxy",
        format: FormatQuery = "json",
        image_id: ImageIdQuery = 0,
        annotate: bool = False,
    ) -> Any:
        """Find every shape: region proposals, one batched classification, per-class NMS.

        `timing_ms` has the stages (decode, proposal, crop, classify, nms), `model_server` (the
        time in model server calls, within classify) and `total`."""
        options = detection_options(classes, max_detections, box_format)
        data, source = await _one_image(request, file)
        return await dispatch(request, "/detect", detect_sync, [(data, source)], "/detect",
                              method, confidence, iou, options, format, image_id, annotate)

    @app.post("/detect/batch", tags=["detect"])
    async def detect_batch(
        request: Request,
        files: Annotated[list[UploadFile] | None, File()] = None,
        method: MethodQuery = "contours",
        confidence: ConfidenceQuery = 0.5,
        iou: IouQuery = 0.3,
        classes: ClassesQuery = None,
        max_detections: MaxQuery = None,
        box_format: BoxQuery = "xyxy",
        format: FormatQuery = "json",
        image_id: ImageIdQuery = 0,
    ) -> Any:
        """`/detect` for up to GEOJAX_MAX_BATCH images (multipart 'files' or JSON
        {"images": [base64, ...]}): the crops of all of them in one model call; `results` in
        the order sent (format=coco: image_id counts up from `image_id`)."""
        options = detection_options(classes, max_detections, box_format)
        items = await batch_items(request, files)
        return await dispatch(request, "/detect/batch", detect_sync, items, "/detect/batch",
                              method, confidence, iou, options, format, image_id)

    @app.get("/drift", tags=["monitoring"])
    def drift() -> dict[str, Any]:
        """PSI of the live window against the served version's reference, per feature."""
        report = proxy.update_drift_gauges()
        view = proxy._view
        report["model"] = proxy.model_json(view) if view else None
        return report

    @app.get("/metrics", tags=["monitoring"])
    async def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(generate_latest(proxy.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["*"])
    paths = {getattr(route, "path", "") for route in app.routes}

    def count_refusal(path: str) -> None:
        # The limit answers before routing; known paths keep their label, others one label.
        proxy.metrics.requests.labels(path if path in paths else "unmatched", "413").inc()

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes,
                       on_reject=count_refusal)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m geojax.proxy",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0", help="bind address")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port")
    args = parser.parse_args(argv)
    import uvicorn

    try:
        app = create_app(ProxySettings.from_env())
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
