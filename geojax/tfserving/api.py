"""PredictionService and ModelService semantics, shared by gRPC and REST: protos in, protos (or
arrays) out, and each Predict accounted for as PredictionServiceImpl does
(model_servers/prediction_service_impl.cc, servables/tensorflow/get_model_metadata_impl.cc,
model_servers/get_model_status_impl.cc, model_servers/model_service_impl.cc).

tensorflow_serving's protos import TensorFlow, so they are imported where they are used."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from geojax.tfserving.core import ServerCore
from geojax.tfserving.servable import (
    DEFAULT_SIGNATURE,
    array_to_tensor,
    check_tensor_size,
    tensor_to_array,
)
from geojax.tfserving.status import INVALID_ARGUMENT, OK, UNKNOWN, ServingError

log = logging.getLogger(__name__)

MAX_CONCURRENT_REQUESTS = 16
"""Predict calls run at once on each API (--max_concurrent_requests)."""


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
        from tensorflow_serving.apis import model_pb2  # deferred: imports TensorFlow

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
        from tensorflow_serving.apis import predict_pb2  # deferred: imports TensorFlow

        spec, outputs = self.predict(request)
        response = predict_pb2.PredictResponse(model_spec=spec)
        for alias, array in outputs.items():
            response.outputs[alias].CopyFrom(array_to_tensor(array))
        return response

    def metadata(self, request: Any) -> Any:
        """GetModelMetadataImpl: the SignatureDefMap packed into Any under 'signature_def'."""
        from tensorflow_serving.apis import (  # deferred: imports TensorFlow
            get_model_metadata_pb2,
            model_pb2,
        )

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
        from tensorflow_serving.apis import (  # deferred: imports TensorFlow
            get_model_status_pb2,
            status_pb2,
        )

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
        from tensorflow_serving.apis import (  # deferred: imports TensorFlow
            model_management_pb2,
            status_pb2,
        )

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
