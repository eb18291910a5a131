"""The HTTP/REST API as an ASGI application: HttpRestApiHandler's routes and JSON
(model_servers/http_rest_api_handler.cc, http_rest_api_util.cc, g3doc/api_rest.md) over the
shared API, status codes as http_server.cc's ToHTTPStatusCode, the Prometheus page where
CreateAndStartHttpServer puts it, and this server's limits on body size, concurrency and time.

tensorflow_serving's protos import TensorFlow, so they are imported where they are used."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from concurrent import futures
from typing import Any

from google.protobuf import json_format

from geojax.tfserving.api import MAX_CONCURRENT_REQUESTS, ModelServerApi
from geojax.tfserving.json_tensor import echo, parse_predict_json, predict_json
from geojax.tfserving.servable import DEFAULT_SIGNATURE, array_to_tensor, dtype_name
from geojax.tfserving.status import (
    CANCELLED,
    DEADLINE_EXCEEDED,
    FAILED_PRECONDITION,
    INTERNAL,
    INVALID_ARGUMENT,
    NOT_FOUND,
    OK,
    UNAVAILABLE,
    UNIMPLEMENTED,
    UNKNOWN,
    ServingError,
)

log = logging.getLogger(__name__)

PREDICT_PATH = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                          r":(classify|regress|predict)", re.IGNORECASE)
STATUS_PATH = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                         r"(?:/(metadata))?", re.IGNORECASE)

HTTP_STATUS = {OK: 200, CANCELLED: 499, UNKNOWN: 500, INVALID_ARGUMENT: 400,
               DEADLINE_EXCEEDED: 504, NOT_FOUND: 404, 6: 409, 7: 403, 8: 429,
               FAILED_PRECONDITION: 400, 10: 409, 11: 400, UNIMPLEMENTED: 501, INTERNAL: 500,
               UNAVAILABLE: 503, 15: 500, 16: 401}
"""`ToHTTPStatusCode` in tensorflow_serving/model_servers/http_server.cc."""

MAX_REQUEST_BYTES = 64 * 1024 * 1024
"""The largest REST request body (--max_request_bytes); more is 413."""


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
        from tensorflow_serving.apis import (  # deferred: imports TensorFlow
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
