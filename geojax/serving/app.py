"""The proxy's FastAPI application: its routes, and the middleware that counts and guards them.

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
model call slot) within GEOJAX_TIMEOUT_S is a 503. A model call's batch is padded to one of a
few sizes (`geojax.serving.state.batch_bucket`), since the served model is compiled once per
batch shape. The settings are GEOJAX_* variables (`geojax.serving.settings`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from geojax import CLASSES
from geojax.core.images import encode_png, resize_to
from geojax.core.results import DetectionOptions, coco_results, prediction_json
from geojax.detection.detect import DetectionResult, Regions, finish, prepare
from geojax.detection.drawing import draw_detections
from geojax.serving.client import ModelServerClient
from geojax.serving.middleware import OPEN_PATHS, BodySizeLimit, key_matches
from geojax.serving.settings import ProxySettings
from geojax.serving.state import ModelView, Proxy
from geojax.serving.uploads import (
    BatchPayload,
    BoxQuery,
    ClassesQuery,
    ConfidenceQuery,
    FormatQuery,
    ImageIdQuery,
    IouQuery,
    MaxQuery,
    MethodQuery,
    b64_bytes,
    one_image,
)


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
        data, source = await one_image(request, file)
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
            items = [(b64_bytes(b, f"images[{i}]"), f"images[{i}]")
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

    def detections_json(result: DetectionResult, regions: Regions,
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
                prepared.append(prepare(
                    image, method, settings.max_regions, input_size=view.input_size))
                if annotate:
                    annotated = image
        decoded = time.perf_counter()
        seconds: list[float] = []
        results = finish(
            prepared, lambda crops: proxy.classify(crops, endpoint, seconds), confidence,
            iou, crops_per_call=settings.crops_per_call)
        for result in results:
            proxy.metrics.crops.observe(result.num_proposals)
        proxy.update_drift_gauges()
        if annotated is not None:
            chosen = options.select(results[0].detections)
            png = encode_png(draw_detections(annotated, chosen))
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
        data, source = await one_image(request, file)
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
