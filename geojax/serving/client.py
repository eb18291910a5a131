"""A client for TF Serving's PredictionService and ModelService, over gRPC or REST.

It speaks only the documented protocols, so it works the same against the real
`tensorflow/serving` and against `geojax.model_server`. The model is addressed by name and
version label (or number); every call has a bounded timeout, and a server that is down, slow or
missing the model raises `ModelServerError` with a message saying which.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import types
from typing import Any

import grpc
import httpx
import numpy as np

from geojax.core.artefact import PIXELS_SIGNATURE

ENCODED_SIGNATURE = "serving_default"
PROTOCOLS = ("grpc", "rest")


class ModelServerError(RuntimeError):
    """The model server could not answer: `unavailable` says whether retrying later may help.
    The message names the server (for logs); `reason` says what went wrong without naming it
    (for clients: host and port are not theirs to know)."""

    def __init__(self, message: str, unavailable: bool = True, reason: str = ""):
        super().__init__(message)
        self.unavailable = unavailable
        self.reason = reason or "the model server could not answer"


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Probabilities [N, C] and the version of the model that computed them."""

    probabilities: np.ndarray
    version: int | None


@functools.cache
def _apis() -> types.SimpleNamespace:
    """TF Serving's gRPC messages and stubs. Deferred to the first gRPC call: the protos live
    in TensorFlow's package, and importing them runs all of TensorFlow's (and JAX's) import;
    a proxy on the REST protocol never loads either."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    return types.SimpleNamespace(
        tensor_pb2=tensor_pb2, tensor_shape_pb2=tensor_shape_pb2, types_pb2=types_pb2,
        get_model_metadata_pb2=get_model_metadata_pb2, get_model_status_pb2=get_model_status_pb2,
        model_service_pb2_grpc=model_service_pb2_grpc, predict_pb2=predict_pb2,
        prediction_service_pb2_grpc=prediction_service_pb2_grpc)


def _float_tensor(array: np.ndarray) -> Any:
    pb = _apis()
    array = np.ascontiguousarray(array, np.float32)
    shape = pb.tensor_shape_pb2.TensorShapeProto(
        dim=[pb.tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape])
    return pb.tensor_pb2.TensorProto(dtype=pb.types_pb2.DT_FLOAT, tensor_shape=shape,
                                     tensor_content=array.tobytes())


def _string_tensor(values: list[bytes]) -> Any:
    pb = _apis()
    shape = pb.tensor_shape_pb2.TensorShapeProto(dim=[pb.tensor_shape_pb2.TensorShapeProto.Dim(
        size=len(values))])
    return pb.tensor_pb2.TensorProto(dtype=pb.types_pb2.DT_STRING, tensor_shape=shape,
                                     string_val=values)


def _to_array(proto: Any) -> np.ndarray:
    shape = [d.size for d in proto.tensor_shape.dim]
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, np.float32).reshape(shape)
    return np.asarray(proto.float_val, np.float32).reshape(shape)


class ModelServerClient:
    """Calls one model (name + label or version) on a TF Serving-protocol server."""

    def __init__(
        self,
        grpc_target: str = "localhost:8500",
        rest_url: str = "http://localhost:8501",
        model_name: str = "geojax",
        label: str | None = "production",
        version: int | None = None,
        protocol: str = "grpc",
        timeout_s: float = 5.0,
    ):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.grpc_target = grpc_target
        self.rest_url = rest_url.rstrip("/")
        self.model_name = model_name
        self.label = label if version is None else None
        self.version = version
        self.protocol = protocol
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(grpc_target)
        self._http = httpx.Client(timeout=timeout_s)

    @functools.cached_property
    def _predict(self) -> Any:
        return _apis().prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    @functools.cached_property
    def _models(self) -> Any:
        return _apis().model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()
        self._http.close()

    @property
    def target(self) -> str:
        where = self.grpc_target if self.protocol == "grpc" else self.rest_url
        which = f"label {self.label!r}" if self.label else f"version {self.version}"
        return f"model {self.model_name!r} ({which}) at {where} over {self.protocol}"

    def _spec(self, spec: Any) -> None:
        spec.name = self.model_name
        if self.label:
            spec.version_label = self.label
        elif self.version is not None:
            spec.version.value = self.version

    def _rest_path(self) -> str:
        path = f"{self.rest_url}/v1/models/{self.model_name}"
        if self.label:
            return f"{path}/labels/{self.label}"
        if self.version is not None:
            return f"{path}/versions/{self.version}"
        return path

    def _grpc_error(self, err: grpc.RpcError) -> ModelServerError:
        code = err.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            late = f"the model server did not answer within {self.timeout_s:g} s"
            return ModelServerError(f"{late}: down or overloaded ({self.target})",
                                    reason=f"{late}: down or overloaded")
        if code == grpc.StatusCode.UNAVAILABLE:
            return ModelServerError(f"the model server is unreachable ({self.target}): "
                                    f"{err.details()}", reason="the model server is unreachable")
        return ModelServerError(f"the model server refused the request for {self.target}: "
                                f"{code.name}: {err.details()}",
                                unavailable=code == grpc.StatusCode.NOT_FOUND,
                                reason=f"the model server refused the request: {code.name}")

    def _rest(self, method: str, url: str, body: dict | None = None) -> dict:
        try:
            response = self._http.request(method, url, json=body)
        except httpx.TimeoutException as err:
            late = f"the model server did not answer within {self.timeout_s:g} s"
            raise ModelServerError(f"{late} ({self.target})", reason=late) from err
        except httpx.TransportError as err:
            raise ModelServerError(f"the model server is unreachable ({self.target}): "
                                   f"{err}", reason="the model server is unreachable") from err
        try:
            payload = response.json()
        except json.JSONDecodeError:
            payload = {"error": response.text[:200]}
        if response.status_code != 200:
            raise ModelServerError(
                f"the model server refused the request for {self.target}: HTTP "
                f"{response.status_code}: {payload.get('error', payload)}",
                unavailable=response.status_code in (404, 503),
                reason=f"the model server refused the request: HTTP {response.status_code}")
        return payload

    def predict_pixels(self, images: np.ndarray) -> Prediction:
        """Probabilities for float32 [N, S, S, 3] images in [0, 1]: one request."""
        if self.protocol == "rest":
            body = {"signature_name": PIXELS_SIGNATURE,
                    "inputs": {"images": np.asarray(images, np.float32).tolist()},
                    "output_filter": ["probabilities"]}
            payload = self._rest("POST", self._rest_path() + ":predict", body)
            outputs = payload["outputs"]
            probs = outputs["probabilities"] if isinstance(outputs, dict) else outputs
            return Prediction(np.asarray(probs, np.float32), None)
        request = _apis().predict_pb2.PredictRequest()
        self._spec(request.model_spec)
        request.model_spec.signature_name = PIXELS_SIGNATURE
        request.inputs["images"].CopyFrom(_float_tensor(images))
        request.output_filter.append("probabilities")
        try:
            response = self._predict.Predict(request, timeout=self.timeout_s,
                                             wait_for_ready=True)
        except grpc.RpcError as err:
            raise self._grpc_error(err) from err
        version = response.model_spec.version.value if response.model_spec.HasField(
            "version") else None
        return Prediction(_to_array(response.outputs["probabilities"]), version)

    def predict_encoded(self, images: list[bytes]) -> Prediction:
        """Probabilities for encoded images (the `serving_default` signature)."""
        if self.protocol == "rest":
            body = {"instances": [{"b64": base64.b64encode(b).decode()} for b in images]}
            payload = self._rest("POST", self._rest_path() + ":predict", body)
            rows = payload["predictions"]
            return Prediction(np.asarray([r["probabilities"] for r in rows], np.float32), None)
        request = _apis().predict_pb2.PredictRequest()
        self._spec(request.model_spec)
        request.model_spec.signature_name = ENCODED_SIGNATURE
        request.inputs["images"].CopyFrom(_string_tensor(list(images)))
        try:
            response = self._predict.Predict(request, timeout=self.timeout_s,
                                             wait_for_ready=True)
        except grpc.RpcError as err:
            raise self._grpc_error(err) from err
        return Prediction(_to_array(response.outputs["probabilities"]),
                          response.model_spec.version.value or None)

    def status(self) -> list[dict[str, Any]]:
        """The model's versions and their states, as TF Serving reports them."""
        if self.protocol == "rest":
            return self._rest("GET", self._rest_path())["model_version_status"]
        request = _apis().get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        try:
            response = self._models.GetModelStatus(request, timeout=self.timeout_s)
        except grpc.RpcError as err:
            raise self._grpc_error(err) from err
        return [{"version": str(s.version),
                 "state": _apis().get_model_status_pb2.ModelVersionStatus.State.Name(s.state)}
                for s in response.model_version_status]

    def served_signature(self) -> tuple[int, int]:
        """(version, input size): the version the configured label (or number) resolves to
        right now, and the image size its `predict_pixels` signature takes."""
        if self.protocol == "rest":
            payload = self._rest("GET", self._rest_path() + "/metadata")
            signatures = payload["metadata"]["signature_def"]["signature_def"]
            dims = signatures[PIXELS_SIGNATURE]["inputs"]["images"]["tensor_shape"]["dim"]
            return int(payload["model_spec"]["version"]), int(dims[1]["size"])
        request = _apis().get_model_metadata_pb2.GetModelMetadataRequest()
        self._spec(request.model_spec)
        request.metadata_field.append("signature_def")
        try:
            response = self._predict.GetModelMetadata(request, timeout=self.timeout_s)
        except grpc.RpcError as err:
            raise self._grpc_error(err) from err
        signatures = _apis().get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        dims = signatures.signature_def[PIXELS_SIGNATURE].inputs["images"].tensor_shape.dim
        return int(response.model_spec.version.value), int(dims[1].size)
