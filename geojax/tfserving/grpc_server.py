"""The gRPC server: PredictionService and ModelService (apis/prediction_service.proto,
apis/model_service.proto) over the shared API, with gRPC's status codes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc

from geojax.tfserving.api import MAX_CONCURRENT_REQUESTS, ModelServerApi
from geojax.tfserving.status import ServingError

GRPC_MAX_MESSAGE = 2**31 - 1


def _grpc_code(code: int) -> Any:

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
    from tensorflow_serving.apis import (  # deferred: imports TensorFlow
        model_service_pb2_grpc,
        prediction_service_pb2_grpc,
    )

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
